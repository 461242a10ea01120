/* The NF4 and double-quant code tables in __constant__ memory, built from the
 * brace lists of kernels/math/nf4.h (one copy per translation unit: the
 * backend is compiled without relocatable device code). Kernels copy them to
 * shared memory first: lanes look up different codes, which constant memory
 * would serialise, while 16 floats in 16 banks never conflict. */
#ifndef PS_CUDA_NF4_TABLES_CUH
#define PS_CUDA_NF4_TABLES_CUH

#include "math/nf4.h"

static __constant__ float cuda_nf4_code[16] = PS_NF4_CODE_VALUES;
static __constant__ float cuda_dq_code[256] = PS_DQ_CODE_VALUES;

/* Fills s_nf4[16] (and s_dq[256] when double-quantised); ends with a barrier. */
__device__ static inline void cuda_nf4_tables_to_smem(float *s_nf4, float *s_dq, bool dq) {
    for (int i = threadIdx.x; i < 16; i += blockDim.x) s_nf4[i] = cuda_nf4_code[i];
    if (dq)
        for (int i = threadIdx.x; i < 256; i += blockDim.x) s_dq[i] = cuda_dq_code[i];
    __syncthreads();
}

/* The NF4 weight as kernels take it (device pointers, by value). */
typedef struct {
    const uint8_t *packed, *q8;
    const float *absmax2, *absmax;
    float offset;
    int64_t out, in;
} cuda_nf4_args;

static inline cuda_nf4_args cuda_nf4_args_of(const ps_nf4 *w) {
    cuda_nf4_args a;
    a.packed = w->packed;
    a.q8 = w->absmax_q8;
    a.absmax2 = w->absmax2;
    a.absmax = w->absmax;
    a.offset = w->offset;
    a.out = w->out;
    a.in = w->in;
    return a;
}

/* Scale of 64-block b through the shared formula (absmax, or DQ absmax'). */
__device__ static inline float cuda_nf4_scale(const cuda_nf4_args &w, const float *s_dq, int64_t b) {
    return ps_nf4_block_scale(w.absmax, w.q8, w.absmax2, w.offset, s_dq, b);
}

#endif
