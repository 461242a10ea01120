/* Sampling (see sampler.h). The candidate set is built in steps that each
 * shrink it: top-k selection (a bounded min-heap, O(V log k)), a sort by
 * logit only of what top-p needs, then the top-p cut. Weights are
 * exp((l - max) / T) computed in double and rounded to float (sampler_exp,
 * 8 at a time with AVX-512), summed in double, so the cut and the draw see
 * the same masses.
 *
 * Why the care: the engine samples on the host between device steps, so
 * this is per-token latency. Over a 32000-token vocabulary, a libm double
 * exp per token was ~0.45 ms per draw even for a peaked distribution, and
 * qsort of a near-flat nucleus ~6 ms; a GPU decode step of a 7B model is a
 * few ms. */
#include "sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

static uint64_t sampler_splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void sampler_rng_seed(sampler_rng *r, uint64_t seed) {
    uint64_t x = seed;
    r->s = sampler_splitmix64(&x);
    if (r->s == 0) r->s = 0x9E3779B97F4A7C15ull; /* xorshift's one forbidden state */
}

uint64_t sampler_rng_next(sampler_rng *r) {
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

double sampler_rng_uniform(sampler_rng *r) {
    return (double)(sampler_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
}

ps_status sampler_scratch_init(sampler_scratch *s, int V, ps_err *err) {
    s->V = V;
    s->prob = malloc((size_t)V * sizeof *s->prob);
    s->idx = malloc((size_t)V * sizeof *s->idx);
    s->tmp = malloc((size_t)V * sizeof *s->tmp);
    s->key = malloc((size_t)2 * V * sizeof *s->key);
    if (!s->prob || !s->idx || !s->tmp || !s->key) {
        sampler_scratch_free(s);
        return ps_errf(err, PS_ENOMEM, "sampler scratch for vocab %d: out of memory", V);
    }
    return PS_OK;
}

void sampler_scratch_free(sampler_scratch *s) {
    free(s->prob);
    free(s->idx);
    free(s->tmp);
    free(s->key);
    s->prob = NULL;
    s->idx = NULL;
    s->tmp = NULL;
    s->key = NULL;
}

int32_t sampler_argmax(const float *logits, int V) {
    int32_t best = 0;
    float bv = logits[0];
    int v = 1;
#ifdef __AVX512F__
    /* 16 at a time: only a block holding something larger is scanned, in
     * order, so the lowest index still wins ties */
    for (; v + 16 <= V; v += 16) {
        __m512 x = _mm512_loadu_ps(logits + v);
        if (!_mm512_cmp_ps_mask(x, _mm512_set1_ps(bv), _CMP_GT_OQ)) continue;
        for (int i = v; i < v + 16; i++)
            if (logits[i] > bv) bv = logits[i], best = i;
    }
#endif
    for (; v < V; v++)
        if (logits[v] > bv) bv = logits[v], best = v;
    return best;
}

/* The weight (float) e^x of x = (l - mx) / T <= 0, x in double: x = n ln2 + r,
 * |r| <= ln2 / 2, e^r by its degree-11 Taylor polynomial (truncation
 * ~6e-15 relative), 2^n through the exponent bits, then rounded to float:
 * the float that libm's double exp rounds to, except where the double value
 * lies within ~1e-14 of a float rounding boundary. 0 below -104 (float
 * underflow); NaN stays NaN. Every step is a correctly rounded double op or
 * fma, so the AVX-512 form below gives the same bits as this scalar one. */
#define SAMPLER_EXP_MIN (-104.0)
static const double k_exp_c[12] = {1.0 / 39916800, 1.0 / 3628800, 1.0 / 362880, 1.0 / 40320, 1.0 / 5040,
                                   1.0 / 720,      1.0 / 120,     1.0 / 24,     1.0 / 6,     0.5,
                                   1.0,            1.0};
#define SAMPLER_LOG2E 1.4426950408889634
#define SAMPLER_LN2_HI 0.6931471803691238 /* ln 2 = hi + lo (fdlibm's split) */
#define SAMPLER_LN2_LO 1.9082149292705877e-10

static float sampler_exp(double x) {
    if (!(x >= SAMPLER_EXP_MIN)) return x != x ? (float)x : 0.0f;
    double n = rint(x * SAMPLER_LOG2E);
    double r = fma(n, -SAMPLER_LN2_HI, x);
    r = fma(n, -SAMPLER_LN2_LO, r);
    double p = k_exp_c[0];
    for (int i = 1; i < 12; i++) p = fma(p, r, k_exp_c[i]);
    uint64_t bits = (uint64_t)((int64_t)n + 1023) << 52;
    double scale;
    memcpy(&scale, &bits, 8);
    return (float)(p * scale);
}

#ifdef __AVX512F__
/* sampler_exp of 8 doubles, bit for bit. */
static __m256 sampler_exp8(__m512d x) {
    __mmask8 ok = _mm512_cmp_pd_mask(x, _mm512_set1_pd(SAMPLER_EXP_MIN), _CMP_GE_OQ);
    __mmask8 nan = _mm512_cmp_pd_mask(x, x, _CMP_UNORD_Q);
    __m512d xc = _mm512_max_pd(x, _mm512_set1_pd(SAMPLER_EXP_MIN)); /* keeps the lanes below finite */
    __m512d n = _mm512_roundscale_pd(_mm512_mul_pd(xc, _mm512_set1_pd(SAMPLER_LOG2E)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512d r = _mm512_fmadd_pd(n, _mm512_set1_pd(-SAMPLER_LN2_HI), xc);
    r = _mm512_fmadd_pd(n, _mm512_set1_pd(-SAMPLER_LN2_LO), r);
    __m512d p = _mm512_set1_pd(k_exp_c[0]);
    for (int i = 1; i < 12; i++) p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(k_exp_c[i]));
    __m512i e = _mm512_slli_epi64(_mm512_add_epi64(_mm512_cvtpd_epi64(n), _mm512_set1_epi64(1023)), 52);
    __m512d y = _mm512_mul_pd(p, _mm512_castsi512_pd(e));
    y = _mm512_maskz_mov_pd(ok, y);       /* below the range: 0 */
    y = _mm512_mask_mov_pd(y, nan, x);    /* NaN stays NaN */
    return _mm512_cvtpd_ps(y);
}

/* x = ((double)l - mx) * inv_t for 8 logits, as sampler_arg. */
static __m512d sampler_arg8(__m256 l, double mx, double inv_t) {
    return _mm512_mul_pd(_mm512_sub_pd(_mm512_cvtps_pd(l), _mm512_set1_pd(mx)), _mm512_set1_pd(inv_t));
}
#endif

/* "a ranks before b": larger logit first, lower id on ties (a total order,
 * so results never depend on qsort's instability). */
static int sampler_before(const float *logits, int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
}

/* Min-heap (worst candidate at the root) of the k best ids. */
static void sampler_heap_down(const float *logits, int32_t *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && sampler_before(logits, h[w], h[l])) w = l;
        if (r < n && sampler_before(logits, h[w], h[r])) w = r;
        if (w == i) return;
        int32_t t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

static int sampler_top_k(const float *logits, int V, int k, int32_t *idx) {
    for (int v = 0; v < k; v++) idx[v] = v;
    for (int i = k / 2 - 1; i >= 0; i--) sampler_heap_down(logits, idx, k, i);
    for (int v = k; v < V; v++) {
        if (sampler_before(logits, v, idx[0])) {
            idx[0] = v;
            sampler_heap_down(logits, idx, k, 0);
        }
    }
    return k;
}

/* qsort has no context argument: the logits travel in a thread-local. */
static _Thread_local const float *sampler_sort_logits;

static int sampler_cmp(const void *pa, const void *pb) {
    int32_t a = *(const int32_t *)pa, b = *(const int32_t *)pb;
    if (a == b) return 0;
    return sampler_before(sampler_sort_logits, a, b) ? -1 : 1;
}

/* Ascending uint32 order = descending float order (for non-NaN floats;
 * -0 counts as +0, as the comparisons of sampler_before do). */
static inline uint32_t sampler_desc_key(float f) {
    uint32_t u;
    f += 0.0f; /* -0 + 0 = +0 */
    memcpy(&u, &f, 4);
    return ~(u & 0x80000000u ? ~u : u | 0x80000000u);
}

/* idx[0..n) (ascending ids) into sampler_before order: a stable LSD radix
 * sort on the descending-logit key, 8 bits a pass, so equal logits keep
 * their ascending ids; s->key and s->tmp are its buffers. */
static void sampler_radix(const float *logits, int32_t *idx, int n, sampler_scratch *s) {
    uint32_t *key = s->key, *key2 = s->key + s->V;
    int32_t *id2 = s->tmp;
    for (int i = 0; i < n; i++) key[i] = sampler_desc_key(logits[idx[i]]);
    for (int shift = 0; shift < 32; shift += 8) {
        int cnt[257] = {0};
        for (int i = 0; i < n; i++) cnt[((key[i] >> shift) & 255) + 1]++;
        if (cnt[((key[0] >> shift) & 255) + 1] == n) continue; /* one bucket: nothing moves */
        for (int b = 0; b < 256; b++) cnt[b + 1] += cnt[b];
        for (int i = 0; i < n; i++) {
            int at = cnt[(key[i] >> shift) & 255]++;
            key2[at] = key[i], id2[at] = idx[i];
        }
        memcpy(key, key2, sizeof *key * (size_t)n);
        memcpy(idx, id2, sizeof *idx * (size_t)n);
    }
}

/* Sorts idx[0..n) (ascending ids on entry) by sampler_before: qsort for a
 * few, radix above (a near-flat nucleus is most of the vocabulary). */
static void sampler_sort(const float *logits, int32_t *idx, int n, sampler_scratch *s) {
    if (n > 256) {
        sampler_radix(logits, idx, n, s);
        return;
    }
    sampler_sort_logits = logits;
    qsort(idx, (size_t)n, sizeof *idx, sampler_cmp);
    sampler_sort_logits = NULL;
}

/* The exponent of a weight: (l - mx) / T, in double. */
static inline double sampler_arg(float l, float mx, double inv_t) { return ((double)l - mx) * inv_t; }

/* prob[id] = exp((l - mx) / T) for the n candidates idx[0..n); returns their sum. */
static double sampler_weights(const float *logits, const int32_t *idx, int n, float mx, double inv_t,
                              float *prob) {
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        prob[idx[i]] = sampler_exp(sampler_arg(logits[idx[i]], mx, inv_t));
        sum += prob[idx[i]];
    }
    return sum;
}

/* prob[v] = exp((l - mx) / T) for every v < V (vectorised); returns the sum
 * (in double, 16 lanes: its order only moves the top-p bound by ~1e-15,
 * inside sampler_nucleus_all's slack, and the draw's normaliser is the kept
 * tokens' own sequential sum). */
static double sampler_weights_all(const float *logits, int V, float mx, double inv_t, float *prob) {
    double sum = 0.0;
    int v = 0;
#ifdef __AVX512F__
    __m512d s0 = _mm512_setzero_pd();
    for (; v + 8 <= V; v += 8) {
        __m256 w = sampler_exp8(sampler_arg8(_mm256_loadu_ps(logits + v), mx, inv_t));
        _mm256_storeu_ps(prob + v, w);
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(w));
    }
    sum = _mm512_reduce_add_pd(s0);
#endif
    for (; v < V; v++) sum += prob[v] = sampler_exp(sampler_arg(logits[v], mx, inv_t));
    return sum;
}

/* Smallest prefix of the sorted candidates idx[0..n) whose mass reaches
 * top_p of `sum` (at least one); *kept = its mass. */
static int sampler_top_p_cut(const sampler_params *p, const int32_t *idx, int n, const float *prob,
                             double sum, double *kept) {
    double want = (double)p->top_p * sum, cum = 0.0;
    int keep = 0;
    while (keep < n) {
        cum += prob[idx[keep++]];
        if (cum >= want) break;
    }
    *kept = cum;
    return keep;
}

/* Mass of the tokens whose weight exponent x = (l - mx) / T is at least
 * -A, summed in double (16 lanes: a different order than a sequential sum,
 * hence the caller's slack). */
static double sampler_mass_above(const float *logits, const float *prob, int V, float mx, double inv_t,
                                 double A) {
    double sum = 0.0;
    int v = 0;
#ifdef __AVX512F__
    __m512d s0 = _mm512_setzero_pd(), lim = _mm512_set1_pd(-A);
    for (; v + 8 <= V; v += 8) {
        __m512d x = sampler_arg8(_mm256_loadu_ps(logits + v), mx, inv_t);
        __m512d w = _mm512_cvtps_pd(_mm256_loadu_ps(prob + v));
        s0 = _mm512_add_pd(s0, _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(x, lim, _CMP_GE_OQ), w));
    }
    sum = _mm512_reduce_add_pd(s0);
#endif
    for (; v < V; v++)
        if (sampler_arg(logits[v], mx, inv_t) >= -A) sum += prob[v];
    return sum;
}

/* Top-p over the whole vocabulary without sorting all of it. The nucleus is
 * a prefix of the sorted order, so it lies inside {x >= -A} (x as above,
 * monotone in the logit) as soon as that set's mass reaches top_p of the
 * total: A starts at 0 (the top logit) and grows by 1 (the weight bound
 * drops by e) each vectorised pass; a relative slack of 1e-9 covers the
 * order in which the pass sums. Only that set is then sorted, and the cut is
 * the sequential one over it: the result equals a full sort's. */
static int sampler_nucleus_all(const sampler_params *p, const float *logits, sampler_scratch *s,
                               float mx, double inv_t, double *kept) {
    int V = s->V;
    double total = sampler_weights_all(logits, V, mx, inv_t, s->prob);
    double want = (double)p->top_p * total * (1.0 + 1e-9);
    double A = 0.0;
    while (A < 110.0 && sampler_mass_above(logits, s->prob, V, mx, inv_t, A) < want) A += 1.0;
    int n = 0;
    for (int v = 0; v < V; v++) /* past A = 110 (weights below e^-104 are 0): everything */
        if (A >= 110.0 || sampler_arg(logits[v], mx, inv_t) >= -A) s->idx[n++] = v;
    sampler_sort(logits, s->idx, n, s);
    return sampler_top_p_cut(p, s->idx, n, s->prob, total, kept);
}

int32_t sampler_sample(const sampler_params *p, sampler_rng *r, const float *logits,
                       sampler_scratch *s) {
    int V = s->V;
    if (p->temperature <= 0.0f) return sampler_argmax(logits, V);
    double u = sampler_rng_uniform(r); /* drawn first: one draw per call, whatever the path */
    float mx = logits[sampler_argmax(logits, V)];
    double inv_t = 1.0 / (double)p->temperature, sum;
    int n;
    if (p->top_k > 0 && p->top_k < V) {
        n = sampler_top_k(logits, V, p->top_k, s->idx);
        sampler_sort(logits, s->idx, n, s);
        sum = sampler_weights(logits, s->idx, n, mx, inv_t, s->prob);
        if (p->top_p < 1.0f) n = sampler_top_p_cut(p, s->idx, n, s->prob, sum, &sum);
    } else if (p->top_p < 1.0f) {
        n = sampler_nucleus_all(p, logits, s, mx, inv_t, &sum);
    } else {
        n = V;
        for (int v = 0; v < V; v++) s->idx[v] = v;
        sum = sampler_weights_all(logits, V, mx, inv_t, s->prob);
    }
    double target = u * sum, cum = 0.0;
    for (int i = 0; i < n; i++) {
        cum += s->prob[s->idx[i]];
        if (target < cum) return s->idx[i];
    }
    return s->idx[n - 1]; /* rounding left target == sum */
}

float sampler_logprobs(const float *logits, int V, int32_t chosen, int n_top, int32_t *top_ids,
                       float *top_lp) {
    float mx = logits[sampler_argmax(logits, V)];
    double sum = 0.0;
    for (int v = 0; v < V; v++) sum += exp((double)logits[v] - mx);
    double lse = (double)mx + log(sum);

    if (n_top > V) n_top = V;
    int have = 0; /* insertion into a short sorted list: n_top <= 20 */
    for (int v = 0; v < V && n_top > 0; v++) {
        if (have == n_top && !sampler_before(logits, v, top_ids[have - 1])) continue;
        int i = have < n_top ? have++ : have - 1;
        while (i > 0 && sampler_before(logits, v, top_ids[i - 1])) {
            top_ids[i] = top_ids[i - 1];
            i--;
        }
        top_ids[i] = v;
    }
    for (int i = 0; i < n_top; i++) top_lp[i] = (float)((double)logits[top_ids[i]] - lse);
    return (float)((double)logits[chosen] - lse);
}
