/* Internal pieces of the fast CPU linear layer, shared by kernels/cpu/linear*.c
 * (not part of the op interface).
 *
 * Two shapes of work:
 *  - decode (T == 1, AVX-512 builds): a GEMV that decodes each weight row in
 *    registers and streams it once.
 *  - everything else: the weight is decoded one tile (CPU_LIN_NB rows x
 *    CPU_LIN_KC columns, f32, on the worker's stack) at a time, and the tile
 *    is multiplied with all T rows of x before the next one is decoded.
 *
 * Batch invariance: y[t] is bit-identical whatever T, the thread count or
 * the path. Every path sums k in the same order: 16 lanes (lane = position
 * mod 16 within each group of 16, or, for NF4 with K % 64 == 0, within each
 * "split" group of 32 laid out as its 16 even then 16 odd elements, which is
 * how packed nibbles decode cheapest), one fused multiply-add chain per lane,
 * reduced by cpu_lin_hsum4's tree every CPU_LIN_KC columns, and the chunk
 * sums added to y in column order. */
#ifndef PS_CPU_LINEAR_IMPL_H
#define PS_CPU_LINEAR_IMPL_H

#include <stdbool.h>

#include "ops.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define CPU_LIN_AVX512 1
#include <immintrin.h>

/* [sum(a), sum(b), sum(c), sum(d)], the one reduction tree every path uses. */
static inline __m128 cpu_lin_hsum4(__m512 a, __m512 b, __m512 c, __m512 d) {
#define CPU_LIN_HALF(v)                                                                        \
    _mm256_add_ps(_mm512_castps512_ps256(v),                                                   \
                  _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)))
    __m256 ab = _mm256_hadd_ps(CPU_LIN_HALF(a), CPU_LIN_HALF(b));
    __m256 cd = _mm256_hadd_ps(CPU_LIN_HALF(c), CPU_LIN_HALF(d));
#undef CPU_LIN_HALF
    __m256 abcd = _mm256_hadd_ps(ab, cd);
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

/* Gathers the even (cpu_lin_even()) or odd elements of 32 floats a:b. */
static inline __m512i cpu_lin_even(void) {
    return _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
}
static inline __m512i cpu_lin_odd(void) {
    return _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}

/* 16 packed NF4 bytes (32 elements) expanded to dwords; vpermps reads only
 * the low 4 bits of an index, so v selects the odd elements' codes and
 * v >> 4 the even elements' (the high nibble comes first). */
static inline __m512i cpu_lin_nf4_bytes(const uint8_t *p) {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
}
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
/* AVX2 builds (linear_avx2.c): the AVX-512 kernels' arithmetic, each 16-lane
 * vector kept as two 8-lane halves, so the same order and the same bits. */
#define CPU_LIN_AVX2 1
#include <immintrin.h>
#endif

/* Either vector build: NF4 tiles in split order and the decode GEMVs. */
#if defined(CPU_LIN_AVX512) || defined(CPU_LIN_AVX2)
#define CPU_LIN_SIMD 1
#endif

/* Tile geometry: 64 rows x 512 columns = 128 KiB of f32 (in L2, on the
 * worker's stack), the best of the sizes tried on Zen 5 (16..128 rows,
 * 256..1024 columns). KC is a multiple of the NF4 block (64) and sets the
 * summation order (see above). */
#define CPU_LIN_NB 64
#define CPU_LIN_KC 512

/* One call: y (T, N) = x (T, K) W^T. */
typedef struct {
    const ps_weight *w;
    const float *x; /* (T, K) */
    float *y;       /* (T, N) */
    int64_t T, N, K;
} cpu_lin_call;

/* Writes W[n0 .. n0+nb, k0 .. k0+kc) as f32 into dst, row stride ld. */
typedef void (*cpu_lin_decode_fn)(const ps_weight *w, int64_t n0, int64_t nb, int64_t k0,
                                  int64_t kc, float *dst, int64_t ld);

/* NF4 tiles: any shape (blocks may span rows, natural order), and the vector
 * version for K % 64 == 0 (every row starts a block; k0, kc multiples of 64)
 * which writes the split order on AVX-512 builds. */
void cpu_lin_nf4_decode_any(const ps_weight *w, int64_t n0, int64_t nb, int64_t k0, int64_t kc,
                            float *dst, int64_t ld);
void cpu_lin_nf4_decode_blocks(const ps_weight *w, int64_t n0, int64_t nb, int64_t k0,
                               int64_t kc, float *dst, int64_t ld);
/* F16 / BF16 tiles (F32 weights are read in place). */
void cpu_lin_dense_decode(const ps_weight *w, int64_t n0, int64_t nb, int64_t k0, int64_t kc,
                          float *dst, int64_t ld);

/* xs (n) = x (n) in split order: per 32 columns the 16 even then the 16 odd
 * (n % 32 == 0; vector builds). */
void cpu_lin_split_x(const float *x, int64_t n, float *xs);

/* y[t, j] (= or +=) sum_k x[t, k] w[j, k] for t < T, j < nb, k < kc;
 * x row stride ldx, w row stride ldw, y row stride ldy. split: w is in split
 * order (kc % 32 == 0) and x in natural order. */
void cpu_lin_gemm_tile(const float *x, int64_t ldx, int64_t T, const float *w, int64_t ldw,
                       int64_t nb, int64_t kc, float *y, int64_t ldy, bool accumulate,
                       bool split);

/* T == 1 over weight rows [n0, n1), vector builds only (NF4 needs K % 64 == 0). */
void cpu_lin_nf4_gemv(const cpu_lin_call *c, int64_t n0, int64_t n1);
void cpu_lin_dense_gemv(const cpu_lin_call *c, int64_t n0, int64_t n1);

#endif
