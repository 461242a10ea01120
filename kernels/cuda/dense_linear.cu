/* Dense linear on CUDA: y (T, out) = x (T, in) W^T for W in F32, F16 or BF16
 * (lm_head, embeddings used as output layers, unquantised models, encoders).
 * Mirrors kernels/cpu/linear_ref.c; element conversions from kernels/math/half.h.
 *  - GEMV (few tokens): each warp owns 2 rows; lanes read 16 bytes of each row
 *    per step (8 half or 4 float elements), applied to up to 8 rows of x.
 *    Generic kernel when rows are not 16-byte aligned (odd `in`).
 *  - GEMM (many tokens): F32 W through cublasSgemm in plain fp32 (no TF32);
 *    F16/BF16 W through cublasGemmEx with x rounded to the weight's type and
 *    f32 accumulation (the error of that rounding is measured in the tests). */
#include "cuda_common.cuh"

#define DG_THREADS 128
#define DG_WARPS (DG_THREADS / 32)
#define DG_R 2
#define DG_NB_MAX 8

/* 16 bytes of W as float: E = 4 (F32) or 8 (F16/BF16) elements. */
template <int DT> struct dg_elems { static const int E = DT == PS_DT_F32 ? 4 : 8; };

template <int DT>
__device__ static inline void dg_unpack(uint4 v, float *f) {
    if constexpr (DT == PS_DT_F32) {
        f[0] = __uint_as_float(v.x), f[1] = __uint_as_float(v.y);
        f[2] = __uint_as_float(v.z), f[3] = __uint_as_float(v.w);
    } else {
        uint16_t h[8];
        memcpy(h, &v, 16);
#pragma unroll
        for (int e = 0; e < 8; e++) f[e] = cuda_ld<DT>(h, e);
    }
}

template <int DT, int B>
__global__ void __launch_bounds__(DG_THREADS)
dense_gemv_fast_kernel(float *__restrict__ y, const float *__restrict__ x, const void *W,
                       int64_t out, int64_t in) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    const int E = dg_elems<DT>::E;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int64_t row0 = ((int64_t)blockIdx.x * DG_WARPS + warp) * DG_R;
    if (row0 >= out) return;
    int64_t rows[DG_R];
#pragma unroll
    for (int r = 0; r < DG_R; r++) rows[r] = row0 + r < out ? row0 + r : out - 1;
    const int64_t nchunk = in / E, row_bytes = in * (DT == PS_DT_F32 ? 4 : 2);
    float acc[DG_R][B];
#pragma unroll
    for (int r = 0; r < DG_R; r++)
#pragma unroll
        for (int b = 0; b < B; b++) acc[r][b] = 0.0f;
    for (int64_t c = lane; c < nchunk; c += 32) {
        uint4 wv[DG_R];
#pragma unroll
        for (int r = 0; r < DG_R; r++)
            wv[r] = __ldg((const uint4 *)((const char *)W + rows[r] * row_bytes) + c);
        float xv[B][E];
#pragma unroll
        for (int b = 0; b < B; b++) {
            const float4 *xp = (const float4 *)(x + b * in + c * E);
#pragma unroll
            for (int q = 0; q < E / 4; q++) {
                float4 f = __ldg(xp + q);
                xv[b][4 * q] = f.x, xv[b][4 * q + 1] = f.y, xv[b][4 * q + 2] = f.z, xv[b][4 * q + 3] = f.w;
            }
        }
#pragma unroll
        for (int r = 0; r < DG_R; r++) {
            float wf[E];
            dg_unpack<DT>(wv[r], wf);
#pragma unroll
            for (int e = 0; e < E; e++)
#pragma unroll
                for (int b = 0; b < B; b++) acc[r][b] += wf[e] * xv[b][e];
        }
    }
#pragma unroll
    for (int r = 0; r < DG_R; r++)
#pragma unroll
        for (int b = 0; b < B; b++)
            for (int o = 16; o > 0; o >>= 1) acc[r][b] += __shfl_xor_sync(0xffffffffu, acc[r][b], o);
    if (lane == 0) {
#pragma unroll
        for (int r = 0; r < DG_R; r++)
            if (row0 + r < out)
#pragma unroll
                for (int b = 0; b < B; b++) y[b * out + row0 + r] = acc[r][b];
    }
}

template <int DT>
__global__ void __launch_bounds__(DG_THREADS)
dense_gemv_generic_kernel(float *__restrict__ y, const float *__restrict__ x, const void *W,
                          int64_t out, int64_t in, int nb) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int64_t row = (int64_t)blockIdx.x * DG_WARPS + warp;
    if (row >= out) return;
    float acc[DG_NB_MAX];
#pragma unroll
    for (int b = 0; b < DG_NB_MAX; b++) acc[b] = 0.0f;
    for (int64_t k = lane; k < in; k += 32) {
        float v = cuda_ld<DT>(W, row * in + k);
#pragma unroll
        for (int b = 0; b < DG_NB_MAX; b++)
            if (b < nb) acc[b] += v * x[b * in + k];
    }
#pragma unroll
    for (int b = 0; b < DG_NB_MAX; b++) {
        for (int o = 16; o > 0; o >>= 1) acc[b] += __shfl_xor_sync(0xffffffffu, acc[b], o);
        if (lane == 0 && b < nb) y[b * out + row] = acc[b];
    }
}

template <int DT, int B>
static void dg_fast(cuda_impl *p, float *y, const float *x, const void *W, int64_t out, int64_t in) {
    int64_t rpb = (int64_t)DG_WARPS * DG_R;
    cuda_launch(p, dense_gemv_fast_kernel<DT, B>, (unsigned)((out + rpb - 1) / rpb), DG_THREADS, 0, y, x, W,
                out, in);
}

template <int DT>
static void dg_chunk(cuda_impl *p, float *y, const float *x, const void *W, int64_t out, int64_t in,
                     int nb, bool fast) {
    if (!fast) {
        unsigned grid = (unsigned)((out + DG_WARPS - 1) / DG_WARPS);
        cuda_launch(p, dense_gemv_generic_kernel<DT>, grid, DG_THREADS, 0, y, x, W, out, in, nb);
        return;
    }
    switch (nb) {
    case 1: dg_fast<DT, 1>(p, y, x, W, out, in); break;
    case 2: dg_fast<DT, 2>(p, y, x, W, out, in); break;
    case 3: dg_fast<DT, 3>(p, y, x, W, out, in); break;
    case 4: dg_fast<DT, 4>(p, y, x, W, out, in); break;
    case 5: dg_fast<DT, 5>(p, y, x, W, out, in); break;
    case 6: dg_fast<DT, 6>(p, y, x, W, out, in); break;
    case 7: dg_fast<DT, 7>(p, y, x, W, out, in); break;
    default: dg_fast<DT, 8>(p, y, x, W, out, in); break;
    }
}

ps_status cuda_dense_gemv(cuda_impl *p, float *y, const float *x, int64_t T, const ps_tensor *w,
                          ps_err *err) {
    int64_t out = w->shape[0], in = w->shape[1];
    int es = (int)ps_dtype_size(w->dtype), E = 16 / es;
    if ((out + DG_WARPS - 1) / DG_WARPS > INT32_MAX)
        return ps_errf(err, PS_EINVAL, "linear: dense weight with %lld rows", (long long)out);
    bool fast = in % E == 0 && ((uintptr_t)w->data & 15) == 0 && ((uintptr_t)x & 15) == 0;
    for (int64_t t0 = 0; t0 < T; t0 += DG_NB_MAX) {
        int nb = (int)(T - t0 < DG_NB_MAX ? T - t0 : DG_NB_MAX);
        float *yc = y + t0 * out;
        const float *xc = x + t0 * in;
        switch (w->dtype) {
        case PS_DT_F32: dg_chunk<PS_DT_F32>(p, yc, xc, w->data, out, in, nb, fast); break;
        case PS_DT_F16: dg_chunk<PS_DT_F16>(p, yc, xc, w->data, out, in, nb, fast); break;
        default: dg_chunk<PS_DT_BF16>(p, yc, xc, w->data, out, in, nb, fast); break;
        }
        CU_LAUNCH_CHECK(p);
    }
    return PS_OK;
}

ps_status cuda_dense_gemm(cuda_impl *p, float *y, const float *x, int64_t T, const ps_tensor *w,
                          ps_err *err) {
    int64_t out = w->shape[0], in = w->shape[1];
    if (out > INT32_MAX || in > INT32_MAX || T > INT32_MAX)
        return ps_errf(err, PS_EINVAL, "linear: gemm of (%lld x %lld) by %lld rows exceeds cuBLAS int sizes",
                       (long long)out, (long long)in, (long long)T);
    const float one = 1.0f, zero = 0.0f;
    /* column-major y^T (out, T) = W (in, out col-major, transposed) . x^T (in, T) */
    if (w->dtype == PS_DT_F32) {
        CUBLAS_TRY(p, cublasSgemm(p->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)out, (int)T, (int)in, &one,
                                  (const float *)w->data, (int)in, x, (int)in, &zero, y, (int)out));
        return PS_OK;
    }
    bool bf16 = w->dtype == PS_DT_BF16;
    cudaDataType_t dt = bf16 ? CUDA_R_16BF : CUDA_R_16F;
    PS_TRY(cuda_scratch(p, &p->scratch_x, &p->scratch_x_bytes, (size_t)(T * in) * 2, err));
    uint16_t *xb = (uint16_t *)p->scratch_x;
    PS_TRY(cuda_f32_to_16(p, xb, x, T * in, bf16, err));
    CUBLAS_TRY(p, cublasGemmEx(p->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)out, (int)T, (int)in, &one,
                               w->data, dt, (int)in, xb, dt, (int)in, &zero, y, CUDA_R_32F, (int)out,
                               CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return PS_OK;
}
