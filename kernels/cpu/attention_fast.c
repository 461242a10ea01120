/* Fast paged attention for the CPU backend (the default `attention` entry).
 *
 * Same contract and math as the oracle cpu_attention_ref (ops_attention.c);
 * two things make it faster:
 *  - the query heads that share a KV head (GQA group) are processed together,
 *    so each key/value row is loaded once per group instead of once per head;
 *  - dot products and the value accumulation use 16-wide AVX-512 FMAs when the
 *    head dim allows (AVX2 builds: the same 16 lanes as two 8-lane halves,
 *    reduced in _mm512_reduce_add_ps's order, so the same bits; else 4
 *    independent scalar accumulators): the oracle's single accumulator is a
 *    serial FMA chain, latency bound.
 * Summation order differs from the oracle, so results agree to float rounding
 * (tests/unit/test_cpu_ops.c checks it at several shapes). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif

#include "cpu_backend.h"
#include "kv_rows.h"

#define MAX_GROUP 64 /* query heads per KV head handled in one pass */

static float dot(const float *a, const float *b, int64_t D) {
#ifdef __AVX512F__
    if (D % 16 == 0) {
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
        int64_t d = 0;
        for (; d + 32 <= D; d += 32) {
            acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + d), _mm512_loadu_ps(b + d), acc0);
            acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + d + 16), _mm512_loadu_ps(b + d + 16), acc1);
        }
        if (d < D) acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + d), _mm512_loadu_ps(b + d), acc0);
        return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    }
#elif defined(__AVX2__) && defined(__FMA__)
    if (D % 16 == 0) { /* acc0, acc1 of the AVX-512 version as halves lo, hi */
        __m256 lo0 = _mm256_setzero_ps(), hi0 = lo0, lo1 = lo0, hi1 = lo0;
        int64_t d = 0;
        for (; d + 32 <= D; d += 32) {
            lo0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d), lo0);
            hi0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d + 8), _mm256_loadu_ps(b + d + 8), hi0);
            lo1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d + 16), _mm256_loadu_ps(b + d + 16), lo1);
            hi1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d + 24), _mm256_loadu_ps(b + d + 24), hi1);
        }
        if (d < D) {
            lo0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d), lo0);
            hi0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d + 8), _mm256_loadu_ps(b + d + 8), hi0);
        }
        /* reduce_add: upper 8 + lower 8, upper 4 + lower 4, (0 + 2, 1 + 3), then the two */
        __m256 s8 = _mm256_add_ps(_mm256_add_ps(hi0, hi1), _mm256_add_ps(lo0, lo1));
        __m128 s4 = _mm_add_ps(_mm256_extractf128_ps(s8, 1), _mm256_castps256_ps128(s8));
        __m128 s2 = _mm_add_ps(s4, _mm_shuffle_ps(s4, s4, _MM_SHUFFLE(1, 0, 3, 2)));
        return _mm_cvtss_f32(s2) + _mm_cvtss_f32(_mm_shuffle_ps(s2, s2, 1));
    }
#endif
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t d = 0;
    for (; d + 4 <= D; d += 4) {
        s0 += a[d] * b[d];
        s1 += a[d + 1] * b[d + 1];
        s2 += a[d + 2] * b[d + 2];
        s3 += a[d + 3] * b[d + 3];
    }
    for (; d < D; d++) s0 += a[d] * b[d];
    return (s0 + s1) + (s2 + s3);
}

/* o += p * v over D elements */
static void axpy(float *o, float p, const float *v, int64_t D) {
#ifdef __AVX512F__
    if (D % 16 == 0) {
        __m512 pp = _mm512_set1_ps(p);
        for (int64_t d = 0; d < D; d += 16)
            _mm512_storeu_ps(o + d, _mm512_fmadd_ps(pp, _mm512_loadu_ps(v + d), _mm512_loadu_ps(o + d)));
        return;
    }
#elif defined(__AVX2__) && defined(__FMA__)
    if (D % 8 == 0) { /* one fused multiply-add per element, as above */
        __m256 pp = _mm256_set1_ps(p);
        for (int64_t d = 0; d < D; d += 8)
            _mm256_storeu_ps(o + d, _mm256_fmadd_ps(pp, _mm256_loadu_ps(v + d), _mm256_loadu_ps(o + d)));
        return;
    }
#endif
    for (int64_t d = 0; d < D; d++) o[d] += p * v[d];
}

typedef struct {
    float *out;
    const float *q;
    const void *K, *V; /* the cache, in kv_dt */
    ps_dtype kv_dt;
    const int32_t *tok_seq, *tok_kv_pos, *block_tables;
    int max_pages, page_size, max_len;
    int64_t n_tokens, H, n_kv, D, group;
    float scale;
} fast_job;

static void fast_rows(void *ctx, int64_t r0, int64_t r1) {
    fast_job *j = ctx;
    int64_t G = j->group, row = j->n_kv * j->D;
    /* the group's scores, then one widened row (16-bit caches) */
    float *scores = malloc(sizeof(float) * (size_t)(G * (j->max_len > 0 ? j->max_len : 1) + j->D));
    if (!scores) return; /* cannot happen in practice; output stays as is */
    float *buf = scores + G * (j->max_len > 0 ? j->max_len : 1);
    for (int64_t r = r0; r < r1; r++) {
        /* r walks (token, kv head) pairs with tokens in zigzag order (0, T-1,
         * 1, T-2, ...): a causal prefill's work grows with the token index,
         * so contiguous chunks of plain order would leave the first thread
         * idle for most of the step */
        int64_t z = r / j->n_kv, kvh = r % j->n_kv;
        int64_t t = z % 2 == 0 ? z / 2 : j->n_tokens - 1 - z / 2;
        const int32_t *bt = j->block_tables + (int64_t)j->tok_seq[t] * j->max_pages;
        int len = j->tok_kv_pos[t] + 1;
        const float *q0 = j->q + (t * j->H + kvh * G) * j->D;
        float m[MAX_GROUP], sum[MAX_GROUP];
        for (int64_t g = 0; g < G; g++) m[g] = -INFINITY, sum[g] = 0.0f;
        for (int i = 0; i < len; i++) {
            int64_t slot = (int64_t)bt[i / j->page_size] * j->page_size + i % j->page_size;
            const float *k = cpu_kv_row(j->K, j->kv_dt, slot * row + kvh * j->D, j->D, buf);
            for (int64_t g = 0; g < G; g++) {
                float s = dot(q0 + g * j->D, k, j->D) * j->scale;
                scores[g * len + i] = s;
                if (s > m[g]) m[g] = s;
            }
        }
        for (int64_t g = 0; g < G; g++) {
            float *sc = scores + g * len;
            for (int i = 0; i < len; i++) sum[g] += (sc[i] = expf(sc[i] - m[g]));
            float *o = j->out + (t * j->H + kvh * G + g) * j->D;
            memset(o, 0, sizeof(float) * (size_t)j->D);
        }
        for (int i = 0; i < len; i++) {
            int64_t slot = (int64_t)bt[i / j->page_size] * j->page_size + i % j->page_size;
            const float *v = cpu_kv_row(j->V, j->kv_dt, slot * row + kvh * j->D, j->D, buf);
            for (int64_t g = 0; g < G; g++)
                axpy(j->out + (t * j->H + kvh * G + g) * j->D, scores[g * len + i] / sum[g], v, j->D);
        }
    }
    free(scores);
}

ps_status cpu_attention(ps_backend *be, ps_tensor *out, const ps_tensor *q, const ps_kv_layer *kv,
                        const ps_attn_meta *meta, float scale, ps_err *err) {
    int64_t H = q->shape[1], n_kv = kv->k.shape[2];
    if (H / n_kv > MAX_GROUP) return cpu_attention_ref(be, out, q, kv, meta, scale, err);
    int max_len = 0;
    ps_status st = cpu_attention_check(kv, meta, &max_len, err);
    if (st) return st;
    fast_job j = {out->data, q->data, kv->k.data, kv->v.data, kv->k.dtype, meta->tok_seq.data,
                  meta->tok_kv_pos.data, meta->block_tables.data, meta->max_pages, kv->page_size,
                  max_len, meta->n_tokens, H, n_kv, kv->k.shape[3], H / n_kv, scale};
    cpu_parallel_for(be, (int64_t)meta->n_tokens * n_kv, fast_rows, &j);
    return PS_OK;
}
