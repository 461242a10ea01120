/* NF4 quantisation + double quantisation on the host, bit-exact with
 * bitsandbytes @ 95f9af30 (backends/default/ops.py quantize_4bit and
 * quantize_blockwise; csrc/kernels.cu kQuantizeBlockwise), following the
 * recipe written out in shared/fixtures/llama-tiny/README.md section 6.
 * Every step is float32 with the same operation order: reciprocal first,
 * then multiply; offset = double mean rounded to float; no fused ops.
 * The per-element math is in kernels/math/nf4.h (shared with CUDA); full
 * blocks take an AVX-512 or AVX2 version of the same rules where available
 * (the same bytes: absmax and the midpoint count are exact operations). */
#include "nf4_quant.h"

#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#include "base/host_parallel.h"
#include "math/nf4.h"

int64_t nf4_n_blocks(int64_t n) { return (n + PS_NF4_BLOCK - 1) / PS_NF4_BLOCK; }
int64_t nf4_n_blocks2(int64_t n) {
    return (nf4_n_blocks(n) + PS_NF4_DQ_BLOCK - 1) / PS_NF4_DQ_BLOCK;
}

void nf4_host_free(nf4_host *q) {
    if (!q) return;
    free(q->packed);
    free(q->absmax_q8);
    free(q->absmax2);
    free(q->absmax);
    memset(q, 0, sizeof *q);
}

ps_nf4 nf4_host_view(const nf4_host *q) {
    ps_nf4 v = {.out = q->out, .in = q->in, .packed = q->packed, .absmax_q8 = q->absmax_q8,
                .absmax2 = q->absmax2, .offset = q->offset, .absmax = q->absmax,
                .dev = PS_DEV_CPU};
    return v;
}

/* absmax of blocks [b0, b1) (a last partial block uses what it has); returns
 * the index of the first non-finite element, or -1: its codes would be
 * meaningless. */
static int64_t nf4_block_absmax(const float *w, int64_t n, int64_t b0, int64_t b1, float *absmax) {
    for (int64_t b = b0; b < b1; b++) {
        int64_t i0 = b * PS_NF4_BLOCK, i1 = i0 + PS_NF4_BLOCK < n ? i0 + PS_NF4_BLOCK : n;
#ifdef __AVX512F__
        if (i1 - i0 == PS_NF4_BLOCK) {
            __m512 m = _mm512_setzero_ps(), big = _mm512_set1_ps(FLT_MAX);
            __mmask16 finite = 0xffff;
            for (int g = 0; g < 4; g++) {
                __m512 a = _mm512_abs_ps(_mm512_loadu_ps(w + i0 + 16 * g));
                finite &= _mm512_cmp_ps_mask(a, big, _CMP_LE_OQ); /* false for inf, NaN */
                m = _mm512_max_ps(m, a);
            }
            if (finite == 0xffff) {
                absmax[b] = _mm512_reduce_max_ps(m);
                continue;
            }
        }
#elif defined(__AVX2__)
        if (i1 - i0 == PS_NF4_BLOCK) {
            const __m256 sign = _mm256_set1_ps(-0.0f), big = _mm256_set1_ps(FLT_MAX);
            __m256 m = _mm256_setzero_ps(), finite = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
            for (int g = 0; g < 8; g++) {
                __m256 a = _mm256_andnot_ps(sign, _mm256_loadu_ps(w + i0 + 8 * g));
                finite = _mm256_and_ps(finite, _mm256_cmp_ps(a, big, _CMP_LE_OQ)); /* false for inf, NaN */
                m = _mm256_max_ps(m, a);
            }
            if (_mm256_movemask_ps(finite) == 0xff) {
                __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
                h = _mm_max_ps(h, _mm_movehl_ps(h, h));
                absmax[b] = _mm_cvtss_f32(_mm_max_ss(h, _mm_shuffle_ps(h, h, 1)));
                continue;
            }
        }
#endif
        float m = 0.0f;
        for (int64_t i = i0; i < i1; i++) {
            if (!isfinite(w[i])) return i;
            float a = fabsf(w[i]);
            if (a > m) m = a;
        }
        absmax[b] = m;
    }
    return -1;
}

#ifdef __AVX512F__
#define NF4_PACK_BLOCK64 1
/* One full 64-block into its 32 bytes, 16 elements at a time: the code is
 * the count of midpoints below s (ps_nf4_nearest's rule), then pairs of
 * codes are packed high nibble first. */
static void nf4_pack_block64(const float *w, float r, const float *mid, uint8_t *out) {
    const __m512i one = _mm512_set1_epi32(1);
    for (int g = 0; g < 4; g++) {
        __m512 s = _mm512_mul_ps(_mm512_loadu_ps(w + 16 * g), _mm512_set1_ps(r));
        __m512i q = _mm512_setzero_si512();
        for (int k = 0; k < 15; k++)
            q = _mm512_mask_add_epi32(q, _mm512_cmp_ps_mask(s, _mm512_set1_ps(mid[k]), _CMP_GT_OQ),
                                      q, one);
        __m128i c = _mm512_cvtepi32_epi8(q); /* 16 codes; u16 lane j = q[2j] | q[2j+1] << 8 */
        __m128i even = _mm_slli_epi16(_mm_and_si128(c, _mm_set1_epi16(0xff)), 4);
        __m128i pairs = _mm_or_si128(even, _mm_srli_epi16(c, 8));
        _mm_storel_epi64((__m128i *)(out + 8 * g), _mm_packus_epi16(pairs, pairs));
    }
}
#elif defined(__AVX2__)
#define NF4_PACK_BLOCK64 1
/* The same with 8 elements a vector: the midpoint count of 16 elements,
 * narrowed to 16 codes in element order, then packed as above. */
static void nf4_pack_block64(const float *w, float r, const float *mid, uint8_t *out) {
    for (int g = 0; g < 4; g++) {
        __m256i q[2];
        for (int h = 0; h < 2; h++) {
            __m256 s = _mm256_mul_ps(_mm256_loadu_ps(w + 16 * g + 8 * h), _mm256_set1_ps(r));
            q[h] = _mm256_setzero_si256();
            for (int k = 0; k < 15; k++) /* a true compare is -1 */
                q[h] = _mm256_sub_epi32(q[h], _mm256_castps_si256(_mm256_cmp_ps(s, _mm256_set1_ps(mid[k]), _CMP_GT_OQ)));
        }
        /* packus works inside 128-bit lanes: 0-3 8-11 | 4-7 12-15, put in order */
        __m256i c16 = _mm256_permute4x64_epi64(_mm256_packus_epi32(q[0], q[1]), 0xD8);
        __m128i c = _mm_packus_epi16(_mm256_castsi256_si128(c16), _mm256_extracti128_si256(c16, 1));
        __m128i even = _mm_slli_epi16(_mm_and_si128(c, _mm_set1_epi16(0xff)), 4);
        __m128i pairs = _mm_or_si128(even, _mm_srli_epi16(c, 8));
        _mm_storel_epi64((__m128i *)(out + 8 * g), _mm_packus_epi16(pairs, pairs));
    }
}
#endif

/* 4-bit codes of blocks [b0, b1), two per byte, first element in the high
 * nibble; an odd element count pads the last low nibble with the zero code. */
static void nf4_pack(const float *w, int64_t n, int64_t b0, int64_t b1, const float *absmax,
                     uint8_t *packed) {
    float mid[15];
    for (int k = 0; k < 15; k++) mid[k] = (ps_nf4_code[k] + ps_nf4_code[k + 1]) * 0.5f;
    for (int64_t b = b0; b < b1; b++) {
        int64_t i0 = b * PS_NF4_BLOCK, i1 = i0 + PS_NF4_BLOCK < n ? i0 + PS_NF4_BLOCK : n;
        /* all-zero block: scale 0 maps every element to code 7 (0.0) */
        float r = absmax[b] > 0.0f ? 1.0f / absmax[b] : 0.0f;
#ifdef NF4_PACK_BLOCK64
        if (i1 - i0 == PS_NF4_BLOCK) {
            nf4_pack_block64(w + i0, r, mid, packed + i0 / 2);
            continue;
        }
#endif
        for (int64_t i = i0; i < i1; i += 2) {
            uint8_t hi = ps_nf4_nearest(w[i] * r, mid);
            uint8_t lo = i + 1 < n ? ps_nf4_nearest(w[i + 1] * r, mid) : PS_NF4_ZERO_CODE;
            packed[i / 2] = (uint8_t)(hi << 4 | lo);
        }
    }
}

/* Index of the dynamic-map entry nearest to s, as torch.argmin(|s - code|)
 * computes it: float32 differences, first index among equal minima. The
 * minimum sits next to s in the sorted map; rounding can make a farther entry
 * below s tie with the nearer one, and the first index then wins, hence the
 * walk down. NaN (0 * inf when a DQ block's values are all equal) gives 0 as
 * torch.argmin does; its scale is 0 so the code value does not matter. */
static uint8_t nf4_dq_nearest(float s) {
    if (isnan(s)) return 0;
    int lo = 0; /* largest index with code <= s, or 0: 8 halvings without branches */
    for (int step = 128; step > 0; step /= 2) lo = ps_dq_code[lo + step] <= s ? lo + step : lo;
    int best = lo;
    float d = fabsf(s - ps_dq_code[lo]);
    if (lo + 1 < 256 && fabsf(s - ps_dq_code[lo + 1]) < d) return (uint8_t)(lo + 1);
    while (best > 0 && fabsf(s - ps_dq_code[best - 1]) == d) best--;
    return (uint8_t)best;
}

/* 8-bit blockwise quantisation of absmax - offset, DQ blocks (of 256) [c0, c1). */
static void nf4_double_quant(const float *absmax, int64_t nb, float offset, int64_t c0,
                             int64_t c1, uint8_t *q8, float *absmax2) {
    for (int64_t c = c0; c < c1; c++) {
        int64_t b0 = c * PS_NF4_DQ_BLOCK;
        int64_t b1 = b0 + PS_NF4_DQ_BLOCK < nb ? b0 + PS_NF4_DQ_BLOCK : nb;
        float m = 0.0f;
        for (int64_t b = b0; b < b1; b++) m = fmaxf(m, fabsf(absmax[b] - offset));
        absmax2[c] = m;
        float r = 1.0f / m;
        for (int64_t b = b0; b < b1; b++) {
            float s = (absmax[b] - offset) * r;
            q8[b] = nf4_dq_nearest(s < -1.0f ? -1.0f : s > 1.0f ? 1.0f : s);
        }
    }
}

/* The three block-parallel passes, each over a range of blocks given by
 * host_parallel_for: every block's output depends on that block alone, so the
 * result is the same for any thread count. */
typedef struct {
    const float *w;
    int64_t n, nb;
    nf4_host *q;
    _Atomic int64_t first_bad; /* first non-finite element over all ranges, or INT64_MAX */
} nf4_job;

#define NF4_GRAIN 1024 /* 64-blocks per range at least: 64K elements */

static void nf4_absmax_range(void *ctx, int64_t b0, int64_t b1) {
    nf4_job *j = ctx;
    int64_t bad = nf4_block_absmax(j->w, j->n, b0, b1, j->q->absmax);
    if (bad < 0) return;
    int64_t cur = atomic_load(&j->first_bad);
    while (bad < cur && !atomic_compare_exchange_weak(&j->first_bad, &cur, bad)) {
    }
}

static void nf4_pack_range(void *ctx, int64_t b0, int64_t b1) {
    nf4_job *j = ctx;
    nf4_pack(j->w, j->n, b0, b1, j->q->absmax, j->q->packed);
}

static void nf4_dq_range(void *ctx, int64_t c0, int64_t c1) {
    nf4_job *j = ctx;
    nf4_double_quant(j->q->absmax, j->nb, j->q->offset, c0, c1, j->q->absmax_q8, j->q->absmax2);
}

ps_status nf4_quantize(const float *w, int64_t out, int64_t in, bool double_quant, nf4_host *q,
                       ps_err *err) {
    memset(q, 0, sizeof *q);
    if (out <= 0 || in <= 0)
        return ps_errf(err, PS_EINVAL, "nf4 quantise: shape [%lld, %lld], expected positive sizes",
                       (long long)out, (long long)in);
    int64_t n = out * in, nb = nf4_n_blocks(n), nb2 = nf4_n_blocks2(n);
    ps_status st = PS_OK;
    q->out = out;
    q->in = in;
    q->packed = malloc((size_t)(n + 1) / 2);
    q->absmax = malloc(sizeof(float) * (size_t)nb);
    if (!q->packed || !q->absmax) goto nomem;
    nf4_job job = {.w = w, .n = n, .nb = nb, .q = q};
    atomic_init(&job.first_bad, INT64_MAX);
    host_parallel_for(nb, NF4_GRAIN, nf4_absmax_range, &job);
    int64_t bad = atomic_load(&job.first_bad);
    if (bad != INT64_MAX) {
        st = ps_errf(err, PS_EINVAL,
                     "nf4 quantise: weight element [%lld, %lld] is %g, expected a finite value",
                     (long long)(bad / in), (long long)(bad % in), (double)w[bad]);
        goto fail;
    }
    host_parallel_for(nb, NF4_GRAIN, nf4_pack_range, &job);
    if (!double_quant) return PS_OK;

    q->absmax_q8 = malloc((size_t)nb);
    q->absmax2 = malloc(sizeof(float) * (size_t)nb2);
    if (!q->absmax_q8 || !q->absmax2) goto nomem;
    double sum = 0.0; /* in block order, on one thread: the offset must not depend on threads */
    for (int64_t b = 0; b < nb; b++) sum += q->absmax[b];
    q->offset = (float)(sum / (double)nb);
    host_parallel_for(nb2, NF4_GRAIN / PS_NF4_DQ_BLOCK + 1, nf4_dq_range, &job);
    free(q->absmax);
    q->absmax = NULL;
    return PS_OK;

nomem:
    st = ps_errf(err, PS_ENOMEM, "nf4 quantise: out of memory for a [%lld, %lld] weight",
                 (long long)out, (long long)in);
fail:
    nf4_host_free(q);
    return st;
}

float nf4_block_scale(const ps_nf4 *w, int64_t block) {
    return ps_nf4_block_scale(w->absmax, w->absmax_q8, w->absmax2, w->offset, ps_dq_code, block);
}

void nf4_dequantize(const ps_nf4 *w, float *out) {
    int64_t n = w->out * w->in;
    for (int64_t b = 0; b * PS_NF4_BLOCK < n; b++) {
        float scale = nf4_block_scale(w, b);
        int64_t i1 = (b + 1) * PS_NF4_BLOCK < n ? (b + 1) * PS_NF4_BLOCK : n;
        for (int64_t i = b * PS_NF4_BLOCK; i < i1; i++)
            out[i] = ps_nf4_value(ps_nf4_code[ps_nf4_code_at(w->packed, i)], scale);
    }
}
