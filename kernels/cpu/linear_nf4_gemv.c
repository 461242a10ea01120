/* The NF4 decode GEMV (T == 1, K % 64 == 0, AVX-512): y[n] = x . w'[n], the
 * hot path of token generation. Each weight byte is read once and decoded
 * in registers, never stored; per 64-block and row that is 2 byte
 * expansions, 2 shifts, 4 table permutes (vpermps: the shuffle ports bound
 * the loop), a multiply and 4 fused multiply-adds. Everything else is kept
 * off the loop:
 *  - x is split into even/odd elements once per segment of columns, into a
 *    buffer on this worker's stack, not once per block;
 *  - double-quantised scales come from a 256-entry table per DQ block
 *    (absmax' for every possible code), built 16 lanes at a time with the
 *    formula of ps_nf4_dq_scale, so a block's scale is one load.
 * The summation order equals the tile path's (linear_impl.h), so results do
 * not depend on T; tests/unit/test_linear.c checks that bit for bit. */
#include "linear_impl.h"
#include "math/nf4.h"

#ifdef CPU_LIN_AVX512

/* Columns split per pass: 32 KiB of x on the stack; a multiple of
 * CPU_LIN_KC so chunks line up with the tile path's. */
#define GEMV_SEG 8192
_Static_assert(GEMV_SEG % CPU_LIN_KC == 0, "GEMV passes must start on tile chunks");
/* DQ tables kept at once (16 KiB); a row group must need no more. */
#define GEMV_TABLES 16

typedef struct {
    float tab[GEMV_TABLES][256] __attribute__((aligned(64)));
    int64_t tag[GEMV_TABLES]; /* DQ block held by each slot, -1 when empty */
} gemv_dq_tables;

/* Slot c % GEMV_TABLES holds tab[q] = ps_nf4_dq_scale(ps_dq_code[q], absmax2[c], offset). */
static void gemv_dq_need(gemv_dq_tables *t, const ps_nf4 *q, int64_t c_lo, int64_t c_hi) {
    for (int64_t c = c_lo; c <= c_hi; c++) {
        int slot = (int)(c % GEMV_TABLES);
        if (t->tag[slot] == c) continue;
        __m512 a2 = _mm512_set1_ps(q->absmax2[c]), off = _mm512_set1_ps(q->offset);
        for (int i = 0; i < 256; i += 16) {
            __m512 p = _mm512_mul_ps(_mm512_loadu_ps(ps_dq_code + i), a2);
            __asm__("" : "+v"(p)); /* round the product on its own, as ps_fmul_rn does */
            _mm512_store_ps(t->tab[slot] + i, _mm512_add_ps(p, off));
        }
        t->tag[slot] = c;
    }
}

/* Rows n .. n+R-1 over blocks [kb_lo, kb_hi) of each row; xs holds those
 * columns split. DQ: whether scales come from the tables (else absmax).
 * Rows up to n1 are this worker's (prefetched ahead). R and DQ are
 * constants after inlining. */
static inline __attribute__((always_inline)) void
gemv_rows(int R, bool DQ, const ps_nf4 *q, const gemv_dq_tables *t, const float *xs,
          int64_t kb_lo, int64_t kb_hi, float *y, int64_t n, int64_t n1) {
    const __m512 code = _mm512_loadu_ps(ps_nf4_code);
    int64_t bpr = q->in / PS_NF4_BLOCK, chunk = CPU_LIN_KC / PS_NF4_BLOCK;
    /* Rows are short streams (K/2 bytes) that the hardware prefetcher barely
     * ramps up on: while a group computes, fetch the next group's bytes, a
     * 64-byte line every 2 blocks per row (same offsets, R rows further).
     * Their scales are small and read in order; the hardware handles them. */
    int64_t ahead = n + 2 * R <= n1 ? R * bpr * (PS_NF4_BLOCK / 2) : 0;
    float sum[4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) sum[r] = kb_lo > 0 ? y[n + r] : 0.0f; /* earlier segments */
    for (int64_t kb0 = kb_lo; kb0 < kb_hi; kb0 += chunk) {
        int64_t kb1 = kb0 + chunk < kb_hi ? kb0 + chunk : kb_hi;
        __m512 acc[4];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) acc[r] = _mm512_setzero_ps();
        for (int64_t kb = kb0; kb < kb1; kb++) {
            const float *xb = xs + (kb - kb_lo) * PS_NF4_BLOCK;
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                int64_t b = (n + r) * bpr + kb;
                const float *s = DQ ? &t->tab[(b >> 8) % GEMV_TABLES][q->absmax_q8[b]]
                                    : q->absmax + b;
                __m512 tbl = _mm512_mul_ps(code, _mm512_set1_ps(*s));
                const uint8_t *p = q->packed + b * (PS_NF4_BLOCK / 2);
                if (ahead && (kb & 1) == 0) _mm_prefetch((const char *)(p + ahead), _MM_HINT_T0);
                __m512i v0 = cpu_lin_nf4_bytes(p), v1 = cpu_lin_nf4_bytes(p + 16);
                __m512 w0 = _mm512_permutexvar_ps(_mm512_srli_epi32(v0, 4), tbl);
                __m512 w1 = _mm512_permutexvar_ps(v0, tbl);
                __m512 w2 = _mm512_permutexvar_ps(_mm512_srli_epi32(v1, 4), tbl);
                __m512 w3 = _mm512_permutexvar_ps(v1, tbl);
                acc[r] = _mm512_fmadd_ps(_mm512_load_ps(xb), w0, acc[r]);
                acc[r] = _mm512_fmadd_ps(_mm512_load_ps(xb + 16), w1, acc[r]);
                acc[r] = _mm512_fmadd_ps(_mm512_load_ps(xb + 32), w2, acc[r]);
                acc[r] = _mm512_fmadd_ps(_mm512_load_ps(xb + 48), w3, acc[r]);
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

/* R (4 or 1) rows from n: makes sure their DQ tables are built, then runs. */
static void gemv_group(int R, const ps_nf4 *q, gemv_dq_tables *t, const float *xs,
                       int64_t kb_lo, int64_t kb_hi, float *y, int64_t n, int64_t n1) {
    if (q->absmax) {
        if (R == 4) gemv_rows(4, false, q, t, xs, kb_lo, kb_hi, y, n, n1);
        else gemv_rows(1, false, q, t, xs, kb_lo, kb_hi, y, n, n1);
        return;
    }
    int64_t bpr = q->in / PS_NF4_BLOCK;
    gemv_dq_need(t, q, (n * bpr + kb_lo) >> 8, ((n + R - 1) * bpr + kb_hi - 1) >> 8);
    if (R == 4) gemv_rows(4, true, q, t, xs, kb_lo, kb_hi, y, n, n1);
    else gemv_rows(1, true, q, t, xs, kb_lo, kb_hi, y, n, n1);
}

void cpu_lin_nf4_gemv(const cpu_lin_call *c, int64_t n0, int64_t n1) {
    const ps_nf4 *q = &c->w->nf4;
    float xs[GEMV_SEG] __attribute__((aligned(64)));
    gemv_dq_tables t;
    for (int i = 0; i < GEMV_TABLES; i++) t.tag[i] = -1;
    for (int64_t s0 = 0; s0 < c->K; s0 += GEMV_SEG) {
        int64_t s1 = s0 + GEMV_SEG < c->K ? s0 + GEMV_SEG : c->K;
        int64_t kb_lo = s0 / PS_NF4_BLOCK, kb_hi = s1 / PS_NF4_BLOCK;
        cpu_lin_split_x(c->x + s0, s1 - s0, xs);
        /* 4 rows span 3 rows + the segment: at most span / 256 + 2 DQ blocks;
         * single rows (<= 2) when that would not fit (K > ~70000) */
        int64_t span = 3 * (c->K / PS_NF4_BLOCK) + kb_hi - kb_lo;
        int R = q->absmax || (span - 1) / 256 + 2 <= GEMV_TABLES ? 4 : 1;
        int64_t n = n0;
        for (; n + R <= n1; n += R) gemv_group(R, q, &t, xs, kb_lo, kb_hi, c->y, n, n1);
        for (; n < n1; n++) gemv_group(1, q, &t, xs, kb_lo, kb_hi, c->y, n, n1);
    }
}

#endif
