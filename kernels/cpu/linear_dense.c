/* Dense (F32 / F16 / BF16) weights in the fast CPU linear layer: the tile
 * converter for F16/BF16 (F32 tiles are read in place) and the decode GEMV.
 * F16 goes through F16C (vcvtph2ps), BF16 through a 16-bit shift; both are
 * exact, so weight values equal the oracle's (kernels/math/half.h). */
#include "cpu_backend.h"
#include "linear_impl.h"
#include "math/half.h"

#ifdef CPU_LIN_AVX512

/* 16 (or fewer, masked) weights from row-major memory as f32. */
static inline __attribute__((always_inline)) __m512 dense_load(ps_dtype dt, const void *base,
                                                               int64_t i, __mmask16 m) {
    if (dt == PS_DT_F16)
        return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)base + i));
    if (dt == PS_DT_BF16) {
        __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)base + i);
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    return _mm512_maskz_loadu_ps(m, (const float *)base + i);
}

static inline __mmask16 dense_mask(int64_t left) {
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

void cpu_lin_dense_decode(const ps_weight *w, int64_t n0, int64_t nb, int64_t k0, int64_t kc,
                          float *dst, int64_t ld) {
    ps_dtype dt = w->dense.dtype;
    int64_t K = w->dense.shape[1];
    for (int64_t j = 0; j < nb; j++)
        for (int64_t k = 0; k < kc; k += 16) {
            __mmask16 m = dense_mask(kc - k);
            int64_t i = (n0 + j) * K + k0 + k;
            __m512 v = dt == PS_DT_F16 ? dense_load(PS_DT_F16, w->dense.data, i, m)
                                       : dense_load(PS_DT_BF16, w->dense.data, i, m);
            _mm512_mask_storeu_ps(dst + j * ld + k, m, v);
        }
}

/* R rows starting at n, one dtype (constants after inlining), summed in the
 * tile path's order: lanes of 16, reduced every CPU_LIN_KC columns. Rows up
 * to n1 are this worker's. */
static inline __attribute__((always_inline)) void dense_gemv_rows(int R, ps_dtype dt,
                                                                  const cpu_lin_call *c,
                                                                  int64_t n, int64_t n1) {
    int64_t K = c->K, esize = dt == PS_DT_F32 ? 4 : 2;
    const char *base = c->w->dense.data;
    /* the next group's rows, a 64-byte line per row each time this group
     * crosses one (short row streams defeat the hardware prefetcher) */
    int64_t ahead = n + 2 * R <= n1 ? R * K * esize : 0;
    float sum[4] = {0};
    for (int64_t k0 = 0; k0 < K; k0 += CPU_LIN_KC) {
        int64_t k1 = k0 + CPU_LIN_KC < K ? k0 + CPU_LIN_KC : K;
        __m512 acc[4];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) acc[r] = _mm512_setzero_ps();
        for (int64_t k = k0; k < k1; k += 16) {
            __mmask16 m = dense_mask(k1 - k);
            __m512 xv = _mm512_maskz_loadu_ps(m, c->x + k);
            if (ahead && (esize == 4 || (k & 31) == 0))
#pragma GCC unroll 4
                for (int r = 0; r < R; r++)
                    _mm_prefetch(base + ((n + r) * K + k) * esize + ahead, _MM_HINT_T0);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++)
                acc[r] = _mm512_fmadd_ps(xv, dense_load(dt, c->w->dense.data, (n + r) * K + k, m),
                                         acc[r]);
        }
        float part[4];
        _mm_storeu_ps(part, cpu_lin_hsum4(acc[0], acc[1], acc[2], acc[3]));
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) sum[r] = k0 == 0 ? part[r] : sum[r] + part[r];
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) c->y[n + r] = sum[r];
}

static inline __attribute__((always_inline)) void dense_gemv_dt(ps_dtype dt, const cpu_lin_call *c,
                                                                int64_t n0, int64_t n1) {
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) dense_gemv_rows(4, dt, c, n, n1);
    for (; n < n1; n++) dense_gemv_rows(1, dt, c, n, n1);
}

void cpu_lin_dense_gemv(const cpu_lin_call *c, int64_t n0, int64_t n1) {
    switch (c->w->dense.dtype) {
    case PS_DT_F16: dense_gemv_dt(PS_DT_F16, c, n0, n1); break;
    case PS_DT_BF16: dense_gemv_dt(PS_DT_BF16, c, n0, n1); break;
    default: dense_gemv_dt(PS_DT_F32, c, n0, n1); break;
    }
}

#elif !defined(CPU_LIN_AVX2) /* portable fallback: exact scalar conversions */

void cpu_lin_dense_decode(const ps_weight *w, int64_t n0, int64_t nb, int64_t k0, int64_t kc,
                          float *dst, int64_t ld) {
    int64_t K = w->dense.shape[1];
    for (int64_t j = 0; j < nb; j++)
        for (int64_t k = 0; k < kc; k++)
            dst[j * ld + k] = cpu_load_f(&w->dense, (n0 + j) * K + k0 + k);
}

#endif
