/* NF4 weights in the fast CPU linear layer: the tile decoders. Weight values
 * are exactly the oracle's (nf4_code[q] * scale, both from
 * kernels/math/nf4.h); only the summation order differs.
 *
 * The vector decoder scales the 16-entry code table once per 64-block (so a
 * permute yields code * scale directly), expands 32 packed bytes to dwords
 * and looks up the high nibbles (even elements) and low nibbles (odd
 * elements) with vpermps, giving the "split" order of linear_impl.h. The
 * decode GEMV, which does the same in registers, is in linear_nf4_gemv.c. */
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
                __m512i v = cpu_lin_nf4_bytes(p + 16 * h);
                _mm512_storeu_ps(d + 32 * h, _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), tbl));
                _mm512_storeu_ps(d + 32 * h + 16, _mm512_permutexvar_ps(v, tbl));
            }
        }
}

#elif !defined(CPU_LIN_AVX2) /* no vector build: the generic decoder serves every shape */

void cpu_lin_nf4_decode_blocks(const ps_weight *w, int64_t n0, int64_t nb, int64_t k0,
                               int64_t kc, float *dst, int64_t ld) {
    cpu_lin_nf4_decode_any(w, n0, nb, k0, kc, dst, ld);
}

#endif
