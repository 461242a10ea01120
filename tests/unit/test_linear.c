/* The fast CPU linear layer (cpu_linear, reached through op_linear) against
 * the naive oracle cpu_linear_ref, for dense F32/F16/BF16 and NF4 weights
 * with and without double quantisation, at odd shapes: T in {1, 3, 6, 17, 64}
 * (T == 1 takes the GEMV, larger T the decoded tiles), K not a multiple of
 * 16, 64 or 512, NF4 blocks spanning rows, an odd element count, and rows
 * long enough for the GEMV's passes over column segments.
 *
 * Besides the numeric parity it checks, bit for bit:
 *  - weight decoding: with x = one-hot rows, y is exactly one weight value,
 *    so y must equal nf4_dequantize / the dense values (GEMV and tile paths);
 *  - batch and thread invariance: every row of a batch equals the same row
 *    computed alone, and a 1-thread backend gives the same bits as 2 threads;
 *  - guard floats after every output buffer stay unchanged, and outputs
 *    start as NaN so an unwritten element fails the comparison. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_backend.h"
#include "math/half.h"
#include "nf4_quant.h"
#include "ops.h"
#include "testutil.h"

/* Tolerance of fast vs oracle, rel L2 over the whole output. The oracle sums
 * in double; the fast path sums float32 products in 16 lanes, reduces them
 * by a tree every 512 columns and adds the chunk sums. Its expected relative
 * error is about 2^-24 * sqrt(K / 16) for random-sign terms (~1e-6 at
 * K = 4160); measured worst over all cases here: see the printout (~2e-7).
 * 1e-5 leaves room for unlucky cancellation without hiding a wrong weight,
 * a missed block or a wrong scale, each of which is >= 1e-3. */
#define LINEAR_TOL 1e-5
#define GUARD 12345.0f

typedef enum { W_F32 = 0, W_F16, W_BF16, W_NF4, W_NF4_DQ, W_KINDS } wkind;
static const char *wkind_name[W_KINDS] = {"f32", "f16", "bf16", "nf4", "nf4+dq"};

static ps_backend *be2, *be1;
static ps_err err;
static double worst_rel;

/* A weight of one kind built from random floats; owns its storage. */
typedef struct {
    ps_weight w;
    void *dense;
    nf4_host q;
} test_weight;

static void test_weight_init(test_weight *tw, wkind kind, int64_t N, int64_t K, uint64_t seed) {
    memset(tw, 0, sizeof *tw);
    float *w = malloc(sizeof(float) * (size_t)(N * K));
    tu_rand_fill(w, N * K, seed);
    /* block magnitudes from 0.25 to 3.25, so that using a wrong block scale
     * (or a wrong DQ table) shows up as a large error, not a 1e-7 one */
    for (int64_t i = 0; i < N * K; i++) w[i] *= 0.25f + (float)((i / 64 * 7 + i / 16384) % 13) / 4;
    if (kind == W_NF4 || kind == W_NF4_DQ) {
        ps_status st = nf4_quantize(w, N, K, kind == W_NF4_DQ, &tw->q, &err);
        TU_CHECK(st == PS_OK, "quantise: %s", err.msg);
        tw->w.kind = PS_WEIGHT_NF4;
        tw->w.nf4 = nf4_host_view(&tw->q);
        free(w);
        return;
    }
    ps_dtype dt = kind == W_F32 ? PS_DT_F32 : kind == W_F16 ? PS_DT_F16 : PS_DT_BF16;
    if (kind != W_F32) {
        uint16_t *h = malloc(sizeof(uint16_t) * (size_t)(N * K));
        for (int64_t i = 0; i < N * K; i++)
            h[i] = kind == W_F16 ? ps_f32_to_f16(w[i]) : ps_f32_to_bf16(w[i]);
        free(w);
        tw->dense = h;
    } else {
        tw->dense = w;
    }
    tw->w.kind = PS_WEIGHT_DENSE;
    tw->w.dense = ps_tensor_2d(dt, N, K, tw->dense, PS_DEV_CPU);
}

static void test_weight_free(test_weight *tw) {
    free(tw->dense);
    nf4_host_free(&tw->q);
}

/* (rows, cols) floats, NaN-filled, with a guard after the end. */
static float *out_buf(int64_t n) {
    float *y = malloc(sizeof(float) * (size_t)(n + 1));
    for (int64_t i = 0; i < n; i++) y[i] = NAN;
    y[n] = GUARD;
    return y;
}

static void run_fast(ps_backend *be, const test_weight *tw, const float *x, float *y, int64_t T) {
    int64_t N = ps_weight_out(&tw->w), K = ps_weight_in(&tw->w);
    ps_tensor tx = ps_tensor_2d(PS_DT_F32, T, K, (void *)x, PS_DEV_CPU);
    ps_tensor ty = ps_tensor_2d(PS_DT_F32, T, N, y, PS_DEV_CPU);
    ps_status st = op_linear(be, &ty, &tx, &tw->w, &err);
    TU_CHECK(st == PS_OK, "op_linear: %s", err.msg);
}

static void check_parity(wkind kind, int64_t T, int64_t N, int64_t K) {
    char what[96];
    snprintf(what, sizeof what, "%s T=%lld (%lld, %lld)", wkind_name[kind], (long long)T,
             (long long)N, (long long)K);
    test_weight tw;
    test_weight_init(&tw, kind, N, K, (uint64_t)(N * 7919 + K));
    float *x = malloc(sizeof(float) * (size_t)(T * K + 1));
    tu_rand_fill(x, T * K, (uint64_t)(T * 31 + K));
    x[T * K] = GUARD;
    float *want = out_buf(T * N), *got = out_buf(T * N), *one = out_buf(T * N);
    float *got1 = out_buf(T * N);

    ps_tensor tx = ps_tensor_2d(PS_DT_F32, T, K, x, PS_DEV_CPU);
    ps_tensor ty = ps_tensor_2d(PS_DT_F32, T, N, want, PS_DEV_CPU);
    TU_CHECK(cpu_linear_ref(be2, &ty, &tx, &tw.w, &err) == PS_OK, "%s: ref: %s", what, err.msg);
    run_fast(be2, &tw, x, got, T);
    tu_cmp c = tu_compare(got, want, T * N);
    if (c.rel_l2 > worst_rel) worst_rel = c.rel_l2;
    TU_CHECK(c.rel_l2 < LINEAR_TOL, "%s: rel_l2 %.3g", what, c.rel_l2);
    if (!(c.rel_l2 < LINEAR_TOL)) tu_print_diff(what, got, want, T * N);

    /* each row alone, and the whole batch on one thread: the same bits */
    for (int64_t t = 0; t < T; t++) run_fast(be2, &tw, x + t * K, one + t * N, 1);
    run_fast(be1, &tw, x, got1, T);
    TU_CHECK(memcmp(one, got, sizeof(float) * (size_t)(T * N)) == 0,
             "%s: rows computed alone differ from the batch", what);
    TU_CHECK(memcmp(got1, got, sizeof(float) * (size_t)(T * N)) == 0,
             "%s: 1 thread differs from 2 threads", what);

    TU_CHECK(want[T * N] == GUARD && got[T * N] == GUARD && one[T * N] == GUARD &&
                 got1[T * N] == GUARD && x[T * K] == GUARD,
             "%s: guard overwritten", what);
    free(x), free(want), free(got), free(one), free(got1);
    test_weight_free(&tw);
}

/* x = one-hot rows e_k: y[k, n] = 0 * ... + 1 * W[n, k] + 0 ... is exactly
 * the decoded weight, through the GEMV (one row at a time) and the tiles. */
static void check_decode_exact(wkind kind, int64_t N, int64_t K) {
    test_weight tw;
    test_weight_init(&tw, kind, N, K, (uint64_t)(N + 3 * K));
    float *wd = malloc(sizeof(float) * (size_t)(N * K));
    if (tw.w.kind == PS_WEIGHT_NF4) nf4_dequantize(&tw.w.nf4, wd);
    else
        for (int64_t i = 0; i < N * K; i++) wd[i] = cpu_load_f(&tw.w.dense, i);
    float *eye = calloc((size_t)(K * K), sizeof(float));
    for (int64_t k = 0; k < K; k++) eye[k * K + k] = 1.0f;
    float *tiles = out_buf(K * N), *gemv = out_buf(K * N);
    run_fast(be2, &tw, eye, tiles, K);
    for (int64_t k = 0; k < K; k++) run_fast(be2, &tw, eye + k * K, gemv + k * N, 1);
    int64_t bad = 0, first = -1;
    for (int64_t k = 0; k < K; k++)
        for (int64_t n = 0; n < N; n++) {
            float w = wd[n * K + k];
            if (tiles[k * N + n] != w || gemv[k * N + n] != w) {
                if (first < 0) first = n * K + k;
                bad++;
            }
        }
    TU_CHECK(bad == 0, "%s (%lld, %lld): %lld decoded weights differ, first W[%lld, %lld]",
             wkind_name[kind], (long long)N, (long long)K, (long long)bad,
             (long long)(first / K), (long long)(first % K));
    TU_CHECK(tiles[K * N] == GUARD && gemv[K * N] == GUARD, "decode: guard overwritten");
    free(wd), free(eye), free(tiles), free(gemv);
    test_weight_free(&tw);
}

/* op_linear_n: three weights of mixed kinds on one x give each weight's
 * op_linear bits; bad calls are refused before anything is written. */
static void check_linear_n(void) {
    const int64_t T = 3, K = 192, N[3] = {5, 64, 17};
    test_weight tw[3];
    test_weight_init(&tw[0], W_NF4_DQ, N[0], K, 71);
    test_weight_init(&tw[1], W_F16, N[1], K, 72);
    test_weight_init(&tw[2], W_NF4, N[2], K, 73);
    float *x = malloc(sizeof(float) * (size_t)(T * K)), *one[3], *all[3];
    tu_rand_fill(x, T * K, 74);
    ps_tensor tx = ps_tensor_2d(PS_DT_F32, T, K, x, PS_DEV_CPU), ty[3];
    ps_tensor *ys[3] = {&ty[0], &ty[1], &ty[2]};
    const ps_weight *ws[3] = {&tw[0].w, &tw[1].w, &tw[2].w};
    for (int i = 0; i < 3; i++) {
        one[i] = out_buf(T * N[i]), all[i] = out_buf(T * N[i]);
        run_fast(be2, &tw[i], x, one[i], T);
        ty[i] = ps_tensor_2d(PS_DT_F32, T, N[i], all[i], PS_DEV_CPU);
    }
    TU_CHECK(op_linear_n(be2, 3, ys, &tx, ws, &err) == PS_OK, "op_linear_n: %s", err.msg);
    for (int i = 0; i < 3; i++) {
        TU_CHECK(memcmp(one[i], all[i], sizeof(float) * (size_t)(T * N[i])) == 0,
                 "op_linear_n weight %d differs from op_linear", i);
        TU_CHECK(all[i][T * N[i]] == GUARD, "op_linear_n weight %d: guard overwritten", i);
        for (int64_t j = 0; j < T * N[i]; j++) all[i][j] = NAN;
    }
    TU_CHECK(op_linear_n(be2, 4, ys, &tx, ws, &err) == PS_EINVAL, "4 weights accepted");
    TU_CHECK(op_linear_n(be2, 0, ys, &tx, ws, &err) == PS_EINVAL, "0 weights accepted");
    ps_tensor *same[2] = {&ty[1], &ty[1]};
    const ps_weight *w11[2] = {ws[1], ws[1]};
    TU_CHECK(op_linear_n(be2, 2, same, &tx, w11, &err) == PS_EINVAL, "one output twice accepted");
    const ps_weight *swapped[3] = {ws[1], ws[0], ws[2]}; /* weight 0's y is too narrow for weight 1 */
    TU_CHECK(op_linear_n(be2, 3, ys, &tx, swapped, &err) == PS_EINVAL, "shape mismatch accepted");
    for (int i = 0; i < 3; i++) {
        TU_CHECK(isnan(all[i][0]), "a refused op_linear_n wrote weight %d's output", i);
        free(one[i]), free(all[i]);
        test_weight_free(&tw[i]);
    }
    free(x);
}

int main(void) {
    /* CPU kernels only (they are called directly with host pointers); the
     * CUDA linear paths have their own test in tests/gpu */
    if (ps_backend_cpu_create(2, &be2, &err) != PS_OK || ps_backend_cpu_create(1, &be1, &err) != PS_OK) {
        fprintf(stderr, "cannot create a 1-thread backend: %s\n", err.msg);
        return 1;
    }
    static const int64_t Ts[] = {1, 3, 6, 17, 64}; /* every edge of 4-row blocks */
    static const int64_t shapes[][2] = {{1, 64},   {3, 128},  {127, 192}, {257, 4160},
                                        {64, 100}, {5, 127},  {3, 4097},  {33, 1088}};
    for (int kind = 0; kind < W_KINDS; kind++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (size_t t = 0; t < sizeof Ts / sizeof Ts[0]; t++)
                check_parity((wkind)kind, Ts[t], shapes[s][0], shapes[s][1]);
    /* long rows: the NF4 GEMV works in passes of 8192 columns, and when 4
     * rows span more DQ blocks than it keeps tables for (~79000 columns) it
     * takes one row at a time */
    static const int64_t long_rows[][2] = {{9, 8256}, {8, 100032}};
    for (int kind = 0; kind < W_KINDS; kind++)
        for (size_t s = 0; s < 2; s++) {
            check_parity((wkind)kind, 1, long_rows[s][0], long_rows[s][1]);
            check_parity((wkind)kind, 3, long_rows[s][0], long_rows[s][1]);
        }
    printf("worst rel_l2 fast vs oracle: %.3g (tolerance %.0e)\n", worst_rel, LINEAR_TOL);

    for (int kind = 0; kind < W_KINDS; kind++) {
        check_decode_exact((wkind)kind, 127, 192);
        check_decode_exact((wkind)kind, 64, 100);
        check_decode_exact((wkind)kind, 5, 127);
        check_decode_exact((wkind)kind, 9, 1088);
    }
    check_linear_n();
    ps_backend_destroy(be1);
    ps_backend_destroy(be2);
    return tu_finish("test_linear");
}
