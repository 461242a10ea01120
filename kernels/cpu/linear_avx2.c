/* The fast CPU linear kernels of AVX2 + FMA + F16C builds (no AVX-512): the
 * tile GEMM, the NF4 and dense tile decoders and both decode GEMVs, i.e. the
 * functions linear_gemm.c, linear_nf4.c, linear_nf4_gemv.c and
 * linear_dense.c define for AVX-512. Before them, AVX2 machines (most x86
 * CPUs sold) ran the portable loops: the NF4 GEMV at ~0.1 GB/s per core.
 *
 * The arithmetic is the AVX-512 kernels', so is the summation order
 * (linear_impl.h) and so are the bits: each 16-lane vector there is a pair of
 * 8-lane halves here (lanes 0-7, 8-15), a tail is zero-filled as the masked
 * loads do, and every reduction is cpu_lin_hsum4's tree. What differs:
 *  - the 16-entry NF4 lookup (vpermps ymm sees only 3 index bits): vpshufb
 *    looks 32 codes up in each of the code values' 4 byte planes, unpacks
 *    put the bytes together, and a multiply by the block scale gives
 *    exactly the AVX-512 table's code * scale. 26 shuffles per 64-block,
 *    which bound it: 28.5 cycles per block on the AVX2 EPYC, against 38 for
 *    two vpermps and a blend per 8 codes (same bits, checked by hashing
 *    64 outputs of both);
 *  - the GEMM blocks are 4 x rows by 3 weight rows, not 4 by 4, and run
 *    each block's lanes 0-7 over all its columns before lanes 8-15: then 12
 *    accumulators of the 16 ymm registers do, and every load feeds 3 or 4
 *    multiply-adds (the 2 x 3 blocks that kept both halves live reloaded
 *    every weight vector per multiply-add: 16 loads per 12 of them, about
 *    0.7 multiply-adds per cycle of 2). Blocking and this order of the
 *    independent chains change no sum. */
#include <string.h>

#include "cpu_backend.h"
#include "linear_impl.h"
#include "math/nf4.h"

#ifdef CPU_LIN_AVX2

/* ---- 16 lanes as two halves ---- */

typedef struct {
    __m256 lo, hi;
} v16;

static inline v16 v16_zero(void) { return (v16){_mm256_setzero_ps(), _mm256_setzero_ps()}; }

static inline v16 v16_fma(v16 a, v16 b, v16 c) {
    return (v16){_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)};
}

/* lanes i < n of p, 0 beyond (no read past p + n) */
static inline __m256i v8_mask(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n < 8 ? (n < 0 ? 0 : n) : 8)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static inline v16 v16_load_f32(const float *p, int64_t n) {
    if (n >= 16) return (v16){_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)};
    return (v16){_mm256_maskload_ps(p, v8_mask(n)), _mm256_maskload_ps(p + 8, v8_mask(n - 8))};
}

/* [sum(a), sum(b), sum(c), sum(d)] in cpu_lin_hsum4's order: lane i + lane
 * i + 8, then the horizontal adds. */
static inline __m128 v16_hsum4(v16 a, v16 b, v16 c, v16 d) {
    __m256 ab = _mm256_hadd_ps(_mm256_add_ps(a.lo, a.hi), _mm256_add_ps(b.lo, b.hi));
    __m256 cd = _mm256_hadd_ps(_mm256_add_ps(c.lo, c.hi), _mm256_add_ps(d.lo, d.hi));
    __m256 abcd = _mm256_hadd_ps(ab, cd);
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

/* ---- the tile GEMM (linear_gemm.c) ---- */

#define GEMM_MR 4
#define GEMM_NR 3

/* Half h (lanes 8h .. 8h + 7) of an MR x NR block's 16-lane chains over kc
 * columns, into acc. The two halves' chains never meet before the final
 * reduction, so running one after the other changes no sum but halves the
 * live accumulators: MR x NR of the 16 registers, leaving room for NR weight
 * vectors held while each x vector is loaded once for NR multiply-adds. A
 * last group of 16 columns is zero-filled as the AVX-512 masked loads are
 * (also in a half with no column left: 0 * 0 is added there too). */
static inline __attribute__((always_inline)) void
gemm_half(int MR, int NR, int h, const float *x, int64_t ldx, const float *w, int64_t ldw,
          int64_t kc, __m256 acc[GEMM_MR][GEMM_NR]) {
#pragma GCC unroll 4
    for (int t = 0; t < MR; t++)
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++) acc[t][j] = _mm256_setzero_ps();
    int64_t k = 8 * h;
    for (; k - 8 * h + 16 <= kc; k += 16) { /* whole groups of 16 */
        __m256 wv[GEMM_NR];
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++) {
            wv[j] = _mm256_loadu_ps(w + j * ldw + k);
            __asm__("" : "+x"(wv[j])); /* in a register: else GCC folds the load */
        }
#pragma GCC unroll 4
        for (int t = 0; t < MR; t++) {
            __m256 xv = _mm256_loadu_ps(x + t * ldx + k);
            __asm__("" : "+x"(xv)); /* into each multiply-add, once per use */
#pragma GCC unroll 4
            for (int j = 0; j < NR; j++) acc[t][j] = _mm256_fmadd_ps(xv, wv[j], acc[t][j]);
        }
    }
    if (k - 8 * h < kc) { /* a last, partial group */
        __m256i m = v8_mask(kc - k);
        __m256 wv[GEMM_NR];
#pragma GCC unroll 4
        for (int j = 0; j < NR; j++) wv[j] = _mm256_maskload_ps(w + j * ldw + k, m);
#pragma GCC unroll 4
        for (int t = 0; t < MR; t++) {
            __m256 xv = _mm256_maskload_ps(x + t * ldx + k, m);
#pragma GCC unroll 4
            for (int j = 0; j < NR; j++) acc[t][j] = _mm256_fmadd_ps(xv, wv[j], acc[t][j]);
        }
    }
}

/* One MR x NR block (MR <= 4, NR <= 3: constants after inlining): both
 * halves, then per x row its NR 16-lane sums in cpu_lin_hsum4's tree. */
static inline __attribute__((always_inline)) void
gemm_block(int MR, int NR, const float *x, int64_t ldx, const float *w, int64_t ldw, int64_t kc,
           float *y, int64_t ldy, bool accumulate) {
    __m256 lo[GEMM_MR][GEMM_NR], hi[GEMM_MR][GEMM_NR];
    gemm_half(MR, NR, 0, x, ldx, w, ldw, kc, lo);
    gemm_half(MR, NR, 1, x, ldx, w, ldw, kc, hi);
    const v16 z = v16_zero();
#pragma GCC unroll 4
    for (int t = 0; t < MR; t++) {
        float r[4], *yt = y + t * ldy;
        _mm_storeu_ps(r, v16_hsum4((v16){lo[t][0], hi[t][0]}, NR > 1 ? (v16){lo[t][1], hi[t][1]} : z,
                                   NR > 2 ? (v16){lo[t][2], hi[t][2]} : z, z));
        for (int j = 0; j < NR; j++) yt[j] = accumulate ? yt[j] + r[j] : r[j];
    }
}

#define GEMM_CASE(mr, nr)                                                                      \
    case (mr) * 8 + (nr):                                                                      \
        gemm_block(mr, nr, x, ldx, w, ldw, kc, y, ldy, accumulate);                            \
        break;

static void gemm_block_any(int mr, int nr, const float *x, int64_t ldx, const float *w, int64_t ldw, int64_t kc,
                           float *y, int64_t ldy, bool accumulate) {
    switch (mr * 8 + nr) {
        GEMM_CASE(1, 1) GEMM_CASE(1, 2) GEMM_CASE(1, 3)
        GEMM_CASE(2, 1) GEMM_CASE(2, 2) GEMM_CASE(2, 3)
        GEMM_CASE(3, 1) GEMM_CASE(3, 2) GEMM_CASE(3, 3)
        GEMM_CASE(4, 1) GEMM_CASE(4, 2)
    }
}
#undef GEMM_CASE

/* 32 floats at a time: the even ones then the odd ones. vshufps picks them
 * inside 128-bit lanes (0 2 8 10 | 4 6 12 14), vpermpd puts the 64-bit
 * pairs in order. */
void cpu_lin_split_x(const float *x, int64_t n, float *xs) {
    for (int64_t k = 0; k < n; k += 32) {
        for (int h = 0; h < 2; h++) {
            __m256 a = _mm256_loadu_ps(x + k + 16 * h), b = _mm256_loadu_ps(x + k + 16 * h + 8);
            __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
            __m256 o = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
            _mm256_storeu_ps(xs + k + 8 * h, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8)));
            _mm256_storeu_ps(xs + k + 16 + 8 * h, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), 0xD8)));
        }
    }
}

void cpu_lin_gemm_tile(const float *x, int64_t ldx, int64_t T, const float *w, int64_t ldw,
                       int64_t nb, int64_t kc, float *y, int64_t ldy, bool accumulate,
                       bool split) {
    float xs[GEMM_MR * CPU_LIN_KC] __attribute__((aligned(32)));
    for (int64_t t = 0; t < T; t += GEMM_MR) {
        int mr = T - t < GEMM_MR ? (int)(T - t) : GEMM_MR;
        const float *xt = x + t * ldx;
        int64_t ldxt = ldx;
        if (split) { /* these x rows in the tile's order, once for all its rows */
            for (int r = 0; r < mr; r++) cpu_lin_split_x(xt + r * ldx, kc, xs + r * CPU_LIN_KC);
            xt = xs;
            ldxt = CPU_LIN_KC;
        }
        for (int64_t j = 0; j < nb; j += GEMM_NR) {
            int nr = nb - j < GEMM_NR ? (int)(nb - j) : GEMM_NR;
            const float *wj = w + j * ldw;
            float *yt = y + t * ldy + j;
            if (mr == GEMM_MR && nr == GEMM_NR) gemm_block(GEMM_MR, GEMM_NR, xt, ldxt, wj, ldw, kc, yt, ldy, accumulate);
            else gemm_block_any(mr, nr, xt, ldxt, wj, ldw, kc, yt, ldy, accumulate);
        }
    }
}

/* ---- NF4 (linear_nf4.c, linear_nf4_gemv.c) ---- */

/* The 16 NF4 code values as 4 byte planes (plane k: byte k of each value's
 * float), each in both 128-bit lanes: vpshufb looks 32 codes up in one. */
typedef struct {
    __m256i plane[4];
} nf4_planes;

static nf4_planes nf4_planes_make(void) {
    uint8_t b[4][32];
    for (int q = 0; q < 16; q++) {
        uint32_t u;
        memcpy(&u, &ps_nf4_code[q], sizeof u);
        for (int k = 0; k < 4; k++) b[k][q] = b[k][16 + q] = (uint8_t)(u >> (8 * k));
    }
    nf4_planes t;
    for (int k = 0; k < 4; k++) t.plane[k] = _mm256_loadu_si256((const __m256i *)b[k]);
    return t;
}

/* The code values of 32 codes (one per byte of c, 0..15), as four vectors
 * of 8 floats holding the codes of bytes 0-7, 8-15, 16-23 and 24-31, when c
 * has its dwords in the order 0, 2, 4, 6 | 1, 3, 5, 7 (the unpacks below
 * work inside 128-bit lanes). */
static inline void nf4_code_values(const nf4_planes *t, __m256i c, __m256 v[4]) {
    __m256i p0 = _mm256_shuffle_epi8(t->plane[0], c), p1 = _mm256_shuffle_epi8(t->plane[1], c);
    __m256i p2 = _mm256_shuffle_epi8(t->plane[2], c), p3 = _mm256_shuffle_epi8(t->plane[3], c);
    __m256i l01 = _mm256_unpacklo_epi8(p0, p1), h01 = _mm256_unpackhi_epi8(p0, p1);
    __m256i l23 = _mm256_unpacklo_epi8(p2, p3), h23 = _mm256_unpackhi_epi8(p2, p3);
    v[0] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(l01, l23));
    v[1] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(l01, l23));
    v[2] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(h01, h23));
    v[3] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(h01, h23));
}

/* The code values of one 64-block (32 packed bytes) in split order
 * (linear_impl.h): d[8i .. 8i + 7] = v[i], i.e. v[0], v[1] the even elements
 * of bytes 0-15, v[2], v[3] their odd ones, v[4..7] the same for bytes 16-31.
 * Weight = value * block scale, rounded once: the AVX-512 table's product. */
static inline void nf4_block_values(const nf4_planes *t, const uint8_t *p, __m256 v[8]) {
    const __m256i lanes = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7), m = _mm256_set1_epi8(0x0F);
    __m256i bytes = _mm256_loadu_si256((const __m256i *)p);
    __m256i even = _mm256_permutevar8x32_epi32(_mm256_and_si256(_mm256_srli_epi16(bytes, 4), m), lanes);
    __m256i odd = _mm256_permutevar8x32_epi32(_mm256_and_si256(bytes, m), lanes);
    __m256 e[4], o[4];
    nf4_code_values(t, even, e);
    nf4_code_values(t, odd, o);
    v[0] = e[0], v[1] = e[1], v[2] = o[0], v[3] = o[1];
    v[4] = e[2], v[5] = e[3], v[6] = o[2], v[7] = o[3];
}

static inline float nf4_scale(const ps_nf4 *w, int64_t b) {
    return ps_nf4_block_scale(w->absmax, w->absmax_q8, w->absmax2, w->offset, ps_dq_code, b);
}

void cpu_lin_nf4_decode_blocks(const ps_weight *w, int64_t n0, int64_t nb, int64_t k0,
                               int64_t kc, float *dst, int64_t ld) {
    const ps_nf4 *q = &w->nf4;
    const nf4_planes t = nf4_planes_make();
    int64_t bpr = q->in / PS_NF4_BLOCK;
    for (int64_t j = 0; j < nb; j++)
        for (int64_t k = 0; k < kc; k += PS_NF4_BLOCK) {
            int64_t b = (n0 + j) * bpr + (k0 + k) / PS_NF4_BLOCK;
            __m256 s = _mm256_set1_ps(nf4_scale(q, b)), v[8];
            nf4_block_values(&t, q->packed + b * (PS_NF4_BLOCK / 2), v);
            for (int i = 0; i < 8; i++) _mm256_storeu_ps(dst + j * ld + k + 8 * i, _mm256_mul_ps(v[i], s));
        }
}

/* Columns split per pass and DQ tables kept at once: linear_nf4_gemv.c's. */
#define GEMV_SEG 8192
_Static_assert(GEMV_SEG % CPU_LIN_KC == 0, "GEMV passes must start on tile chunks");
#define GEMV_TABLES 16

typedef struct {
    float tab[GEMV_TABLES][256] __attribute__((aligned(32)));
    int64_t tag[GEMV_TABLES];
} gemv_dq_tables;

/* Slot c % GEMV_TABLES holds tab[q] = the scale of a block with DQ code q in
 * DQ block c (the formula itself: 256 values per 16384 weights). */
static void gemv_dq_need(gemv_dq_tables *t, const ps_nf4 *q, int64_t c_lo, int64_t c_hi) {
    for (int64_t c = c_lo; c <= c_hi; c++) {
        int slot = (int)(c % GEMV_TABLES);
        if (t->tag[slot] == c) continue;
        for (int i = 0; i < 256; i++) t->tab[slot][i] = ps_nf4_dq_scale(ps_dq_code[i], q->absmax2[c], q->offset);
        t->tag[slot] = c;
    }
}

/* Rows n .. n+R-1 over blocks [kb_lo, kb_hi); xs holds those columns split.
 * linear_nf4_gemv.c's gemv_rows with each 16-lane step as two halves: lane
 * l of a step takes d[16 step + l] (nf4_block_values), in the AVX-512
 * kernel's order of multiply-adds. */
static inline __attribute__((always_inline)) void
gemv_rows(int R, bool DQ, const ps_nf4 *q, const gemv_dq_tables *t, const nf4_planes *planes, const float *xs,
          int64_t kb_lo, int64_t kb_hi, float *y, int64_t n, int64_t n1) {
    int64_t bpr = q->in / PS_NF4_BLOCK, chunk = CPU_LIN_KC / PS_NF4_BLOCK;
    int64_t ahead = n + 2 * R <= n1 ? R * bpr * (PS_NF4_BLOCK / 2) : 0; /* see linear_nf4_gemv.c */
    float sum[4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) sum[r] = kb_lo > 0 ? y[n + r] : 0.0f; /* earlier segments */
    for (int64_t kb0 = kb_lo; kb0 < kb_hi; kb0 += chunk) {
        int64_t kb1 = kb0 + chunk < kb_hi ? kb0 + chunk : kb_hi;
        v16 acc[4];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) acc[r] = v16_zero();
        for (int64_t kb = kb0; kb < kb1; kb++) {
            const float *xb = xs + (kb - kb_lo) * PS_NF4_BLOCK;
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                int64_t b = (n + r) * bpr + kb;
                __m256 s = _mm256_set1_ps(DQ ? t->tab[(b >> 8) % GEMV_TABLES][q->absmax_q8[b]] : q->absmax[b]), v[8];
                const uint8_t *p = q->packed + b * (PS_NF4_BLOCK / 2);
                if (ahead && (kb & 1) == 0) _mm_prefetch((const char *)(p + ahead), _MM_HINT_T0);
                nf4_block_values(planes, p, v);
#pragma GCC unroll 4
                for (int i = 0; i < 8; i += 2) { /* lanes 0-7 take d[16 (i/2) ..], lanes 8-15 the next 8 */
                    acc[r].lo = _mm256_fmadd_ps(_mm256_load_ps(xb + 8 * i), _mm256_mul_ps(v[i], s), acc[r].lo);
                    acc[r].hi = _mm256_fmadd_ps(_mm256_load_ps(xb + 8 * i + 8), _mm256_mul_ps(v[i + 1], s), acc[r].hi);
                }
            }
        }
        float part[4];
        _mm_storeu_ps(part, v16_hsum4(acc[0], acc[1], acc[2], acc[3]));
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) sum[r] = kb0 == 0 ? part[r] : sum[r] + part[r];
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) y[n + r] = sum[r];
}

static void gemv_group(int R, const ps_nf4 *q, gemv_dq_tables *t, const nf4_planes *planes, const float *xs,
                       int64_t kb_lo, int64_t kb_hi, float *y, int64_t n, int64_t n1) {
    if (q->absmax) {
        if (R == 4) gemv_rows(4, false, q, t, planes, xs, kb_lo, kb_hi, y, n, n1);
        else gemv_rows(1, false, q, t, planes, xs, kb_lo, kb_hi, y, n, n1);
        return;
    }
    int64_t bpr = q->in / PS_NF4_BLOCK;
    gemv_dq_need(t, q, (n * bpr + kb_lo) >> 8, ((n + R - 1) * bpr + kb_hi - 1) >> 8);
    if (R == 4) gemv_rows(4, true, q, t, planes, xs, kb_lo, kb_hi, y, n, n1);
    else gemv_rows(1, true, q, t, planes, xs, kb_lo, kb_hi, y, n, n1);
}

void cpu_lin_nf4_gemv(const cpu_lin_call *c, int64_t n0, int64_t n1) {
    const ps_nf4 *q = &c->w->nf4;
    float xs[GEMV_SEG] __attribute__((aligned(32)));
    gemv_dq_tables t;
    const nf4_planes planes = nf4_planes_make();
    for (int i = 0; i < GEMV_TABLES; i++) t.tag[i] = -1;
    for (int64_t s0 = 0; s0 < c->K; s0 += GEMV_SEG) {
        int64_t s1 = s0 + GEMV_SEG < c->K ? s0 + GEMV_SEG : c->K;
        int64_t kb_lo = s0 / PS_NF4_BLOCK, kb_hi = s1 / PS_NF4_BLOCK;
        cpu_lin_split_x(c->x + s0, s1 - s0, xs);
        int64_t span = 3 * (c->K / PS_NF4_BLOCK) + kb_hi - kb_lo; /* as in linear_nf4_gemv.c */
        int R = q->absmax || (span - 1) / 256 + 2 <= GEMV_TABLES ? 4 : 1;
        int64_t n = n0;
        for (; n + R <= n1; n += R) gemv_group(R, q, &t, &planes, xs, kb_lo, kb_hi, c->y, n, n1);
        for (; n < n1; n++) gemv_group(1, q, &t, &planes, xs, kb_lo, kb_hi, c->y, n, n1);
    }
}

/* ---- dense F32 / F16 / BF16 (linear_dense.c) ---- */

static inline __m256 dense_load8(ps_dtype dt, const void *base, int64_t i) {
    if (dt == PS_DT_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)base + i)));
    if (dt == PS_DT_BF16) {
        __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)base + i)));
        return _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
    }
    return _mm256_loadu_ps((const float *)base + i);
}

/* 16 (or n < 16, zero-filled) weights from element i as f32. */
static inline __attribute__((always_inline)) v16 dense_load(ps_dtype dt, const void *base, int64_t i, int64_t n) {
    if (n >= 16) return (v16){dense_load8(dt, base, i), dense_load8(dt, base, i + 8)};
    if (dt == PS_DT_F32) return v16_load_f32((const float *)base + i, n);
    uint16_t h[16] = {0};
    memcpy(h, (const uint16_t *)base + i, sizeof(uint16_t) * (size_t)n);
    return (v16){dense_load8(dt, h, 0), dense_load8(dt, h, 8)};
}

void cpu_lin_dense_decode(const ps_weight *w, int64_t n0, int64_t nb, int64_t k0, int64_t kc,
                          float *dst, int64_t ld) {
    ps_dtype dt = w->dense.dtype;
    int64_t K = w->dense.shape[1];
    for (int64_t j = 0; j < nb; j++)
        for (int64_t k = 0; k < kc; k += 16) {
            int64_t i = (n0 + j) * K + k0 + k, n = kc - k < 16 ? kc - k : 16;
            v16 v = dt == PS_DT_F16 ? dense_load(PS_DT_F16, w->dense.data, i, n)
                                    : dense_load(PS_DT_BF16, w->dense.data, i, n);
            float tmp[16];
            _mm256_storeu_ps(tmp, v.lo), _mm256_storeu_ps(tmp + 8, v.hi);
            memcpy(dst + j * ld + k, tmp, sizeof(float) * (size_t)n);
        }
}

/* R rows from n, one dtype (constants after inlining), in linear_dense.c's order. */
static inline __attribute__((always_inline)) void dense_gemv_rows(int R, ps_dtype dt, const cpu_lin_call *c,
                                                                  int64_t n, int64_t n1) {
    int64_t K = c->K, esize = dt == PS_DT_F32 ? 4 : 2;
    const char *base = c->w->dense.data;
    int64_t ahead = n + 2 * R <= n1 ? R * K * esize : 0;
    float sum[4] = {0};
    for (int64_t k0 = 0; k0 < K; k0 += CPU_LIN_KC) {
        int64_t k1 = k0 + CPU_LIN_KC < K ? k0 + CPU_LIN_KC : K;
        v16 acc[4];
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) acc[r] = v16_zero();
        for (int64_t k = k0; k < k1; k += 16) {
            v16 xv = v16_load_f32(c->x + k, k1 - k);
            if (ahead && (esize == 4 || (k & 31) == 0))
#pragma GCC unroll 4
                for (int r = 0; r < R; r++) _mm_prefetch(base + ((n + r) * K + k) * esize + ahead, _MM_HINT_T0);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) acc[r] = v16_fma(xv, dense_load(dt, base, (n + r) * K + k, k1 - k), acc[r]);
        }
        float part[4];
        _mm_storeu_ps(part, v16_hsum4(acc[0], acc[1], acc[2], acc[3]));
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) sum[r] = k0 == 0 ? part[r] : sum[r] + part[r];
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++) c->y[n + r] = sum[r];
}

static inline __attribute__((always_inline)) void dense_gemv_dt(ps_dtype dt, const cpu_lin_call *c, int64_t n0,
                                                                int64_t n1) {
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

#endif
