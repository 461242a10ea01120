/* Sampling (see sampler.h). The candidate set is built in steps that each
 * shrink it: top-k selection (a bounded min-heap, O(V log k)), a sort by
 * logit only of what top-p needs, then the top-p cut. Probabilities are
 * exp((l - max) / T), summed in double, so the cut and the draw see the same
 * masses. */
#include "sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>

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
    if (!s->prob || !s->idx) {
        sampler_scratch_free(s);
        return ps_errf(err, PS_ENOMEM, "sampler scratch for vocab %d: out of memory", V);
    }
    return PS_OK;
}

void sampler_scratch_free(sampler_scratch *s) {
    free(s->prob);
    free(s->idx);
    s->prob = NULL;
    s->idx = NULL;
}

int32_t sampler_argmax(const float *logits, int V) {
    int32_t best = 0;
    for (int v = 1; v < V; v++)
        if (logits[v] > logits[best]) best = v;
    return best;
}

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

static void sampler_sort(const float *logits, int32_t *idx, int n) {
    sampler_sort_logits = logits;
    qsort(idx, (size_t)n, sizeof *idx, sampler_cmp);
    sampler_sort_logits = NULL;
}

/* prob[id] = exp((l - mx) / T) for the n candidates idx[0..n); returns their sum. */
static double sampler_weights(const float *logits, const int32_t *idx, int n, float mx, double inv_t,
                              float *prob) {
    double sum = 0.0;
    for (int i = 0; i < n; i++) {
        prob[idx[i]] = (float)exp(((double)logits[idx[i]] - mx) * inv_t);
        sum += prob[idx[i]];
    }
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

/* Top-p over the whole vocabulary without sorting all of it. The nucleus is
 * a prefix of the sorted order, so it lies inside {prob >= thr} as soon as
 * that set's mass reaches top_p of the total: thr starts at the top
 * probability and drops by e each pass (a pass is a compare-and-add over V),
 * then only that set is sorted. The result equals a full sort's. */
static int sampler_nucleus_all(const sampler_params *p, const float *logits, sampler_scratch *s,
                               float mx, double inv_t, double *kept) {
    int V = s->V;
    for (int v = 0; v < V; v++) s->idx[v] = v;
    double total = sampler_weights(logits, s->idx, V, mx, inv_t, s->prob);
    double want = (double)p->top_p * total;
    float thr = 1.0f; /* the top token's weight is exactly 1 */
    for (;;) {
        double mass = 0.0;
        for (int v = 0; v < V; v++)
            if (s->prob[v] >= thr) mass += s->prob[v];
        if (mass >= want || thr == 0.0f) break;
        thr *= 0.36787944f; /* 1/e */
        if (thr < 1e-30f) thr = 0.0f;
    }
    int n = 0;
    for (int v = 0; v < V; v++)
        if (s->prob[v] >= thr) s->idx[n++] = v;
    sampler_sort(logits, s->idx, n);
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
        sampler_sort(logits, s->idx, n);
        sum = sampler_weights(logits, s->idx, n, mx, inv_t, s->prob);
        if (p->top_p < 1.0f) n = sampler_top_p_cut(p, s->idx, n, s->prob, sum, &sum);
    } else if (p->top_p < 1.0f) {
        n = sampler_nucleus_all(p, logits, s, mx, inv_t, &sum);
    } else {
        n = V;
        for (int v = 0; v < V; v++) s->idx[v] = v;
        sum = sampler_weights(logits, s->idx, n, mx, inv_t, s->prob);
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
