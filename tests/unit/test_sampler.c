/* Sampler: greedy = argmax, top-k 1 and a tiny top-p collapse to greedy,
 * seeded streams reproduce and stay independent, temperature/top-k/top-p
 * give the right distributions (chi-square over many draws), logprobs match
 * a double-precision log-softmax written out here. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"
#include "testutil.h"

#define V_RAND 1000

static int32_t naive_argmax(const float *x, int n) {
    int32_t b = 0;
    for (int i = 0; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static void test_greedy_collapse(void) {
    float *lg = malloc(V_RAND * sizeof *lg);
    sampler_scratch s = {0};
    TU_CHECK(sampler_scratch_init(&s, V_RAND, NULL) == PS_OK, "scratch");
    for (uint64_t seed = 1; seed <= 20; seed++) {
        tu_rand_fill(lg, V_RAND, seed);
        for (int i = 0; i < V_RAND; i++) lg[i] *= 6.0f;
        int32_t want = naive_argmax(lg, V_RAND);
        sampler_rng r;
        sampler_rng_seed(&r, seed);
        sampler_params greedy = {.temperature = 0.0f, .top_p = 1.0f, .top_k = 0};
        sampler_params k1 = {.temperature = 1.0f, .top_p = 1.0f, .top_k = 1};
        sampler_params ptiny = {.temperature = 1.5f, .top_p = 1e-6f, .top_k = 0};
        sampler_params both = {.temperature = 2.0f, .top_p = 1e-6f, .top_k = 50};
        for (int d = 0; d < 20; d++) {
            TU_CHECK(sampler_sample(&greedy, &r, lg, &s) == want, "greedy != argmax (seed %llu)",
                     (unsigned long long)seed);
            TU_CHECK(sampler_sample(&k1, &r, lg, &s) == want, "top_k=1 != argmax");
            TU_CHECK(sampler_sample(&ptiny, &r, lg, &s) == want, "top_p=1e-6 != argmax");
            TU_CHECK(sampler_sample(&both, &r, lg, &s) == want, "top_k=50 top_p=1e-6 != argmax");
        }
    }
    /* ties: the lowest id wins */
    float tie[5] = {1, 3, 0, 3, 3};
    TU_CHECK(sampler_argmax(tie, 5) == 1, "argmax tie -> %d, want 1", sampler_argmax(tie, 5));
    sampler_scratch_free(&s);
    free(lg);
}

static void test_seeds(void) {
    float *lg = malloc(V_RAND * sizeof *lg);
    tu_rand_fill(lg, V_RAND, 7);
    sampler_scratch s = {0};
    sampler_scratch_init(&s, V_RAND, NULL);
    sampler_params p = {.temperature = 1.0f, .top_p = 0.95f, .top_k = 0};
    int32_t a[200], b[200], c[200];
    sampler_rng ra, rb, rc, rx;
    sampler_rng_seed(&ra, 42);
    sampler_rng_seed(&rb, 42);
    sampler_rng_seed(&rc, 43);
    sampler_rng_seed(&rx, 42);
    for (int i = 0; i < 200; i++) a[i] = sampler_sample(&p, &ra, lg, &s);
    /* b interleaved with another stream (rx) on other parameters: must not matter */
    sampler_params q = {.temperature = 0.7f, .top_p = 1.0f, .top_k = 5};
    for (int i = 0; i < 200; i++) {
        b[i] = sampler_sample(&p, &rb, lg, &s);
        (void)sampler_sample(&q, &rx, lg, &s);
    }
    for (int i = 0; i < 200; i++) c[i] = sampler_sample(&p, &rc, lg, &s);
    TU_CHECK(memcmp(a, b, sizeof a) == 0, "same seed gave different tokens");
    int same = 0;
    for (int i = 0; i < 200; i++) same += a[i] == c[i];
    TU_CHECK(same < 100, "seeds 42 and 43 agree on %d of 200 draws", same);
    /* seed 0 must still give a working stream */
    sampler_rng_seed(&rc, 0);
    uint64_t x = sampler_rng_next(&rc), y = sampler_rng_next(&rc);
    TU_CHECK(x != 0 && x != y, "seed 0 stream degenerate");
    sampler_scratch_free(&s);
    free(lg);
}

/* Draws N tokens and returns the chi-square statistic against `want`
 * (probabilities); categories with want == 0 must never be drawn. */
static double chi_square(const float *lg, int V, sampler_params p, const double *want, int N,
                         uint64_t seed, int *impossible) {
    sampler_scratch s = {0};
    sampler_scratch_init(&s, V, NULL);
    sampler_rng r;
    sampler_rng_seed(&r, seed);
    int cnt[16] = {0};
    for (int i = 0; i < N; i++) cnt[sampler_sample(&p, &r, lg, &s)]++;
    double chi = 0.0;
    *impossible = 0;
    for (int v = 0; v < V; v++) {
        if (want[v] == 0.0) {
            *impossible += cnt[v];
            continue;
        }
        double e = want[v] * N;
        chi += (cnt[v] - e) * (cnt[v] - e) / e;
    }
    sampler_scratch_free(&s);
    return chi;
}

static void test_distributions(void) {
    /* p = [0.5, 0.25, 0.125, 0.0625, 0.0625] as logits (shifted: softmax ignores it) */
    const double p[5] = {0.5, 0.25, 0.125, 0.0625, 0.0625};
    float lg[5];
    for (int i = 0; i < 5; i++) lg[i] = (float)log(p[i]) + 3.0f;
    const int N = 40000;
    /* chi-square bound: 4 degrees of freedom, P(chi2 > 25) ~ 5e-5; a wrong
     * temperature or cut gives values in the hundreds at N = 40000. */
    const double bound = 25.0;
    struct {
        const char *what;
        sampler_params sp;
        double want[5];
    } cases[] = {
        {"T=1", {1.0f, 1.0f, 0}, {0.5, 0.25, 0.125, 0.0625, 0.0625}},
        /* T = 0.5: p^2 renormalised; T = 2: sqrt(p) renormalised (filled below) */
        {"T=0.5", {0.5f, 1.0f, 0}, {0}},
        {"T=2", {2.0f, 1.0f, 0}, {0}},
        {"top_k=2", {1.0f, 1.0f, 2}, {2.0 / 3, 1.0 / 3, 0, 0, 0}},
        /* sorted masses 0.5, 0.75, 0.875, ...: p = 0.7 keeps two tokens, 0.8 three, 0.4 one */
        {"top_p=0.7", {1.0f, 0.7f, 0}, {2.0 / 3, 1.0 / 3, 0, 0, 0}},
        {"top_p=0.8", {1.0f, 0.8f, 0}, {4.0 / 7, 2.0 / 7, 1.0 / 7, 0, 0}},
        {"top_p=0.4", {1.0f, 0.4f, 0}, {1, 0, 0, 0, 0}},
        {"top_k=4 top_p=0.95", {1.0f, 0.95f, 4}, {0.5 / 0.9375, 0.25 / 0.9375, 0.125 / 0.9375, 0.0625 / 0.9375, 0}},
    };
    double s2 = 0, sh = 0;
    for (int i = 0; i < 5; i++) s2 += p[i] * p[i], sh += sqrt(p[i]);
    for (int i = 0; i < 5; i++) cases[1].want[i] = p[i] * p[i] / s2, cases[2].want[i] = sqrt(p[i]) / sh;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int impossible;
        double chi = chi_square(lg, 5, cases[c].sp, cases[c].want, N, 1000 + c, &impossible);
        TU_CHECK(chi < bound, "%s: chi-square %.2f over bound %.1f", cases[c].what, chi, bound);
        TU_CHECK(impossible == 0, "%s: drew a cut token %d times", cases[c].what, impossible);
    }
    /* the statistic can fail: T=1 draws judged against the T=0.5 distribution */
    int imp;
    double wrong = chi_square(lg, 5, cases[0].sp, cases[1].want, N, 5, &imp);
    TU_CHECK(wrong > 10 * bound, "chi-square does not separate T=1 from T=0.5 (%.1f)", wrong);
}

/* Top-p over a 32000-token vocabulary (the sampler takes the best K, K
 * growing, instead of sorting everything) against a plain full sort written
 * here. Both use the same uniform draw: the sampler documents one draw per
 * call, taken first. The reference sums in double, the sampler in double over
 * float terms, so a draw landing within ~1e-7 of a boundary could differ: at
 * most 2 disagreements of 300 per case are tolerated (none expected). */
static const float *ref_lg;
static int ref_cmp(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (ref_lg[x] != ref_lg[y]) return ref_lg[x] > ref_lg[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* quantised: logits rounded to a step (many ties, which the order breaks by id) */
static void test_nucleus_large(float scale, float quantum) {
    const int V = 32000;
    float *lg = malloc((size_t)V * sizeof *lg);
    int32_t *ord = malloc((size_t)V * sizeof *ord);
    double *pr = malloc((size_t)V * sizeof *pr);
    sampler_scratch s = {0};
    sampler_scratch_init(&s, V, NULL);
    tu_rand_fill(lg, V, 2024);
    for (int v = 0; v < V; v++) lg[v] *= scale;
    if (quantum > 0)
        for (int v = 0; v < V; v++) lg[v] = quantum * roundf(lg[v] / quantum);
    ref_lg = lg;
    for (int v = 0; v < V; v++) ord[v] = v;
    qsort(ord, (size_t)V, sizeof *ord, ref_cmp);
    const float tps[3] = {0.5f, 0.9f, 0.999f};
    for (int c = 0; c < 3; c++) {
        sampler_params sp = {.temperature = 0.8f, .top_p = tps[c], .top_k = 0};
        double total = 0;
        for (int i = 0; i < V; i++) total += pr[i] = exp(((double)lg[ord[i]] - lg[ord[0]]) / 0.8);
        int keep = 0;
        double cum = 0;
        while (keep < V && cum < tps[c] * total) cum += pr[keep++];
        sampler_rng r, ru;
        sampler_rng_seed(&r, 5 + c);
        sampler_rng_seed(&ru, 5 + c);
        int bad = 0;
        for (int d = 0; d < 300; d++) {
            double target = sampler_rng_uniform(&ru) * cum, acc = 0;
            int i = 0;
            while (i < keep - 1 && target >= acc + pr[i]) acc += pr[i++];
            bad += sampler_sample(&sp, &r, lg, &s) != ord[i];
        }
        TU_CHECK(bad <= 2, "top_p %.3f over V=%d (logits x%.0f, step %.2f): %d of 300 draws differ from the "
                 "full-sort reference (nucleus of %d tokens)", tps[c], V, scale, quantum, bad, keep);
    }
    sampler_scratch_free(&s);
    free(lg);
    free(ord);
    free(pr);
}

static void test_logprobs(void) {
    float *lg = malloc(V_RAND * sizeof *lg);
    tu_rand_fill(lg, V_RAND, 99);
    for (int i = 0; i < V_RAND; i++) lg[i] *= 10.0f;
    lg[17] = lg[18] = 30.0f; /* a tie at the top: lower id first */
    double mx = -1e30, sum = 0;
    for (int i = 0; i < V_RAND; i++) mx = lg[i] > mx ? lg[i] : mx;
    for (int i = 0; i < V_RAND; i++) sum += exp((double)lg[i] - mx);
    double lse = mx + log(sum);
    int32_t ids[20];
    float lps[20];
    for (int32_t chosen = 0; chosen < V_RAND; chosen += 37) {
        float lp = sampler_logprobs(lg, V_RAND, chosen, 20, ids, lps);
        TU_CHECK(fabs(lp - (lg[chosen] - lse)) < 1e-4, "logprob(%d) %.6f want %.6f", chosen, lp,
                 lg[chosen] - lse);
    }
    (void)sampler_logprobs(lg, V_RAND, 0, 20, ids, lps);
    TU_CHECK(ids[0] == 17 && ids[1] == 18, "top ids start %d %d, want 17 18", ids[0], ids[1]);
    /* the top 20 by a full independent sort */
    int32_t ord[V_RAND];
    for (int i = 0; i < V_RAND; i++) ord[i] = i;
    for (int i = 0; i < 20; i++)
        for (int j = i + 1; j < V_RAND; j++)
            if (lg[ord[j]] > lg[ord[i]] || (lg[ord[j]] == lg[ord[i]] && ord[j] < ord[i])) {
                int32_t t = ord[i];
                ord[i] = ord[j];
                ord[j] = t;
            }
    for (int i = 0; i < 20; i++) {
        TU_CHECK(ids[i] == ord[i], "top[%d] = %d, want %d", i, ids[i], ord[i]);
        TU_CHECK(fabs(lps[i] - (lg[ord[i]] - lse)) < 1e-4, "top_lp[%d] %.6f", i, lps[i]);
    }
    float lp = sampler_logprobs(lg, V_RAND, 5, 0, ids, lps);
    TU_CHECK(fabs(lp - (lg[5] - lse)) < 1e-4, "n_top 0: logprob %.6f", lp);
    free(lg);
}

int main(void) {
    test_greedy_collapse();
    test_seeds();
    test_distributions();
    test_nucleus_large(8.0f, 0.0f);
    test_nucleus_large(1.0f, 0.0f);   /* near-flat: the nucleus is most of V (radix sort) */
    test_nucleus_large(2.0f, 0.25f);  /* ties by the thousand */
    test_logprobs();
    return tu_finish("sampler");
}
