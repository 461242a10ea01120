/* RoPE on CUDA, HF rotate_half layout: x (T, H, D) in place, pair (i, i+D/2)
 * of every head rotated by pos[t] * inv_freq[i]. Mirrors kernels/cpu/ops_basic.c.
 *
 * Why the table: inv_freq = theta^(-2i/D) uses powf, whose fast-math device
 * version differs from glibc's by a few ulps; multiplied by positions in the
 * thousands that becomes a visible angle error. So the host computes the table
 * with the shared ps_rope_inv_freq (identical to the CPU's), and the device
 * takes cos/sin of the float angle in double precision (correctly rounded
 * results, like glibc's cosf/sinf; fast math would use the approximate
 * __cosf/__sinf, whose error grows with the angle). */
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
