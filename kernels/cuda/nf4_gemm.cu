/* NF4 linear for prefill (many tokens): dequantise W to a bf16 scratch copy
 * (out, in) with the shared element formula (ps_nf4_value of the exact f32
 * value, then the shared round-to-nearest-even ps_f32_to_bf16), round x to
 * bf16, and multiply with cublasGemmEx in f32 accumulation
 * (CUBLAS_COMPUTE_32F), writing f32 y. This is bitsandbytes' behaviour with
 * a bf16 compute dtype; the cost is bf16 rounding of both operands (relative
 * error about 2^-9 per product, ~1e-3 relative L2 on y; the tolerance and its
 * measurement are in tests/gpu/test_cuda_ops.c). The scratch is sized for the
 * largest weight seen and reused (cuda_scratch). */
#include "cuda_common.cuh"
#include "nf4_tables.cuh"

/* 32 codes per thread from one 16-byte load, 64 bytes of bf16 out. Needs
 * out*in % 32 == 0 and 16-byte aligned codes and scratch. */
__global__ void nf4_dequant_fast_kernel(uint16_t *__restrict__ dst, cuda_nf4_args w, int64_t nchunk) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    __shared__ float s_nf4[16], s_dq[256];
    cuda_nf4_tables_to_smem(s_nf4, s_dq, w.q8 != NULL);
    for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < nchunk;
         c += (int64_t)gridDim.x * blockDim.x) {
        uint4 v = __ldg((const uint4 *)w.packed + c);
        uint8_t bytes[16];
        memcpy(bytes, &v, 16);
        float scale = cuda_nf4_scale(w, s_dq, c / 2); /* 32 codes = half a 64-block */
        uint32_t outw[16];
#pragma unroll
        for (int e = 0; e < 32; e += 2) {
            uint32_t lo = ps_f32_to_bf16(ps_nf4_value(s_nf4[ps_nf4_code_at(bytes, e)], scale));
            uint32_t hi = ps_f32_to_bf16(ps_nf4_value(s_nf4[ps_nf4_code_at(bytes, e + 1)], scale));
            outw[e / 2] = lo | (hi << 16); /* element e at the lower address */
        }
        uint4 *o = (uint4 *)(dst + c * 32);
#pragma unroll
        for (int q = 0; q < 4; q++)
            o[q] = make_uint4(outw[4 * q], outw[4 * q + 1], outw[4 * q + 2], outw[4 * q + 3]);
    }
}

__global__ void nf4_dequant_generic_kernel(uint16_t *__restrict__ dst, cuda_nf4_args w, int64_t n) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    __shared__ float s_nf4[16], s_dq[256];
    cuda_nf4_tables_to_smem(s_nf4, s_dq, w.q8 != NULL);
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = ps_f32_to_bf16(ps_nf4_value(s_nf4[ps_nf4_code_at(w.packed, i)],
                                             cuda_nf4_scale(w, s_dq, i / PS_NF4_BLOCK)));
}

/* W (out, in) -> bf16 scratch. */
static ps_status nf4_dequant_bf16(cuda_impl *p, uint16_t *dst, const cuda_nf4_args &w, ps_err *err) {
    int64_t n = w.out * w.in;
    if (n % 32 == 0 && ((uintptr_t)w.packed & 15) == 0 && ((uintptr_t)dst & 15) == 0) {
        cuda_launch(p, nf4_dequant_fast_kernel, cuda_ew_blocks(p, n / 32), CUDA_EW_THREADS, 0, dst, w, n / 32);
    } else {
        cuda_launch(p, nf4_dequant_generic_kernel, cuda_ew_blocks(p, n), CUDA_EW_THREADS, 0, dst, w, n);
    }
    CU_LAUNCH_CHECK(p);
    return PS_OK;
}

ps_status cuda_nf4_gemm(cuda_impl *p, float *y, const float *x, int64_t T, const ps_nf4 *w,
                        ps_err *err) {
    cuda_nf4_args a = cuda_nf4_args_of(w);
    if (a.out > INT32_MAX || a.in > INT32_MAX || T > INT32_MAX)
        return ps_errf(err, PS_EINVAL, "linear: gemm of (%lld x %lld) by %lld rows exceeds cuBLAS int sizes",
                       (long long)a.out, (long long)a.in, (long long)T);
    PS_TRY(cuda_scratch(p, &p->scratch_w, &p->scratch_w_bytes, (size_t)(a.out * a.in) * 2, err));
    PS_TRY(cuda_scratch(p, &p->scratch_x, &p->scratch_x_bytes, (size_t)(T * a.in) * 2, err));
    uint16_t *wb = (uint16_t *)p->scratch_w, *xb = (uint16_t *)p->scratch_x;
    PS_TRY(nf4_dequant_bf16(p, wb, a, err));
    PS_TRY(cuda_f32_to_16(p, xb, x, T * a.in, true, err));
    /* row-major y (T, out) = x W^T is column-major y^T (out, T) = W (out, in) . x^T:
     * W row-major is column-major (in, out), hence OP_T with lda = in */
    const float one = 1.0f, zero = 0.0f;
    CUBLAS_TRY(p, cublasGemmEx(p->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)a.out, (int)T, (int)a.in,
                               &one, wb, CUDA_R_16BF, (int)a.in, xb, CUDA_R_16BF, (int)a.in, &zero,
                               y, CUDA_R_32F, (int)a.out, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return PS_OK;
}
