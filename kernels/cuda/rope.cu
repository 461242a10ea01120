/* RoPE on CUDA, HF rotate_half layout: x (T, H, D) in place, pair (i, i+D/2)
 * of every head rotated by pos[t] * inv_freq[i]. Mirrors kernels/cpu/ops_basic.c.
 *
 * Why the table: inv_freq = theta^(-2i/D) uses powf, whose fast-math device
 * version differs from glibc's by a few ulps; multiplied by positions in the
 * thousands that becomes a visible angle error. So the host computes the table
 * with the shared ps_rope_inv_freq (identical to the CPU's), and the device
 * takes cos/sin of the float angle in double precision (correctly rounded
 * results, like glibc's cosf/sinf; fast math would use the approximate
 * __cosf/__sinf, whose error grows with the angle); rope and rope_store share
 * that step (rope_cos_sin), so the fused op equals the separate ones.
 *
 * cuda_rope_store fuses rope(q), rope(k) and kv_store(k, v) (one launch
 * instead of three per layer): the same rotation per pair, then the rotated k
 * pair and the v pair copied to the token's cache slot, so the results equal
 * the three ops bit for bit. The cache is F32, F16 or BF16: only the cache
 * copy is rounded (half.h, as kv_store does); q and k keep the f32 values. */
#include <stdlib.h>

#include "cuda_common.cuh"
#include "math/act.h"

#define ROPE_THREADS 128 /* small blocks: at T = 1 the pairs spread over more SMs */

/* cos and sin of pos * inv_freq in double, one argument reduction for both */
__device__ static inline void rope_cos_sin(int32_t pos, float inv_freq, float *c, float *s) {
    float a = (float)pos * inv_freq;
    double sd, cd;
    sincos((double)a, &sd, &cd);
    *c = (float)cd;
    *s = (float)sd;
}

/* Grid (pairs of one token / ROPE_THREADS, tokens): the pair index comes from
 * the block and thread (one 32-bit division, none per token), and a thread
 * issues its loads (pair, position, frequency) before the cos/sin, whose
 * latency then overlaps theirs. */
static dim3 rope_grid(int64_t pairs, int64_t T) {
    return dim3((unsigned)((pairs + ROPE_THREADS - 1) / ROPE_THREADS), (unsigned)(T < 65535 ? T : 65535));
}

__global__ void __launch_bounds__(ROPE_THREADS)
rope_kernel(float *x, const int32_t *pos, const float *inv_freq, int64_t T, int H, int half) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    int j = blockIdx.x * ROPE_THREADS + threadIdx.x;
    if (j >= H * half) return;
    int h = j / half, i = j - h * half;
    float f = inv_freq[i];
    for (int64_t t = blockIdx.y; t < T; t += gridDim.y) {
        float *v = x + (t * H + h) * 2 * half;
        float lo = v[i], hi = v[i + half], c, s;
        rope_cos_sin(pos[t], f, &c, &s);
        ps_rope_rotate(&lo, &hi, c, s);
        v[i] = lo;
        v[i + half] = hi;
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
    if (H * D > INT32_MAX)
        return ps_errf(err, PS_ENOTSUP, "rope: %lld heads of %lld over the cuda limit", (long long)H, (long long)D);
    cuda_launch(p, rope_kernel, rope_grid(H * (D / 2), T), ROPE_THREADS, 0, (float *)x->data,
                (const int32_t *)pos->data, p->rope_tab, T, (int)H, (int)(D / 2));
    return cuda_op_done(p, "rope", err);
}

/* One thread per rotation pair i of a q head (heads 0..H-1) or a k head
 * (H..H+KV-1) of token t; a k pair is also stored, with the same pair of v.
 * Every load (the pair, v, slot, position) is issued before the cos/sin. */
template <int DT>
__global__ void __launch_bounds__(ROPE_THREADS)
rope_store_kernel(float *q, float *k, const float *v, void *kc, void *vc, const int32_t *pos,
                  const int32_t *slots, const float *inv_freq, int64_t T, int H, int KV, int half,
                  int64_t n_slots, cuda_flag *flag) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    int j = blockIdx.x * ROPE_THREADS + threadIdx.x;
    if (j >= (H + KV) * half) return;
    int h = j / half, i = j - h * half, D = 2 * half, kh = h - H;
    bool is_k = h >= H;
    float f = inv_freq[i];
    for (int64_t t = blockIdx.y; t < T; t += gridDim.y) {
        int64_t row = is_k ? (t * KV + kh) * D : (t * H + h) * D;
        float *x = (is_k ? k : q) + row;
        float lo = x[i], hi = x[i + half], vlo = 0.0f, vhi = 0.0f, c, s;
        int32_t slot = 0;
        if (is_k) {
            vlo = v[row + i];
            vhi = v[row + i + half];
            slot = slots[t];
        }
        rope_cos_sin(pos[t], f, &c, &s);
        ps_rope_rotate(&lo, &hi, c, s);
        x[i] = lo;
        x[i + half] = hi;
        if (!is_k) continue;
        if (slot < 0 || slot >= n_slots) {
            if (i == 0 && kh == 0) cuda_raise(flag, CUDA_FLAG_KV_SLOT, slot, (int)n_slots, (int)t);
            continue;
        }
        int64_t at = ((int64_t)slot * KV + kh) * D;
        cuda_st<DT>(kc, at + i, lo);
        cuda_st<DT>(kc, at + i + half, hi);
        cuda_st<DT>(vc, at + i, vlo);
        cuda_st<DT>(vc, at + i + half, vhi);
    }
}

ps_status cuda_rope_store(ps_backend *be, ps_tensor *q, ps_tensor *k, const ps_tensor *v,
                          const ps_tensor *pos, float theta, ps_kv_layer *kv, const ps_tensor *slots,
                          ps_err *err) {
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    ps_dtype dt = kv->k.dtype; /* F32, F16 or BF16: op_rope_store's check_kv admits no other */
    int64_t T = q->shape[0], H = q->shape[1], KV = k->shape[1], D = q->shape[2];
    if (D / 2 > CUDA_ROPE_MAX_HALF)
        return ps_errf(err, PS_ENOTSUP, "rope_store: head dim %lld over the cuda limit %d",
                       (long long)D, 2 * CUDA_ROPE_MAX_HALF);
    if (T * (H + KV) * D == 0) return PS_OK;
    PS_TRY(rope_table(p, theta, D, err));
    if ((H + KV) * D > INT32_MAX)
        return ps_errf(err, PS_ENOTSUP, "rope_store: %lld heads of %lld over the cuda limit",
                       (long long)(H + KV), (long long)D);
    int64_t n_slots = kv->k.shape[0] * kv->k.shape[1];
    void (*kernel)(float *, float *, const float *, void *, void *, const int32_t *, const int32_t *,
                   const float *, int64_t, int, int, int, int64_t, cuda_flag *) =
        dt == PS_DT_F32 ? rope_store_kernel<PS_DT_F32>
        : dt == PS_DT_F16 ? rope_store_kernel<PS_DT_F16>
                          : rope_store_kernel<PS_DT_BF16>;
    cuda_launch(p, kernel, rope_grid((H + KV) * (D / 2), T), ROPE_THREADS, 0, (float *)q->data,
                (float *)k->data, (const float *)v->data, kv->k.data, kv->v.data, (const int32_t *)pos->data,
                (const int32_t *)slots->data, p->rope_tab, T, (int)H, (int)KV, (int)(D / 2), n_slots, p->d_flag);
    return cuda_op_done(p, "rope_store", err);
}
