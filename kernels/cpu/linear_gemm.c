/* The f32 GEMM on one decoded weight tile: y[t, j] (+)= x[t, :] . w[j, :]
 * (dot-product form, so both operands stay row-major and the weight tile
 * needs no transposition).
 *
 * AVX-512: 4x4 register blocks of (x rows) x (w rows), 16 accumulators of 16
 * lanes, masked loads for a column tail, one cpu_lin_hsum4 reduction per
 * block per tile. In split mode (NF4 tiles) each group of 4 x rows is first
 * put into the tile's split order, once for all the tile's weight rows; see
 * linear_impl.h for why the summation order is fixed. Other builds: a plain
 * loop the compiler may vectorise. */
#include "linear_impl.h"

#ifdef CPU_LIN_AVX512

/* One MR x NR block (MR, NR <= 4, constants after inlining). */
static inline __attribute__((always_inline)) void
gemm_block(int MR, int NR, const float *x, int64_t ldx, const float *w, int64_t ldw, int64_t kc,
           float *y, int64_t ldy, bool accumulate) {
    __m512 acc[4][4], xv[4], wv[4];
#pragma GCC unroll 4
    for (int t = 0; t < 4; t++)
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) acc[t][j] = _mm512_setzero_ps();
    for (int64_t k = 0; k < kc; k += 16) {
        __mmask16 m = kc - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (kc - k)) - 1);
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++) wv[j] = _mm512_maskz_loadu_ps(m, w + j * ldw + k);
#pragma GCC unroll 4
        for (int t = 0; t < MR; t++) xv[t] = _mm512_maskz_loadu_ps(m, x + t * ldx + k);
#pragma GCC unroll 4
        for (int t = 0; t < MR; t++)
#pragma GCC unroll 4
            for (int j = 0; j < NR; j++) acc[t][j] = _mm512_fmadd_ps(xv[t], wv[j], acc[t][j]);
    }
#pragma GCC unroll 4
    for (int t = 0; t < MR; t++) {
        __m128 s = cpu_lin_hsum4(acc[t][0], acc[t][1], acc[t][2], acc[t][3]);
        float *yt = y + t * ldy;
        if (NR == 4) {
            if (accumulate) s = _mm_add_ps(_mm_loadu_ps(yt), s);
            _mm_storeu_ps(yt, s);
        } else {
            float r[4];
            _mm_storeu_ps(r, s);
            for (int j = 0; j < NR; j++) yt[j] = accumulate ? yt[j] + r[j] : r[j];
        }
    }
}

#define GEMM_CASE(mr, nr)                                                                      \
    case (mr) * 8 + (nr):                                                                      \
        gemm_block(mr, nr, x, ldx, w, ldw, kc, y, ldy, accumulate);                            \
        break;

/* Edge blocks (fewer than 4 x rows or w rows). */
static void gemm_block_edge(int mr, int nr, const float *x, int64_t ldx, const float *w,
                            int64_t ldw, int64_t kc, float *y, int64_t ldy, bool accumulate) {
    switch (mr * 8 + nr) {
        GEMM_CASE(1, 1) GEMM_CASE(1, 2) GEMM_CASE(1, 3) GEMM_CASE(1, 4)
        GEMM_CASE(2, 1) GEMM_CASE(2, 2) GEMM_CASE(2, 3) GEMM_CASE(2, 4)
        GEMM_CASE(3, 1) GEMM_CASE(3, 2) GEMM_CASE(3, 3) GEMM_CASE(3, 4)
        GEMM_CASE(4, 1) GEMM_CASE(4, 2) GEMM_CASE(4, 3)
    }
}
#undef GEMM_CASE

void cpu_lin_split_x(const float *x, int64_t n, float *xs) {
    const __m512i ie = cpu_lin_even(), io = cpu_lin_odd();
    for (int64_t k = 0; k < n; k += 32) {
        __m512 a = _mm512_loadu_ps(x + k), b = _mm512_loadu_ps(x + k + 16);
        _mm512_store_ps(xs + k, _mm512_permutex2var_ps(a, ie, b));
        _mm512_store_ps(xs + k + 16, _mm512_permutex2var_ps(a, io, b));
    }
}

void cpu_lin_gemm_tile(const float *x, int64_t ldx, int64_t T, const float *w, int64_t ldw,
                       int64_t nb, int64_t kc, float *y, int64_t ldy, bool accumulate,
                       bool split) {
    float xs[4 * CPU_LIN_KC] __attribute__((aligned(64)));
    for (int64_t t = 0; t < T; t += 4) {
        int mr = T - t < 4 ? (int)(T - t) : 4;
        const float *xt = x + t * ldx;
        int64_t ldxt = ldx;
        if (split) { /* these x rows in the tile's order, once for all its rows */
            for (int r = 0; r < mr; r++) cpu_lin_split_x(xt + r * ldx, kc, xs + r * CPU_LIN_KC);
            xt = xs;
            ldxt = CPU_LIN_KC;
        }
        for (int64_t j = 0; j < nb; j += 4) {
            int nr = nb - j < 4 ? (int)(nb - j) : 4;
            const float *wj = w + j * ldw;
            float *yt = y + t * ldy + j;
            if (mr < 4 || nr < 4)
                gemm_block_edge(mr, nr, xt, ldxt, wj, ldw, kc, yt, ldy, accumulate);
            else gemm_block(4, 4, xt, ldxt, wj, ldw, kc, yt, ldy, accumulate);
        }
    }
}

#elif !defined(CPU_LIN_AVX2) /* portable fallback: natural order only (split is never set here) */

void cpu_lin_gemm_tile(const float *x, int64_t ldx, int64_t T, const float *w, int64_t ldw,
                       int64_t nb, int64_t kc, float *y, int64_t ldy, bool accumulate,
                       bool split) {
    (void)split;
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < nb; j++) {
            const float *xt = x + t * ldx, *wj = w + j * ldw;
            float s = 0.0f;
            for (int64_t k = 0; k < kc; k++) s += xt[k] * wj[k];
            y[t * ldy + j] = accumulate ? y[t * ldy + j] + s : s;
        }
}

#endif
