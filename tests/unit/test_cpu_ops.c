/* The CPU oracle ops checked against independent double-precision formulas
 * written here from the papers/HF code, on random inputs at odd shapes.
 * Paged attention is also checked against dense attention over the same
 * tokens with a shuffled page table (pages out of order, shared pool). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_backend.h"
#include "math/half.h"
#include "ops.h"
#include "testutil.h"

/* fp32 kernels vs double formulas: errors are a few ulps times sqrt(length) */
#define TOL 2e-6

static ps_backend *be;
static ps_err err;

static float *rnd(int64_t n, uint64_t seed) {
    float *x = malloc(sizeof(float) * (size_t)(n + 1));
    tu_rand_fill(x, n, seed);
    x[n] = 12345.0f; /* guard */
    return x;
}

static void check(const char *what, const float *got, const double *want, int64_t n) {
    float *w = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) w[i] = (float)want[i];
    tu_cmp c = tu_compare(got, w, n);
    TU_CHECK(c.rel_l2 < TOL, "%s: rel_l2 %.3g", what, c.rel_l2);
    if (c.rel_l2 >= TOL) tu_print_diff(what, got, w, n);
    TU_CHECK(got[n] == 12345.0f, "%s: guard overwritten", what);
    free(w);
}

static void test_rmsnorm(int64_t T, int64_t C) {
    float *x = rnd(T * C, 1), *w = rnd(C, 2), *o = rnd(T * C, 3);
    double *ref = malloc(sizeof(double) * (size_t)(T * C));
    for (int64_t t = 0; t < T; t++) {
        double ss = 0;
        for (int64_t c = 0; c < C; c++) ss += (double)x[t * C + c] * x[t * C + c];
        double inv = 1.0 / sqrt(ss / C + 1e-5);
        for (int64_t c = 0; c < C; c++) ref[t * C + c] = w[c] * x[t * C + c] * inv;
    }
    ps_tensor tx = ps_tensor_2d(PS_DT_F32, T, C, x, PS_DEV_CPU);
    ps_tensor to = ps_tensor_2d(PS_DT_F32, T, C, o, PS_DEV_CPU);
    ps_tensor tw = ps_tensor_1d(PS_DT_F32, C, w, PS_DEV_CPU);
    TU_CHECK(op_rmsnorm(be, &to, &tx, &tw, 1e-5f, &err) == PS_OK, "rmsnorm: %s", err.msg);
    check("rmsnorm", o, ref, T * C);
    free(x), free(w), free(o), free(ref);
}

/* add_rmsnorm = add, then rmsnorm, bit for bit: both x (updated in place) and out. */
static void test_add_rmsnorm(int64_t T, int64_t C) {
    float *x1 = rnd(T * C, 11), *x2 = rnd(T * C, 11), *y = rnd(T * C, 12), *w = rnd(C, 13);
    float *o1 = rnd(T * C, 14), *o2 = rnd(T * C, 15);
    ps_tensor tx1 = ps_tensor_2d(PS_DT_F32, T, C, x1, PS_DEV_CPU), tx2 = ps_tensor_2d(PS_DT_F32, T, C, x2, PS_DEV_CPU);
    ps_tensor ty = ps_tensor_2d(PS_DT_F32, T, C, y, PS_DEV_CPU), tw = ps_tensor_1d(PS_DT_F32, C, w, PS_DEV_CPU);
    ps_tensor to1 = ps_tensor_2d(PS_DT_F32, T, C, o1, PS_DEV_CPU), to2 = ps_tensor_2d(PS_DT_F32, T, C, o2, PS_DEV_CPU);
    TU_CHECK(op_add(be, &tx1, &ty, &err) == PS_OK && op_rmsnorm(be, &to1, &tx1, &tw, 1e-5f, &err) == PS_OK,
             "add + rmsnorm: %s", err.msg);
    TU_CHECK(op_add_rmsnorm(be, &to2, &tx2, &ty, &tw, 1e-5f, &err) == PS_OK, "add_rmsnorm: %s", err.msg);
    TU_CHECK(!memcmp(x1, x2, sizeof(float) * (size_t)(T * C + 1)) &&
                 !memcmp(o1, o2, sizeof(float) * (size_t)(T * C + 1)),
             "add_rmsnorm (%lld, %lld) differs from add + rmsnorm", (long long)T, (long long)C);
    /* in place (out = x) is allowed; out = y is not (y is read while out is written) */
    TU_CHECK(op_add_rmsnorm(be, &to2, &tx2, &to2, &tw, 1e-5f, &err) == PS_EINVAL, "out = y accepted");
    free(x1), free(x2), free(y), free(w), free(o1), free(o2);
}

/* add_rmsnorm_linear_n = add_rmsnorm (on a copy of x: x itself stays as it
 * was) then linear_n, bit for bit: x_out, h and the n projections; and the
 * buffers it must refuse to share (a fused backend reads all of x and y
 * while writing x_out and h). */
static void test_add_rmsnorm_linear_n(int64_t T, int64_t C) {
    enum { N = 3 };
    const int64_t out[N] = {5, 17, 9};
    float *x = rnd(T * C, 21), *x1 = rnd(T * C, 21), *y = rnd(T * C, 22), *w = rnd(C, 23);
    float *xo = rnd(T * C, 24), *h1 = rnd(T * C, 25), *h2 = rnd(T * C, 26), *wm[N], *y1[N], *y2[N];
    ps_tensor tx = ps_tensor_2d(PS_DT_F32, T, C, x, PS_DEV_CPU), tx1 = ps_tensor_2d(PS_DT_F32, T, C, x1, PS_DEV_CPU);
    ps_tensor ty = ps_tensor_2d(PS_DT_F32, T, C, y, PS_DEV_CPU), tw = ps_tensor_1d(PS_DT_F32, C, w, PS_DEV_CPU);
    ps_tensor txo = ps_tensor_2d(PS_DT_F32, T, C, xo, PS_DEV_CPU);
    ps_tensor th1 = ps_tensor_2d(PS_DT_F32, T, C, h1, PS_DEV_CPU), th2 = ps_tensor_2d(PS_DT_F32, T, C, h2, PS_DEV_CPU);
    ps_weight wt[N];
    ps_tensor ty1[N], ty2[N], *ys1[N], *ys2[N];
    const ps_weight *ws[N];
    for (int i = 0; i < N; i++) {
        wm[i] = rnd(out[i] * C, 30 + i), y1[i] = rnd(T * out[i], 40 + i), y2[i] = rnd(T * out[i], 50 + i);
        wt[i] = (ps_weight){PS_WEIGHT_DENSE, ps_tensor_2d(PS_DT_F32, out[i], C, wm[i], PS_DEV_CPU)};
        ty1[i] = ps_tensor_2d(PS_DT_F32, T, out[i], y1[i], PS_DEV_CPU), ys1[i] = &ty1[i];
        ty2[i] = ps_tensor_2d(PS_DT_F32, T, out[i], y2[i], PS_DEV_CPU), ys2[i] = &ty2[i];
        ws[i] = &wt[i];
    }
    TU_CHECK(op_add_rmsnorm(be, &th1, &tx1, &ty, &tw, 1e-5f, &err) == PS_OK &&
                 op_linear_n(be, N, ys1, &th1, ws, &err) == PS_OK,
             "add_rmsnorm + linear_n: %s", err.msg);
    TU_CHECK(op_add_rmsnorm_linear_n(be, &th2, &txo, &tx, &ty, &tw, 1e-5f, N, ys2, ws, &err) == PS_OK,
             "add_rmsnorm_linear_n: %s", err.msg);
    size_t bytes = sizeof(float) * (size_t)(T * C + 1); /* with the guard */
    float *x0 = rnd(T * C, 21);
    TU_CHECK(!memcmp(x, x0, bytes), "add_rmsnorm_linear_n (%lld, %lld) changed x", (long long)T, (long long)C);
    TU_CHECK(!memcmp(xo, x1, bytes) && !memcmp(h2, h1, bytes),
             "add_rmsnorm_linear_n (%lld, %lld): x_out or h differs from add_rmsnorm", (long long)T, (long long)C);
    for (int i = 0; i < N; i++)
        TU_CHECK(!memcmp(y1[i], y2[i], sizeof(float) * (size_t)(T * out[i] + 1)),
                 "add_rmsnorm_linear_n (%lld, %lld): projection %d differs from linear_n", (long long)T,
                 (long long)C, i);
    /* shared buffers are refused, and nothing is written then */
    struct { ps_tensor *h, *xo; const ps_tensor *x, *y; int yi; const char *what; } bad[] = {
        {&th2, &tx, &tx, &ty, -1, "x_out = x"},   {&th2, &ty, &tx, &ty, -1, "x_out = y"},
        {&tx, &txo, &tx, &ty, -1, "h = x"},       {&ty, &txo, &tx, &ty, -1, "h = y"},
        {&txo, &txo, &tx, &ty, -1, "h = x_out"},  {&th2, &txo, &tx, &ty, 1, "a projection into h"},
    };
    for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
        ps_tensor *ysb[N] = {ys2[0], ys2[1], ys2[2]}, alias;
        if (bad[b].yi >= 0) {
            alias = ps_tensor_2d(PS_DT_F32, T, out[bad[b].yi], bad[b].h->data, PS_DEV_CPU);
            ysb[bad[b].yi] = &alias;
        }
        TU_CHECK(op_add_rmsnorm_linear_n(be, bad[b].h, bad[b].xo, bad[b].x, bad[b].y, &tw, 1e-5f, N, ysb, ws, &err) ==
                     PS_EINVAL,
                 "add_rmsnorm_linear_n: %s accepted", bad[b].what);
    }
    ps_tensor *dup[N] = {ys2[0], ys2[0], ys2[2]};
    TU_CHECK(op_add_rmsnorm_linear_n(be, &th2, &txo, &tx, &ty, &tw, 1e-5f, N, dup, ws, &err) == PS_EINVAL,
             "add_rmsnorm_linear_n: two projections into one buffer accepted");
    TU_CHECK(op_add_rmsnorm_linear_n(be, &th2, &txo, &tx, &ty, &tw, 1e-5f, 0, ys2, ws, &err) == PS_EINVAL,
             "add_rmsnorm_linear_n: 0 weights accepted");
    TU_CHECK(!memcmp(x, x0, bytes) && !memcmp(y1[0], y2[0], sizeof(float) * (size_t)(T * out[0] + 1)),
             "a refused add_rmsnorm_linear_n wrote");
    for (int i = 0; i < N; i++) free(wm[i]), free(y1[i]), free(y2[i]);
    free(x), free(x0), free(x1), free(y), free(w), free(xo), free(h1), free(h2);
}

/* add_rmsnorm_swiglu = add_rmsnorm_linear_n into g and u, then silu_mul, bit
 * for bit in h, x_out and a; a sharing a buffer is refused. */
static void test_add_rmsnorm_swiglu(int64_t T, int64_t C, int64_t F) {
    float *x = rnd(T * C, 61), *y = rnd(T * C, 62), *w = rnd(C, 63), *wg = rnd(F * C, 64), *wu = rnd(F * C, 65);
    float *xo1 = rnd(T * C, 66), *xo2 = rnd(T * C, 66), *h1 = rnd(T * C, 67), *h2 = rnd(T * C, 67);
    float *g1 = rnd(T * F, 68), *u1 = rnd(T * F, 69), *a1 = rnd(T * F, 70);
    float *g2 = rnd(T * F, 68), *u2 = rnd(T * F, 69), *a2 = rnd(T * F, 70);
    ps_tensor tx = ps_tensor_2d(PS_DT_F32, T, C, x, PS_DEV_CPU), ty = ps_tensor_2d(PS_DT_F32, T, C, y, PS_DEV_CPU);
    ps_tensor tw = ps_tensor_1d(PS_DT_F32, C, w, PS_DEV_CPU);
    ps_weight wgt = {PS_WEIGHT_DENSE, ps_tensor_2d(PS_DT_F32, F, C, wg, PS_DEV_CPU)};
    ps_weight wut = {PS_WEIGHT_DENSE, ps_tensor_2d(PS_DT_F32, F, C, wu, PS_DEV_CPU)};
    const ps_weight *ws[2] = {&wgt, &wut};
#define T2(p, r, c) ps_tensor_2d(PS_DT_F32, r, c, p, PS_DEV_CPU)
    ps_tensor txo1 = T2(xo1, T, C), txo2 = T2(xo2, T, C), th1 = T2(h1, T, C), th2 = T2(h2, T, C);
    ps_tensor tg1 = T2(g1, T, F), tu1 = T2(u1, T, F), ta1 = T2(a1, T, F);
    ps_tensor tg2 = T2(g2, T, F), tu2 = T2(u2, T, F), ta2 = T2(a2, T, F);
#undef T2
    ps_tensor *gu1[2] = {&tg1, &tu1};
    TU_CHECK(op_add_rmsnorm_linear_n(be, &th1, &txo1, &tx, &ty, &tw, 1e-5f, 2, gu1, ws, &err) == PS_OK &&
                 op_silu_mul(be, &ta1, &tg1, &tu1, &err) == PS_OK,
             "add_rmsnorm_linear_n + silu_mul: %s", err.msg);
    TU_CHECK(op_add_rmsnorm_swiglu(be, &th2, &txo2, &tx, &ty, &tw, 1e-5f, &wgt, &wut, &tg2, &tu2, &ta2, &err) ==
                 PS_OK,
             "add_rmsnorm_swiglu: %s", err.msg);
    TU_CHECK(!memcmp(xo1, xo2, sizeof(float) * (size_t)(T * C + 1)) &&
                 !memcmp(h1, h2, sizeof(float) * (size_t)(T * C + 1)) &&
                 !memcmp(a1, a2, sizeof(float) * (size_t)(T * F + 1)),
             "add_rmsnorm_swiglu (%lld, %lld, %lld) differs from its parts", (long long)T, (long long)C,
             (long long)F);
    TU_CHECK(op_add_rmsnorm_swiglu(be, &th2, &txo2, &tx, &ty, &tw, 1e-5f, &wgt, &wut, &tg2, &tu2, &tg2, &err) ==
                 PS_EINVAL,
             "add_rmsnorm_swiglu: a = g accepted");
    ps_weight short_up = {PS_WEIGHT_DENSE, ps_tensor_2d(PS_DT_F32, F - 1, C, wu, PS_DEV_CPU)};
    TU_CHECK(op_add_rmsnorm_swiglu(be, &th2, &txo2, &tx, &ty, &tw, 1e-5f, &wgt, &short_up, &tg2, &tu2, &ta2, &err) ==
                 PS_EINVAL,
             "add_rmsnorm_swiglu: gate and up of different shapes accepted");
    free(x), free(y), free(w), free(wg), free(wu), free(xo1), free(xo2), free(h1), free(h2);
    free(g1), free(u1), free(a1), free(g2), free(u2), free(a2);
}

static void test_layernorm(int64_t T, int64_t C) {
    float *x = rnd(T * C, 4), *w = rnd(C, 5), *b = rnd(C, 6), *o = rnd(T * C, 7);
    double *ref = malloc(sizeof(double) * (size_t)(T * C));
    for (int64_t t = 0; t < T; t++) {
        double m = 0, v = 0;
        for (int64_t c = 0; c < C; c++) m += x[t * C + c];
        m /= C;
        for (int64_t c = 0; c < C; c++) v += (x[t * C + c] - m) * (x[t * C + c] - m);
        v /= C;
        for (int64_t c = 0; c < C; c++)
            ref[t * C + c] = (x[t * C + c] - m) / sqrt(v + 1e-5) * w[c] + b[c];
    }
    ps_tensor tx = ps_tensor_2d(PS_DT_F32, T, C, x, PS_DEV_CPU);
    ps_tensor to = ps_tensor_2d(PS_DT_F32, T, C, o, PS_DEV_CPU);
    ps_tensor tw = ps_tensor_1d(PS_DT_F32, C, w, PS_DEV_CPU);
    ps_tensor tb = ps_tensor_1d(PS_DT_F32, C, b, PS_DEV_CPU);
    TU_CHECK(op_layernorm(be, &to, &tx, &tw, &tb, 1e-5f, &err) == PS_OK, "layernorm: %s", err.msg);
    check("layernorm", o, ref, T * C);
    free(x), free(w), free(b), free(o), free(ref);
}

static void test_rope(int64_t T, int64_t H, int64_t D) {
    float *x = rnd(T * H * D, 8);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)T);
    double *ref = malloc(sizeof(double) * (size_t)(T * H * D));
    for (int64_t t = 0; t < T; t++) pos[t] = (int32_t)((t * 37) % 301); /* not monotone */
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < D / 2; i++) {
                double a = pos[t] * pow(10000.0, -2.0 * i / D);
                const float *v = x + (t * H + h) * D;
                ref[(t * H + h) * D + i] = v[i] * cos(a) - v[i + D / 2] * sin(a);
                ref[(t * H + h) * D + i + D / 2] = v[i + D / 2] * cos(a) + v[i] * sin(a);
            }
    ps_tensor tx = ps_tensor_3d(PS_DT_F32, T, H, D, x, PS_DEV_CPU);
    ps_tensor tp = ps_tensor_1d(PS_DT_I32, T, pos, PS_DEV_CPU);
    TU_CHECK(op_rope(be, &tx, &tp, 10000.0f, &err) == PS_OK, "rope: %s", err.msg);
    float *got = x;
    /* angles up to 300 rad in float lose ~1e-5 relative: HF computes them in
     * float32 too, so the looser bound here is the reference behaviour */
    float *w = malloc(sizeof(float) * (size_t)(T * H * D));
    for (int64_t i = 0; i < T * H * D; i++) w[i] = (float)ref[i];
    tu_cmp c = tu_compare(got, w, T * H * D);
    TU_CHECK(c.rel_l2 < 2e-5, "rope: rel_l2 %.3g", c.rel_l2);
    free(x), free(pos), free(ref), free(w);
}

/* x rounded through a KV cache dtype (the values a 16-bit cache holds). */
static float kv_round(float x, ps_dtype dt) {
    return dt == PS_DT_F16 ? ps_f16_to_f32(ps_f32_to_f16(x)) : dt == PS_DT_BF16 ? ps_bf16_to_f32(ps_f32_to_bf16(x)) : x;
}

/* Entry i of a cache of dtype dt, widened. */
static float kv_get(const void *c, ps_dtype dt, int64_t i) {
    if (dt == PS_DT_F32) return ((const float *)c)[i];
    uint16_t h = ((const uint16_t *)c)[i];
    return dt == PS_DT_F16 ? ps_f16_to_f32(h) : ps_bf16_to_f32(h);
}

/* n random floats stored as a cache of dtype dt (random prior content). */
static void *kv_rnd(int64_t n, uint64_t seed, ps_dtype dt) {
    float *f = rnd(n, seed);
    if (dt == PS_DT_F32) return f;
    uint16_t *h = malloc(sizeof(uint16_t) * (size_t)n);
    for (int64_t i = 0; i < n; i++) h[i] = dt == PS_DT_F16 ? ps_f32_to_f16(f[i]) : ps_f32_to_bf16(f[i]);
    free(f);
    return h;
}

/* Paged attention for S sequences of lengths len[s], pages shuffled, vs a
 * double-precision causal attention computed per sequence, with a KV cache
 * of dtype dt: kv_store must leave exactly the rounded k and v in it, and
 * the reference then uses those rounded values. */
static void test_attention(int S, const int *len, int H, int n_kv, int D, int page, ps_dtype dt) {
    int T = 0, max_pages = 0, n_pages = 0;
    for (int s = 0; s < S; s++) {
        T += len[s];
        int p = (len[s] + page - 1) / page;
        if (p > max_pages) max_pages = p;
        n_pages += p;
    }
    float *q = rnd((int64_t)T * H * D, 9), *k = rnd((int64_t)T * n_kv * D, 10);
    float *v = rnd((int64_t)T * n_kv * D, 11), *o = rnd((int64_t)T * H * D, 12);
    int64_t cache_n = (int64_t)n_pages * page * n_kv * D;
    void *kc = kv_rnd(cache_n, 13, dt), *vc = kv_rnd(cache_n, 14, dt);
    int32_t *tok_seq = malloc(sizeof(int32_t) * T), *kv_pos = malloc(sizeof(int32_t) * T);
    int32_t *slots = malloc(sizeof(int32_t) * T);
    int32_t *bt = calloc((size_t)(S * max_pages), sizeof(int32_t));
    /* hand out pages in a scrambled order */
    int next = 0;
    for (int s = 0; s < S; s++)
        for (int p = 0; p < (len[s] + page - 1) / page; p++)
            bt[s * max_pages + p] = (next++ * 7 + 3) % n_pages;
    /* interleave the sequences' tokens: round-robin over sequences */
    int *done = calloc((size_t)S, sizeof(int)), *first = calloc((size_t)S, sizeof(int));
    int t = 0;
    int *tok_order = malloc(sizeof(int) * T); /* global index in the per-seq concatenation */
    for (int s = 1; s < S; s++) first[s] = first[s - 1] + len[s - 1];
    while (t < T)
        for (int s = 0; s < S; s++)
            if (done[s] < len[s]) {
                int i = done[s]++;
                tok_seq[t] = s;
                kv_pos[t] = i;
                slots[t] = bt[s * max_pages + i / page] * page + i % page;
                tok_order[t] = first[s] + i;
                t++;
            }
    /* the reference sees what the cache holds */
    float *kr = malloc(sizeof(float) * (size_t)T * n_kv * D), *vr = malloc(sizeof(float) * (size_t)T * n_kv * D);
    for (int64_t e = 0; e < (int64_t)T * n_kv * D; e++) kr[e] = kv_round(k[e], dt), vr[e] = kv_round(v[e], dt);
    /* q/k/v rows are indexed by batch order t; the reference reads them back by (s, i) */
    double *ref = calloc((size_t)T * H * D, sizeof(double));
    int *row_of = malloc(sizeof(int) * T);
    for (t = 0; t < T; t++) row_of[tok_order[t]] = t;
    for (t = 0; t < T; t++) {
        int s = tok_seq[t], i = kv_pos[t];
        for (int h = 0; h < H; h++) {
            int kh = h / (H / n_kv);
            double *sc = malloc(sizeof(double) * (size_t)(i + 1)), m = -1e300, sum = 0;
            for (int j = 0; j <= i; j++) {
                int r = row_of[first[s] + j];
                double d = 0;
                for (int e = 0; e < D; e++)
                    d += (double)q[((int64_t)t * H + h) * D + e] * kr[((int64_t)r * n_kv + kh) * D + e];
                sc[j] = d / sqrt((double)D);
                if (sc[j] > m) m = sc[j];
            }
            for (int j = 0; j <= i; j++) sum += (sc[j] = exp(sc[j] - m));
            for (int j = 0; j <= i; j++) {
                int r = row_of[first[s] + j];
                for (int e = 0; e < D; e++)
                    ref[((int64_t)t * H + h) * D + e] += sc[j] / sum * vr[((int64_t)r * n_kv + kh) * D + e];
            }
            free(sc);
        }
    }
    ps_kv_layer kv = {page, {dt, 4, {n_pages, page, n_kv, D}, kc, PS_DEV_CPU},
                      {dt, 4, {n_pages, page, n_kv, D}, vc, PS_DEV_CPU}};
    ps_tensor tk = ps_tensor_3d(PS_DT_F32, T, n_kv, D, k, PS_DEV_CPU);
    ps_tensor tv = ps_tensor_3d(PS_DT_F32, T, n_kv, D, v, PS_DEV_CPU);
    ps_tensor ts = ps_tensor_1d(PS_DT_I32, T, slots, PS_DEV_CPU);
    TU_CHECK(op_kv_store(be, &kv, &tk, &tv, &ts, &err) == PS_OK, "kv_store: %s", err.msg);
    int bad = 0; /* the stored entries: the rounded values, bit for bit */
    for (t = 0; t < T; t++)
        for (int64_t e = 0; e < (int64_t)n_kv * D; e++) {
            int64_t at = (int64_t)slots[t] * n_kv * D + e, from = (int64_t)t * n_kv * D + e;
            float gk = kv_get(kc, dt, at), gv = kv_get(vc, dt, at);
            bad += memcmp(&gk, &kr[from], 4) != 0 || memcmp(&gv, &vr[from], 4) != 0;
        }
    TU_CHECK(bad == 0, "kv_store %s: %d entries are not the rounded k/v", ps_dtype_name(dt), bad);
    ps_attn_meta meta = {T, S, max_pages, ps_tensor_1d(PS_DT_I32, T, tok_seq, PS_DEV_CPU),
                         ps_tensor_1d(PS_DT_I32, T, kv_pos, PS_DEV_CPU),
                         ps_tensor_2d(PS_DT_I32, S, max_pages, bt, PS_DEV_CPU), 0};
    ps_tensor tq = ps_tensor_3d(PS_DT_F32, T, H, D, q, PS_DEV_CPU);
    ps_tensor to = ps_tensor_3d(PS_DT_F32, T, H, D, o, PS_DEV_CPU);
    TU_CHECK(op_attention(be, &to, &tq, &kv, &meta, 1.0f / sqrtf((float)D), &err) == PS_OK,
             "attention: %s", err.msg);
    check(dt == PS_DT_F32 ? "paged attention" : dt == PS_DT_F16 ? "paged attention, f16 kv" : "paged attention, bf16 kv",
          o, ref, (int64_t)T * H * D);
    /* the oracle itself, and the fast default against it */
    float *o_ref = rnd((int64_t)T * H * D, 15);
    ps_tensor tr = ps_tensor_3d(PS_DT_F32, T, H, D, o_ref, PS_DEV_CPU);
    TU_CHECK(cpu_attention_ref(be, &tr, &tq, &kv, &meta, 1.0f / sqrtf((float)D), &err) == PS_OK,
             "attention_ref: %s", err.msg);
    check("paged attention (oracle)", o_ref, ref, (int64_t)T * H * D);
    tu_cmp fc = tu_compare(o, o_ref, (int64_t)T * H * D);
    /* different summation order only: a few float ulps */
    TU_CHECK(fc.rel_l2 < 1e-6, "fast vs oracle attention: rel_l2 %.3g", fc.rel_l2);
    free(o_ref);
    free(q), free(k), free(v), free(o), free(kc), free(vc), free(tok_seq), free(kv_pos);
    free(slots), free(bt), free(done), free(first), free(tok_order), free(ref), free(row_of), free(kr), free(vr);
}

static void test_bad_inputs(void) {
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8}, w[3] = {1, 1, 1};
    ps_tensor tx = ps_tensor_2d(PS_DT_F32, 2, 4, x, PS_DEV_CPU);
    ps_tensor tw = ps_tensor_1d(PS_DT_F32, 3, w, PS_DEV_CPU);
    TU_CHECK(op_rmsnorm(be, &tx, &tx, &tw, 1e-5f, &err) == PS_EINVAL, "rmsnorm width mismatch");
    float y[8] = {1, 1, 1, 1, 1, 1, 1, 1}, o[8];
    ps_tensor ty = ps_tensor_2d(PS_DT_F32, 2, 4, y, PS_DEV_CPU), to = ps_tensor_2d(PS_DT_F32, 2, 4, o, PS_DEV_CPU);
    TU_CHECK(op_add_rmsnorm(be, &to, &tx, &ty, &tw, 1e-5f, &err) == PS_EINVAL, "add_rmsnorm width mismatch");
    ps_tensor ty_short = ps_tensor_2d(PS_DT_F32, 1, 4, y, PS_DEV_CPU);
    TU_CHECK(op_add_rmsnorm(be, &to, &tx, &ty_short, &tw, 1e-5f, &err) == PS_EINVAL, "add_rmsnorm y shape");
    int32_t ids[2] = {0, 9};
    float table[8] = {0};
    ps_tensor tt = ps_tensor_2d(PS_DT_F32, 2, 4, table, PS_DEV_CPU);
    ps_tensor ti = ps_tensor_1d(PS_DT_I32, 2, ids, PS_DEV_CPU);
    TU_CHECK(op_embed(be, &tx, &tt, &ti, &err) == PS_EINVAL, "embed id out of range accepted");
    TU_CHECK(strstr(err.msg, "9") != NULL, "embed message names the id: %s", err.msg);
    ps_tensor on_gpu = tx;
    on_gpu.dev = PS_DEV_CUDA;
    TU_CHECK(op_add(be, &tx, &on_gpu, &err) == PS_EINVAL, "device mismatch accepted");
}

int main(void) {
    int threads[] = {1, 2, 3};
    for (int i = 0; i < 3; i++) {
        ps_backend_cpu_create(threads[i], &be, &err);
        test_rmsnorm(1, 7), test_rmsnorm(17, 128);
        test_add_rmsnorm(1, 7), test_add_rmsnorm(17, 128), test_add_rmsnorm(3, 4097);
        test_add_rmsnorm_linear_n(1, 64), test_add_rmsnorm_linear_n(5, 129);
        test_add_rmsnorm_swiglu(1, 64, 11), test_add_rmsnorm_swiglu(3, 129, 40);
        test_layernorm(3, 65), test_layernorm(17, 4097);
        test_rope(5, 3, 32), test_rope(17, 4, 128);
        int l1[] = {1}, l3[] = {17, 3, 40}, l2[] = {127, 5}, l4[] = {33, 1, 70, 9};
        for (ps_dtype dt = PS_DT_F32; dt <= PS_DT_BF16; dt++) { /* the KV cache dtypes */
            test_attention(1, l1, 4, 2, 32, 16, dt);
            test_attention(3, l3, 6, 3, 16, 16, dt);
            test_attention(2, l2, 8, 1, 64, 4, dt);
            test_attention(4, l4, 4, 4, 17, 8, dt); /* MHA, odd head dim: scalar path */
            test_attention(2, l2, 32, 4, 128, 16, dt);
        }
        test_bad_inputs();
        ps_backend_destroy(be);
    }
    return tu_finish("cpu ops");
}
