/* RMSNorm and LayerNorm on CUDA: one block per row, a tree reduction for the
 * statistics, then the same per-element expression as kernels/cpu/ops_basic.c
 * (HF LlamaRMSNorm: w * (x * rsqrt(mean(x^2) + eps)); LayerNorm with double
 * statistics and the biased variance, as torch.nn.LayerNorm and the CPU
 * oracle). Sums are in a different order than the CPU's sequential loop:
 * results agree to a few float ulps, not bit for bit. RMSNorm has a register
 * path for rows of up to 8192 floats (rmsnorm_vec_kernel: the decode shape)
 * and the general three-pass loop for the rest. */
#include "cuda_common.cuh"

#define NORM_THREADS 256

/* y != NULL (add_rmsnorm): x_out = x + y first (x_out may be x), each
 * thread on the elements it then reads, so the sums see exactly what op_add
 * would have left in x. The general path: any C, any alignment; three passes
 * over the row. */
template <int DT>
__global__ void __launch_bounds__(NORM_THREADS)
rmsnorm_kernel(float *out, float *x_out, const float *x, const float *y, const void *w, int64_t C, float eps) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    __shared__ float red[NORM_THREADS / 32];
    const float *xr = (y ? x_out : x) + blockIdx.x * C;
    float *o = out + blockIdx.x * C;
    if (y) {
        const float *xi = x + blockIdx.x * C, *yr = y + blockIdx.x * C;
        float *xa = x_out + blockIdx.x * C;
        for (int64_t c = threadIdx.x; c < C; c += blockDim.x) xa[c] = xi[c] + yr[c];
    }
    float ss = 0.0f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) ss += xr[c] * xr[c];
    ss = cuda_block_sum(ss, red);
    float inv = 1.0f / sqrtf(ss / (float)C + eps);
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) o[c] = cuda_ld<DT>(w, c) * (xr[c] * inv);
}

/* The register path: C % 4 == 0, C <= NORM_VEC_MAX * 4 * NORM_THREADS, x,
 * out and w aligned (rmsnorm_vec_ok). Why: at T = 1 (decode) the grid is one
 * block, so the time is the latency of its memory chain. Here every load of
 * the row (x, y, w as 16-byte / 8-byte vectors, NV per thread) is issued
 * before any is used, x is read once and kept in registers, and the output
 * comes from registers: one memory round trip instead of three dependent
 * passes. Thread tid owns float4 chunks tid, tid + NORM_THREADS, ... Missing
 * chunks are zeros (add nothing to the sum). rmsnorm and add_rmsnorm run this
 * same code (y NULL or not), so the fused op equals add + rmsnorm bit for bit;
 * y_vec only chooses how y is read, never the order of the sums. The v6
 * GEMV's fused norm (nf4_gemv_v6.cu, gemv6_stage_norm) repeats this order
 * with its 256 threads: keep the two in step. */
#define NORM_VEC_MAX 8 /* C up to 8192 */

template <int DT, int NV>
__global__ void __launch_bounds__(NORM_THREADS)
rmsnorm_vec_kernel(float *out, float *x_out, const float *x, const float *y, const void *w, int C4, float eps,
                   bool y_vec) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    __shared__ float red[NORM_THREADS / 32];
    int64_t row = (int64_t)blockIdx.x * C4;
    const float4 *xr = (const float4 *)x + row;
    float4 *xa = (float4 *)x_out + row, *o = (float4 *)out + row;
    float4 xv[NV], wv[NV], yv[NV];
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int c = k * NORM_THREADS + threadIdx.x;
        xv[k] = wv[k] = yv[k] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (c >= C4) continue;
        xv[k] = xr[c];
        wv[k] = cuda_ld4<DT>(w, c);
        if (!y) continue;
        const float *yr = y + (row + c) * 4;
        yv[k] = y_vec ? *(const float4 *)yr : make_float4(yr[0], yr[1], yr[2], yr[3]);
    }
    if (y) {
#pragma unroll
        for (int k = 0; k < NV; k++) {
            int c = k * NORM_THREADS + threadIdx.x;
            xv[k].x = xv[k].x + yv[k].x, xv[k].y = xv[k].y + yv[k].y;
            xv[k].z = xv[k].z + yv[k].z, xv[k].w = xv[k].w + yv[k].w;
            if (c < C4) xa[c] = xv[k];
        }
    }
    float ss = 0.0f;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        ss += xv[k].x * xv[k].x;
        ss += xv[k].y * xv[k].y;
        ss += xv[k].z * xv[k].z;
        ss += xv[k].w * xv[k].w;
    }
    ss = cuda_block_sum(ss, red);
    float inv = 1.0f / sqrtf(ss / (float)(4 * C4) + eps);
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int c = k * NORM_THREADS + threadIdx.x;
        if (c < C4)
            o[c] = make_float4(wv[k].x * (xv[k].x * inv), wv[k].y * (xv[k].y * inv),
                               wv[k].z * (xv[k].z * inv), wv[k].w * (xv[k].w * inv));
    }
}

/* Float4 chunks per thread for the register path, 0 = use the general path.
 * Depends on x, out, w and C only (not on y), so op_rmsnorm and
 * op_add_rmsnorm on the same tensors always pick the same path (x_out: the
 * same alignment as x in every caller, checked too). */
static int rmsnorm_vec_per_thread(const float *out, const float *x, const float *x_out, const ps_tensor *w,
                                  int64_t C) {
    if (C % 4 || C > (int64_t)NORM_VEC_MAX * 4 * NORM_THREADS) return 0;
    if (!cuda_aligned(out, 16) || !cuda_aligned(x, 16) || !cuda_aligned(x_out, 16) ||
        !cuda_ld4_ok(w->data, w->dtype))
        return 0;
    int64_t per = (C / 4 + NORM_THREADS - 1) / NORM_THREADS;
    int nv = 1;
    while (nv < per) nv *= 2;
    return nv;
}

template <int DT>
static void rmsnorm_vec_launch(cuda_impl *p, int nv, unsigned R, float *o, float *xo, const float *x,
                               const float *y, const void *w, int64_t C, float eps) {
    int C4 = (int)(C / 4);
    bool yv = y && cuda_aligned(y, 16);
    switch (nv) {
    case 1: cuda_launch(p, rmsnorm_vec_kernel<DT, 1>, R, NORM_THREADS, 0, o, xo, x, y, w, C4, eps, yv); break;
    case 2: cuda_launch(p, rmsnorm_vec_kernel<DT, 2>, R, NORM_THREADS, 0, o, xo, x, y, w, C4, eps, yv); break;
    case 4: cuda_launch(p, rmsnorm_vec_kernel<DT, 4>, R, NORM_THREADS, 0, o, xo, x, y, w, C4, eps, yv); break;
    default: cuda_launch(p, rmsnorm_vec_kernel<DT, 8>, R, NORM_THREADS, 0, o, xo, x, y, w, C4, eps, yv); break;
    }
}

template <int DT>
static void rmsnorm_general_launch(cuda_impl *p, unsigned R, float *o, float *xo, const float *x, const float *y,
                                   const void *w, int64_t C, float eps) {
    cuda_launch(p, rmsnorm_kernel<DT>, R, NORM_THREADS, 0, o, xo, x, y, w, C, eps);
}

/* x_out: written (x + y) only when y is not NULL */
static ps_status rmsnorm_launch(ps_backend *be, ps_tensor *out, ps_tensor *x_out, const ps_tensor *x,
                                const ps_tensor *y, const ps_tensor *w, float eps, const char *op, ps_err *err) {
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    int64_t C = cuda_last_dim(x), R = cuda_rows(x);
    if (R * C == 0) return PS_OK;
    if (R > INT32_MAX) return ps_errf(err, PS_EINVAL, "%s: %lld rows (max %d)", op, (long long)R, INT32_MAX);
    float *o = (float *)out->data, *xo = (float *)x_out->data;
    const float *xi = (const float *)x->data, *yi = y ? (const float *)y->data : NULL;
    int nv = rmsnorm_vec_per_thread(o, xi, xo, w, C);
    if (nv) {
        switch (w->dtype) {
        case PS_DT_F32: rmsnorm_vec_launch<PS_DT_F32>(p, nv, (unsigned)R, o, xo, xi, yi, w->data, C, eps); break;
        case PS_DT_F16: rmsnorm_vec_launch<PS_DT_F16>(p, nv, (unsigned)R, o, xo, xi, yi, w->data, C, eps); break;
        default: rmsnorm_vec_launch<PS_DT_BF16>(p, nv, (unsigned)R, o, xo, xi, yi, w->data, C, eps); break;
        }
        return cuda_op_done(p, op, err);
    }
    switch (w->dtype) {
    case PS_DT_F32: rmsnorm_general_launch<PS_DT_F32>(p, (unsigned)R, o, xo, xi, yi, w->data, C, eps); break;
    case PS_DT_F16: rmsnorm_general_launch<PS_DT_F16>(p, (unsigned)R, o, xo, xi, yi, w->data, C, eps); break;
    default: rmsnorm_general_launch<PS_DT_BF16>(p, (unsigned)R, o, xo, xi, yi, w->data, C, eps); break;
    }
    return cuda_op_done(p, op, err);
}

/* without y nothing is written but out: the cast drops a const the kernels honour */
ps_status cuda_rmsnorm(ps_backend *be, ps_tensor *out, const ps_tensor *x, const ps_tensor *w,
                       float eps, ps_err *err) {
    return rmsnorm_launch(be, out, (ps_tensor *)x, x, NULL, w, eps, "rmsnorm", err);
}

ps_status cuda_add_rmsnorm(ps_backend *be, ps_tensor *out, ps_tensor *x_out, const ps_tensor *x,
                           const ps_tensor *y, const ps_tensor *w, float eps, ps_err *err) {
    return rmsnorm_launch(be, out, x_out, x, y, w, eps, "add_rmsnorm", err);
}

template <int DW, int DB>
__global__ void __launch_bounds__(NORM_THREADS)
layernorm_kernel(float *out, const float *x, const void *w, const void *b, int64_t C, float eps) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    __shared__ double red[NORM_THREADS / 32];
    const float *xr = x + blockIdx.x * C;
    float *o = out + blockIdx.x * C;
    double s = 0.0;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) s += xr[c];
    double mean = cuda_block_sum(s, red) / (double)C;
    double v = 0.0;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) v += (xr[c] - mean) * (xr[c] - mean);
    double var = cuda_block_sum(v, red) / (double)C; /* biased, as torch.nn.LayerNorm */
    float inv = (float)(1.0 / sqrt(var + eps));
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
        o[c] = (float)(xr[c] - mean) * inv * cuda_ld<DW>(w, c) + cuda_ld<DB>(b, c);
}

template <int DW>
static void layernorm_launch(cuda_impl *p, unsigned R, float *o, const float *x, const ps_tensor *w,
                             const ps_tensor *b, int64_t C, float eps) {
    switch (b->dtype) {
    case PS_DT_F32: cuda_launch(p, layernorm_kernel<DW, PS_DT_F32>, R, NORM_THREADS, 0, o, x, w->data, b->data,
                                C, eps); break;
    case PS_DT_F16: cuda_launch(p, layernorm_kernel<DW, PS_DT_F16>, R, NORM_THREADS, 0, o, x, w->data, b->data,
                                C, eps); break;
    default: cuda_launch(p, layernorm_kernel<DW, PS_DT_BF16>, R, NORM_THREADS, 0, o, x, w->data, b->data, C,
                         eps); break;
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
