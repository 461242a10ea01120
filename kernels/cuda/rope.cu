/* RoPE on CUDA, HF rotate_half layout: x (T, H, D) in place, pair (i, i+D/2)
 * of every head rotated by pos[t] * inv_freq[i]. Mirrors kernels/cpu/ops_basic.c.
 *
 * Why the table: inv_freq = theta^(-2i/D) uses powf, whose fast-math device
 * version differs from glibc's by a few ulps; multiplied by positions in the
 * thousands that becomes a visible angle error. So the host computes the table
 * with the shared ps_rope_inv_freq (identical to the CPU's), and the device
 * takes cos/sin of the float angle in double precision (correctly rounded
 * results, like glibc's cosf/sinf; fast math would use the approximate
 * __cosf/__sinf, whose error grows with the angle).
 *
 * cuda_rope_store fuses rope(q), rope(k) and kv_store(k, v) (one launch
 * instead of three per layer): the same rotation per pair, then the rotated k
 * pair and the v pair copied to the token's cache slot, so the results equal
 * the three ops bit for bit. */
#include <stdlib.h>

#include "cuda_common.cuh"
#include "math/act.h"

__global__ void rope_kernel(float *x, const int32_t *pos, const float *inv_freq, int64_t T,
                            int64_t H, int64_t half) {
    int64_t n = T * H * half;
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < n;
         j += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = j % half, th = j / half, t = th / H;
        float a = (float)pos[t] * inv_freq[i];
        float c = (float)cos((double)a), s = (float)sin((double)a);
        float *v = x + th * 2 * half;
        ps_rope_rotate(&v[i], &v[i + half], c, s);
    }
}

/* Makes p->rope_tab hold inv_freq for (theta, D); uploads only on a change. */
static ps_status rope_table(cuda_impl *p, float theta, int64_t D, ps_err *err) {
    int half = (int)(D / 2);
    if (p->rope_tab && p->rope_half == half && p->rope_theta == theta) return PS_OK;
    if (!p->rope_tab) CU_TRY(p, cudaMalloc((void **)&p->rope_tab, sizeof(float) * CUDA_ROPE_MAX_HALF));
    float *h = (float *)malloc(sizeof(float) * (size_t)half);
    if (!h) return ps_errf(err, PS_ENOMEM, "rope: cannot allocate a %d-entry table", half);
    for (int i = 0; i < half; i++) h[i] = ps_rope_inv_freq(theta, i, (int)D);
    cudaError_t e = cudaMemcpyAsync(p->rope_tab, h, sizeof(float) * (size_t)half,
                                    cudaMemcpyHostToDevice, p->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(p->stream); /* h is freed next */
    free(h);
    if (e != cudaSuccess) return cuda_fail(p, e, "cudaMemcpyAsync(rope table)", __FILE__, __LINE__, err);
    p->rope_half = half;
    p->rope_theta = theta;
    return PS_OK;
}

ps_status cuda_rope(ps_backend *be, ps_tensor *x, const ps_tensor *pos, float theta, ps_err *err) {
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    int64_t T = x->shape[0], H = x->shape[1], D = x->shape[2];
    if (D / 2 > CUDA_ROPE_MAX_HALF)
        return ps_errf(err, PS_ENOTSUP, "rope: head dim %lld over the cuda limit %d",
                       (long long)D, 2 * CUDA_ROPE_MAX_HALF);
    if (T * H * D == 0) return PS_OK;
    PS_TRY(rope_table(p, theta, D, err));
    int64_t n = T * H * (D / 2);
    rope_kernel<<<cuda_ew_blocks(p, n), CUDA_EW_THREADS, 0, p->stream>>>(
        (float *)x->data, (const int32_t *)pos->data, p->rope_tab, T, H, D / 2);
    return cuda_op_done(p, "rope", err);
}

/* One thread per rotation pair i of a q head (heads 0..H-1) or a k head
 * (H..H+KV-1); a k pair is also stored, with the same pair of v. */
__global__ void rope_store_kernel(float *q, float *k, const float *v, float *kc, float *vc,
                                  const int32_t *pos, const int32_t *slots, const float *inv_freq,
                                  int64_t T, int64_t H, int64_t KV, int64_t half, int64_t n_slots,
                                  cuda_flag *flag) {
    int64_t heads = H + KV, n = T * heads * half, D = 2 * half;
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < n;
         j += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = j % half, th = j / half, t = th / heads, h = th % heads;
        float a = (float)pos[t] * inv_freq[i];
        float c = (float)cos((double)a), s = (float)sin((double)a);
        if (h < H) {
            float *x = q + (t * H + h) * D;
            ps_rope_rotate(&x[i], &x[i + half], c, s);
            continue;
        }
        int64_t kh = h - H, row = (t * KV + kh) * D;
        float *x = k + row;
        ps_rope_rotate(&x[i], &x[i + half], c, s);
        int32_t slot = slots[t];
        if (slot < 0 || slot >= n_slots) {
            if (i == 0 && kh == 0) cuda_raise(flag, CUDA_FLAG_KV_SLOT, slot, (int)n_slots, (int)t);
            continue;
        }
        int64_t at = ((int64_t)slot * KV + kh) * D;
        kc[at + i] = x[i];
        kc[at + i + half] = x[i + half];
        vc[at + i] = v[row + i];
        vc[at + i + half] = v[row + i + half];
    }
}

ps_status cuda_rope_store(ps_backend *be, ps_tensor *q, ps_tensor *k, const ps_tensor *v,
                          const ps_tensor *pos, float theta, ps_kv_layer *kv, const ps_tensor *slots,
                          ps_err *err) {
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    if (kv->k.dtype != PS_DT_F32)
        return ps_errf(err, PS_ENOTSUP, "rope_store: cuda kv cache dtype %s, only F32 is supported",
                       ps_dtype_name(kv->k.dtype));
    int64_t T = q->shape[0], H = q->shape[1], KV = k->shape[1], D = q->shape[2];
    if (D / 2 > CUDA_ROPE_MAX_HALF)
        return ps_errf(err, PS_ENOTSUP, "rope_store: head dim %lld over the cuda limit %d",
                       (long long)D, 2 * CUDA_ROPE_MAX_HALF);
    if (T * (H + KV) * D == 0) return PS_OK;
    PS_TRY(rope_table(p, theta, D, err));
    int64_t n = T * (H + KV) * (D / 2), n_slots = kv->k.shape[0] * kv->k.shape[1];
    rope_store_kernel<<<cuda_ew_blocks(p, n), CUDA_EW_THREADS, 0, p->stream>>>(
        (float *)q->data, (float *)k->data, (const float *)v->data, (float *)kv->k.data,
        (float *)kv->v.data, (const int32_t *)pos->data, (const int32_t *)slots->data, p->rope_tab, T, H,
        KV, D / 2, n_slots, p->d_flag);
    return cuda_op_done(p, "rope_store", err);
}
