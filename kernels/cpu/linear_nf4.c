/* NF4 weights in the fast CPU linear layer: tile decoders and the fused
 * decode GEMV. Weight values are exactly the oracle's (nf4_code[q] * scale,
 * both from kernels/math/nf4.h); only the summation order differs.
 *
 * The GEMV (T == 1, K % 64 == 0) never writes decoded weights anywhere: per
 * 64-block it scales the 16-entry code table once (so a permute yields
 * code * scale directly), expands 32 packed bytes to dwords, and looks up
 * the high nibbles (even elements) and low nibbles (odd elements) with
 * vpermps. That "split" order is also how the tile decoder lays out NF4
 * tiles, so both paths sum in the same order (linear_impl.h). x is split
 * into even and odd elements once per block and shared by 4 weight rows. */
#include "linear_impl.h"
#include "math/nf4.h"

static inline float nf4_scale(const ps_nf4 *w, int64_t b) {
    return ps_nf4_block_scale(w->absmax, w->absmax_q8, w->absmax2, w->offset, ps_dq_code, b);
}

void cpu_lin_nf4_decode_any(const ps_weight *w, int64_t n0, int64_t nb, int64_t k0, int64_t kc,
                            float *dst, int64_t ld) {
    const ps_nf4 *q = &w->nf4;
    for (int64_t j = 0; j < nb; j++) {
        int64_t i = (n0 + j) * q->in + k0, block = -1;
        float scale = 0.0f;
        for (int64_t k = 0; k < kc; k++, i++) {
            if (i / PS_NF4_BLOCK != block) {
                block = i / PS_NF4_BLOCK;
                scale = nf4_scale(q, block);
            }
            dst[j * ld + k] = ps_nf4_value(ps_nf4_code[ps_nf4_code_at(q->packed, i)], scale);
        }
    }
}

#ifdef CPU_LIN_AVX512

/* 16 packed bytes (32 elements) expanded to dwords; vpermps reads only the
 * low 4 bits, so v selects the odd elements' codes and v >> 4 the even ones'. */
static inline __m512i nf4_bytes(const uint8_t *p) {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
}

/* The code table times the block scale: a permute then gives w' directly. */
static inline __m512 nf4_table(const ps_nf4 *q, int64_t b) {
    return _mm512_mul_ps(_mm512_loadu_ps(ps_nf4_code), _mm512_set1_ps(nf4_scale(q, b)));
}

void cpu_lin_nf4_decode_blocks(const ps_weight *w, int64_t n0, int64_t nb, int64_t k0,
                               int64_t kc, float *dst, int64_t ld) {
    const ps_nf4 *q = &w->nf4;
    int64_t bpr = q->in / PS_NF4_BLOCK;
    for (int64_t j = 0; j < nb; j++)
        for (int64_t k = 0; k < kc; k += PS_NF4_BLOCK) {
            int64_t b = (n0 + j) * bpr + (k0 + k) / PS_NF4_BLOCK;
            __m512 tbl = nf4_table(q, b);
            const uint8_t *p = q->packed + b * (PS_NF4_BLOCK / 2);
            float *d = dst + j * ld + k;
            for (int h = 0; h < 2; h++) {
                __m512i v = nf4_bytes(p + 16 * h);
                _mm512_storeu_ps(d + 32 * h, _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), tbl));
                _mm512_storeu_ps(d + 32 * h + 16, _mm512_permutexvar_ps(v, tbl));
            }
        }
}

/* R rows starting at n: y[n + r] = x . w'[n + r], summed in the order the
 * tile path uses (split groups of 32, one chain per lane, reduced per KC). */
static inline __attribute__((always_inline)) void nf4_gemv_rows(int R, const ps_nf4 *q,
                                                                const float *x, float *y,
                                                                int64_t n) {
    const __m512i ie = cpu_lin_even(), io = cpu_lin_odd();
    int64_t bpr = q->in / PS_NF4_BLOCK, chunk = CPU_LIN_KC / PS_NF4_BLOCK;
    float sum[4] = {0};
    for (int64_t kb0 = 0; kb0 < bpr; kb0 += chunk) {
        __m512 acc[4];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) acc[r] = _mm512_setzero_ps();
        int64_t kb1 = kb0 + chunk < bpr ? kb0 + chunk : bpr;
        for (int64_t kb = kb0; kb < kb1; kb++) {
            const float *xb = x + kb * PS_NF4_BLOCK;
            __m512 x0 = _mm512_loadu_ps(xb), x1 = _mm512_loadu_ps(xb + 16);
            __m512 x2 = _mm512_loadu_ps(xb + 32), x3 = _mm512_loadu_ps(xb + 48);
            __m512 xe0 = _mm512_permutex2var_ps(x0, ie, x1), xo0 = _mm512_permutex2var_ps(x0, io, x1);
            __m512 xe1 = _mm512_permutex2var_ps(x2, ie, x3), xo1 = _mm512_permutex2var_ps(x2, io, x3);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                int64_t b = (n + r) * bpr + kb;
                __m512 tbl = nf4_table(q, b);
                const uint8_t *p = q->packed + b * (PS_NF4_BLOCK / 2);
                __m512i v0 = nf4_bytes(p), v1 = nf4_bytes(p + 16);
                acc[r] = _mm512_fmadd_ps(xe0, _mm512_permutexvar_ps(_mm512_srli_epi32(v0, 4), tbl), acc[r]);
                acc[r] = _mm512_fmadd_ps(xo0, _mm512_permutexvar_ps(v0, tbl), acc[r]);
                acc[r] = _mm512_fmadd_ps(xe1, _mm512_permutexvar_ps(_mm512_srli_epi32(v1, 4), tbl), acc[r]);
                acc[r] = _mm512_fmadd_ps(xo1, _mm512_permutexvar_ps(v1, tbl), acc[r]);
            }
        }
        float part[4];
        _mm_storeu_ps(part, cpu_lin_hsum4(acc[0], acc[1], acc[2], acc[3]));
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) sum[r] = kb0 == 0 ? part[r] : sum[r] + part[r];
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) y[n + r] = sum[r];
}

void cpu_lin_nf4_gemv(const cpu_lin_call *c, int64_t n0, int64_t n1) {
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) nf4_gemv_rows(4, &c->w->nf4, c->x, c->y, n);
    for (; n < n1; n++) nf4_gemv_rows(1, &c->w->nf4, c->x, c->y, n);
}

#else /* without AVX-512 the generic decoder serves every shape */

void cpu_lin_nf4_decode_blocks(const ps_weight *w, int64_t n0, int64_t nb, int64_t k0,
                               int64_t kc, float *dst, int64_t ld) {
    cpu_lin_nf4_decode_any(w, n0, nb, k0, kc, dst, ld);
}

#endif
