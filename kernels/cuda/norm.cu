/* RMSNorm and LayerNorm on CUDA: one block per row, a tree reduction for the
 * statistics, then the same per-element expression as kernels/cpu/ops_basic.c
 * (HF LlamaRMSNorm: w * (x * rsqrt(mean(x^2) + eps)); LayerNorm with double
 * statistics and the biased variance, as torch.nn.LayerNorm and the CPU
 * oracle). Sums are in a different order than the CPU's sequential loop:
 * results agree to a few float ulps, not bit for bit. */
#include "cuda_common.cuh"

#define NORM_THREADS 256

/* Sum over the block; every thread gets the result. */
template <typename T> __device__ static T norm_block_sum(T v, T *smem) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
    __syncthreads(); /* smem may still be read from a previous call */
    if (lane == 0) smem[warp] = v;
    __syncthreads();
    T s = 0;
    for (int w = 0; w < nw; w++) s += smem[w];
    return s;
}

/* y != NULL (add_rmsnorm): x += y first, each thread on the elements it then
 * reads, so the sums see exactly what op_add would have left in x. */
template <int DT>
__global__ void __launch_bounds__(NORM_THREADS)
rmsnorm_kernel(float *out, float *x, const float *y, const void *w, int64_t C, float eps) {
    __shared__ float red[NORM_THREADS / 32];
    float *xr = x + blockIdx.x * C;
    float *o = out + blockIdx.x * C;
    if (y) {
        const float *yr = y + blockIdx.x * C;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) xr[c] = xr[c] + yr[c];
    }
    float ss = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) ss += xr[c] * xr[c];
    ss = norm_block_sum(ss, red);
    float inv = 1.0f / sqrtf(ss / (float)C + eps);
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) o[c] = cuda_ld<DT>(w, c) * (xr[c] * inv);
}

static ps_status rmsnorm_launch(ps_backend *be, ps_tensor *out, const ps_tensor *x, const ps_tensor *y,
                                const ps_tensor *w, float eps, const char *op, ps_err *err) {
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    int64_t C = cuda_last_dim(x), R = cuda_rows(x);
    if (R * C == 0) return PS_OK;
    if (R > INT32_MAX) return ps_errf(err, PS_EINVAL, "%s: %lld rows (max %d)", op, (long long)R, INT32_MAX);
    float *o = (float *)out->data, *xi = (float *)x->data;
    const float *yi = y ? (const float *)y->data : NULL;
    switch (w->dtype) {
    case PS_DT_F32: rmsnorm_kernel<PS_DT_F32><<<(unsigned)R, NORM_THREADS, 0, p->stream>>>(o, xi, yi, w->data, C, eps); break;
    case PS_DT_F16: rmsnorm_kernel<PS_DT_F16><<<(unsigned)R, NORM_THREADS, 0, p->stream>>>(o, xi, yi, w->data, C, eps); break;
    default: rmsnorm_kernel<PS_DT_BF16><<<(unsigned)R, NORM_THREADS, 0, p->stream>>>(o, xi, yi, w->data, C, eps); break;
    }
    return cuda_op_done(p, op, err);
}

/* x is only read when y is NULL: the cast drops a const the kernel honours */
ps_status cuda_rmsnorm(ps_backend *be, ps_tensor *out, const ps_tensor *x, const ps_tensor *w,
                       float eps, ps_err *err) {
    return rmsnorm_launch(be, out, x, NULL, w, eps, "rmsnorm", err);
}

ps_status cuda_add_rmsnorm(ps_backend *be, ps_tensor *out, ps_tensor *x, const ps_tensor *y,
                           const ps_tensor *w, float eps, ps_err *err) {
    return rmsnorm_launch(be, out, x, y, w, eps, "add_rmsnorm", err);
}

template <int DW, int DB>
__global__ void __launch_bounds__(NORM_THREADS)
layernorm_kernel(float *out, const float *x, const void *w, const void *b, int64_t C, float eps) {
    __shared__ double red[NORM_THREADS / 32];
    const float *xr = x + blockIdx.x * C;
    float *o = out + blockIdx.x * C;
    double s = 0.0;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += xr[c];
    double mean = norm_block_sum(s, red) / (double)C;
    double v = 0.0;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) v += (xr[c] - mean) * (xr[c] - mean);
    double var = norm_block_sum(v, red) / (double)C; /* biased, as torch.nn.LayerNorm */
    float inv = (float)(1.0 / sqrt(var + eps));
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
        o[c] = (float)(xr[c] - mean) * inv * cuda_ld<DW>(w, c) + cuda_ld<DB>(b, c);
}

template <int DW>
static void layernorm_launch(cuda_impl *p, unsigned R, float *o, const float *x, const ps_tensor *w,
                             const ps_tensor *b, int64_t C, float eps) {
    switch (b->dtype) {
    case PS_DT_F32: layernorm_kernel<DW, PS_DT_F32><<<R, NORM_THREADS, 0, p->stream>>>(o, x, w->data, b->data, C, eps); break;
    case PS_DT_F16: layernorm_kernel<DW, PS_DT_F16><<<R, NORM_THREADS, 0, p->stream>>>(o, x, w->data, b->data, C, eps); break;
    default: layernorm_kernel<DW, PS_DT_BF16><<<R, NORM_THREADS, 0, p->stream>>>(o, x, w->data, b->data, C, eps); break;
    }
}

ps_status cuda_layernorm(ps_backend *be, ps_tensor *out, const ps_tensor *x, const ps_tensor *w,
                         const ps_tensor *b, float eps, ps_err *err) {
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    int64_t C = cuda_last_dim(x), R = cuda_rows(x);
    if (R * C == 0) return PS_OK;
    if (R > INT32_MAX) return ps_errf(err, PS_EINVAL, "layernorm: %lld rows (max %d)", (long long)R, INT32_MAX);
    float *o = (float *)out->data;
    const float *xi = (const float *)x->data;
    switch (w->dtype) {
    case PS_DT_F32: layernorm_launch<PS_DT_F32>(p, (unsigned)R, o, xi, w, b, C, eps); break;
    case PS_DT_F16: layernorm_launch<PS_DT_F16>(p, (unsigned)R, o, xi, w, b, C, eps); break;
    default: layernorm_launch<PS_DT_BF16>(p, (unsigned)R, o, xi, w, b, C, eps); break;
    }
    return cuda_op_done(p, "layernorm", err);
}
