/* op_lora_bgmv against a double-precision reference written here from the
 * PEFT formula y += scale * B (A x), at odd shapes with mixed ranks, a slot
 * that leaves the projection alone (A == NULL) and tokens without LoRA (-1).
 * Checks: the CPU oracle and the default (SGMV-style) kernel both within
 * fp32 tolerance of the double reference, rows without LoRA bit-identical,
 * guard values after y intact, batch invariance (a token alone gives the
 * bit-identical row), and the op's argument checks. Tokens take their
 * adapters one by one at random (a decode batch) or in runs (prefill
 * chunks). Runs on the backend tu_backend_create gives ($PS_TEST_DEVICE),
 * comparing to host references; on CUDA also both kernel families, BGMV
 * and SGMV, forced in turn: the same bits, and the SGMV path really taken. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_backend.h"
#include "math/half.h"
#include "ops.h"
#include "testutil.h"
#ifdef PS_HAVE_CUDA
#include "cuda/cuda_ext.h"
#endif

/* fp32 sums of up to a few hundred products vs double: a few ulps * sqrt(n).
 * Measured worst: see the printed rel_l2 (about 1e-7 at these shapes). */
#define TOL 2e-6

static ps_backend *be;

typedef struct {
    int r;
    float scale;
    float *A, *B; /* host, values exactly representable in the slot's dtype */
    void *dA, *dB; /* backend copies in the slot's dtype */
} slot_data;

static void *to_dev_bytes(const void *h, size_t n) {
    void *d;
    ps_err err;
    if (ps_buf_alloc(be, n, &d, &err) || ps_buf_upload(be, d, h, n, &err)) {
        fprintf(stderr, "upload: %s\n", err.msg);
        exit(1);
    }
    return d;
}

static void *to_dev(const float *h, int64_t n) { return to_dev_bytes(h, sizeof(float) * (size_t)n); }

/* Rounds x to dt in place and returns a backend copy stored as dt. */
static void *to_dev_as(float *x, int64_t n, ps_dtype dt) {
    if (dt == PS_DT_F32) return to_dev(x, n);
    uint16_t *h = malloc(2 * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        h[i] = dt == PS_DT_F16 ? ps_f32_to_f16(x[i]) : ps_f32_to_bf16(x[i]);
        x[i] = dt == PS_DT_F16 ? ps_f16_to_f32(h[i]) : ps_bf16_to_f32(h[i]);
    }
    void *d = to_dev_bytes(h, 2 * (size_t)n);
    free(h);
    return d;
}

/* n_slots adapters of the given ranks (0: leaves the projection alone) for
 * one (in, out) projection: host values in sd, the op's table in slots. */
static void make_slots(int64_t in, int64_t out, int n_slots, const int *ranks, uint64_t seed, ps_dtype dt,
                       slot_data *sd, ps_lora_slot *slots) {
    for (int s = 0; s < n_slots; s++) {
        sd[s].r = ranks[s];
        sd[s].scale = 0.5f + 0.75f * (float)s;
        if (!ranks[s]) continue; /* this adapter does not adapt the projection */
        sd[s].A = malloc(sizeof(float) * (size_t)(ranks[s] * in));
        sd[s].B = malloc(sizeof(float) * (size_t)(out * ranks[s]));
        tu_rand_fill(sd[s].A, ranks[s] * in, seed + 10 + (uint64_t)s);
        tu_rand_fill(sd[s].B, out * ranks[s], seed + 20 + (uint64_t)s);
        sd[s].dA = to_dev_as(sd[s].A, ranks[s] * in, dt);
        /* the op takes B transposed, (r, out); the reference below reads B (out, r) */
        float *bt = malloc(sizeof(float) * (size_t)(out * ranks[s]));
        for (int64_t o = 0; o < out; o++)
            for (int i = 0; i < ranks[s]; i++) bt[i * out + o] = sd[s].B[o * ranks[s] + i];
        sd[s].dB = to_dev_as(bt, out * ranks[s], dt); /* rounds bt to dt: copy the rounding back */
        for (int64_t o = 0; o < out; o++)
            for (int i = 0; i < ranks[s]; i++) sd[s].B[o * ranks[s] + i] = bt[i * out + o];
        free(bt);
        slots[s] = (ps_lora_slot){sd[s].dA, sd[s].dB, dt, ranks[s], sd[s].scale};
    }
}

static void free_slots(int n_slots, slot_data *sd) {
    for (int s = 0; s < n_slots; s++) {
        free(sd[s].A), free(sd[s].B);
        ps_buf_free(be, sd[s].dA), ps_buf_free(be, sd[s].dB);
    }
}

/* Slots -1 .. n_slots - 1 for T tokens, drawn at random for runs of 1 ..
 * max_run tokens (1: every token its own draw). */
static void draw_slots(int32_t *tok, int64_t T, int n_slots, int max_run, uint64_t seed) {
    uint64_t st = seed * 2654435761u + 7;
    for (int64_t t = 0; t < T;) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        int32_t slot = (int32_t)((st >> 33) % (uint64_t)(n_slots + 1)) - 1;
        int64_t run = 1 + (int64_t)((st >> 13) % (uint64_t)max_run);
        for (int64_t e = t + run; t < e && t < T; t++) tok[t] = slot;
    }
}

#ifdef PS_HAVE_CUDA
/* The op with each CUDA kernel family forced gives the bits of `want` (the
 * automatic choice's result); the SGMV run must have taken that path. */
static void check_cuda_families(const ps_tensor *tx, const ps_lora_batch *lb, const float *y0, const float *want,
                                int64_t T, int64_t out, const char *what) {
    ps_cuda_tuning t0, t;
    ps_cuda_counters c0, c1;
    ps_err err;
    if (ps_cuda_get_tuning(be, &t0, &err) != PS_OK) return; /* not a CUDA backend */
    float *got = malloc(sizeof(float) * (size_t)(T * out));
    for (int path = PS_CUDA_LORA_BGMV; path <= PS_CUDA_LORA_SGMV; path++) {
        t = t0, t.lora_path = path;
        TU_CHECK(ps_cuda_set_tuning(be, &t, &err) == PS_OK, "tuning: %s", err.msg);
        ps_cuda_get_counters(be, &c0, &err);
        void *dy = to_dev(y0, T * out);
        ps_tensor ty = ps_tensor_2d(PS_DT_F32, T, out, dy, be->dev);
        TU_CHECK(op_lora_bgmv(be, &ty, tx, lb, &err) == PS_OK, "lora_bgmv: %s", err.msg);
        ps_cuda_get_counters(be, &c1, &err);
        ps_buf_download(be, got, dy, sizeof(float) * (size_t)(T * out), &err);
        const char *name = path == PS_CUDA_LORA_SGMV ? "sgmv" : "bgmv";
        TU_CHECK((c1.lora_sgmv > c0.lora_sgmv) == (path == PS_CUDA_LORA_SGMV), "%s %s: sgmv launches %lld",
                 what, name, c1.lora_sgmv - c0.lora_sgmv);
        int64_t differ = 0;
        for (int64_t i = 0; i < T * out; i++) differ += memcmp(&got[i], &want[i], sizeof(float)) != 0;
        TU_CHECK(differ == 0, "%s forced %s: %lld of %lld values differ from the automatic path's bits", what, name,
                 (long long)differ, (long long)(T * out));
        ps_buf_free(be, dy);
    }
    TU_CHECK(ps_cuda_set_tuning(be, &t0, &err) == PS_OK, "tuning: %s", err.msg);
    printf("  %-6s T=%-4lld out=%-4lld cuda bgmv and sgmv: the same bits\n", what, (long long)T, (long long)out);
    free(got);
}
#endif

static void run_case(int64_t T, int64_t in, int64_t out, int n_slots, const int *ranks, uint64_t seed, ps_dtype dt,
                     int max_run) {
    slot_data *sd = calloc((size_t)n_slots, sizeof *sd);
    ps_lora_slot *slots = calloc((size_t)n_slots, sizeof *slots);
    make_slots(in, out, n_slots, ranks, seed, dt, sd, slots);
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)T);
    draw_slots(tok, T, n_slots, max_run, seed);
    float *x = malloc(sizeof(float) * (size_t)(T * in)), *y0 = malloc(sizeof(float) * (size_t)(T * out + 4));
    tu_rand_fill(x, T * in, seed + 1);
    tu_rand_fill(y0, T * out, seed + 2); /* y accumulates: start from non-zero values */
    for (int g = 0; g < 4; g++) y0[T * out + g] = 4242.0f;

    /* double reference */
    double *ref = malloc(sizeof(double) * (size_t)(T * out));
    for (int64_t t = 0; t < T; t++) {
        const slot_data *s = tok[t] >= 0 ? &sd[tok[t]] : NULL;
        double v[64];
        for (int i = 0; s && s->r && i < s->r; i++) {
            v[i] = 0;
            for (int64_t k = 0; k < in; k++) v[i] += (double)s->A[i * in + k] * x[t * in + k];
        }
        for (int64_t o = 0; o < out; o++) {
            double d = 0;
            for (int i = 0; s && s->r && i < s->r; i++) d += (double)s->B[o * s->r + i] * v[i];
            ref[t * out + o] = y0[t * out + o] + (s ? s->scale : 0) * d;
        }
    }
    float *want = malloc(sizeof(float) * (size_t)(T * out));
    for (int64_t i = 0; i < T * out; i++) want[i] = (float)ref[i];

    void *dx = to_dev(x, T * in), *dtok = NULL;
    ps_err err;
    ps_buf_alloc(be, sizeof(int32_t) * (size_t)T, &dtok, &err);
    ps_buf_upload(be, dtok, tok, sizeof(int32_t) * (size_t)T, &err);
    ps_lora_batch lb = {n_slots, slots, tok, ps_tensor_1d(PS_DT_I32, T, dtok, be->dev)};
    ps_tensor tx = ps_tensor_2d(PS_DT_F32, T, in, dx, be->dev);

    float *got = malloc(sizeof(float) * (size_t)(T * out + 4));
    for (int variant = 0; variant < 2; variant++) {
        if (variant == 1 && be->dev != PS_DEV_CPU) break; /* the oracle is host code */
        void *dy = to_dev(y0, T * out + 4);
        ps_tensor ty = ps_tensor_2d(PS_DT_F32, T, out, dy, be->dev);
        ps_status s = variant ? cpu_lora_bgmv_ref(be, &ty, &tx, &lb, &err) : op_lora_bgmv(be, &ty, &tx, &lb, &err);
        TU_CHECK(s == PS_OK, "lora_bgmv: %s", err.msg);
        ps_buf_download(be, got, dy, sizeof(float) * (size_t)(T * out + 4), &err);
        const char *what = variant ? "oracle" : "op";
        tu_cmp c = tu_compare(got, want, T * out);
        TU_CHECK(c.rel_l2 < TOL, "%s T=%lld in=%lld out=%lld: rel_l2 %.3g", what, (long long)T, (long long)in,
                 (long long)out, c.rel_l2);
        if (c.rel_l2 >= TOL) tu_print_diff(what, got, want, T * out);
        for (int g = 0; g < 4; g++) TU_CHECK(got[T * out + g] == 4242.0f, "%s: guard %d overwritten", what, g);
        int untouched = 0, expect_untouched = 0;
        for (int64_t t = 0; t < T; t++)
            if (tok[t] < 0 || !sd[tok[t]].r) {
                expect_untouched++;
                untouched += !memcmp(got + t * out, y0 + t * out, sizeof(float) * (size_t)out);
            }
        TU_CHECK(untouched == expect_untouched, "%s: %d of %d no-LoRA rows changed", what,
                 expect_untouched - untouched, expect_untouched);
        printf("  %-6s %-4s T=%-3lld in=%-4lld out=%-4lld slots=%d runs<=%d rel_l2 %.2e max_abs %.2e\n", what,
               ps_dtype_name(dt), (long long)T, (long long)in, (long long)out, n_slots, max_run, c.rel_l2, c.max_abs);
#ifdef PS_HAVE_CUDA
        if (be->dev == PS_DEV_CUDA) check_cuda_families(&tx, &lb, y0, got, T, out, what);
#endif
        /* batch invariance: each adapted token alone reproduces its row bit for bit */
        for (int64_t t = 0; variant == 0 && t < T; t += 1 + T / 5) {
            void *dy1 = to_dev(y0 + t * out, out);
            ps_tensor y1 = ps_tensor_2d(PS_DT_F32, 1, out, dy1, be->dev);
            ps_tensor x1 = ps_tensor_rows(&tx, t, 1);
            ps_lora_batch one = {n_slots, slots, tok + t, ps_tensor_1d(PS_DT_I32, 1, (int32_t *)dtok + t, be->dev)};
            float *row = malloc(sizeof(float) * (size_t)out);
            op_lora_bgmv(be, &y1, &x1, &one, &err);
            ps_buf_download(be, row, dy1, sizeof(float) * (size_t)out, &err);
            TU_CHECK(!memcmp(row, got + t * out, sizeof(float) * (size_t)out), "token %lld alone differs from its batch row",
                     (long long)t);
            free(row);
            ps_buf_free(be, dy1);
        }
        ps_buf_free(be, dy);
    }
    free_slots(n_slots, sd);
    ps_buf_free(be, dx), ps_buf_free(be, dtok);
    free(sd), free(slots), free(tok), free(x), free(y0), free(ref), free(want), free(got);
}

static void test_checks(void) {
    float x[6] = {1, 2, 3, 4, 5, 6}, y[4] = {0}, A[3] = {1, 1, 1}, B[2] = {1, 1}; /* B: (r=1, out=2) */
    if (be->dev != PS_DEV_CPU) return; /* host pointers below */
    ps_lora_slot sl = {A, B, PS_DT_F32, 1, 1.0f};
    int32_t tok[2] = {0, 1};
    ps_lora_batch lb = {1, &sl, tok, {0}};
    ps_tensor tx = ps_tensor_2d(PS_DT_F32, 2, 3, x, PS_DEV_CPU), ty = ps_tensor_2d(PS_DT_F32, 2, 2, y, PS_DEV_CPU);
    ps_err err = {0};
    ps_status s = op_lora_bgmv(be, &ty, &tx, &lb, &err);
    TU_CHECK(s == PS_EINVAL && strstr(err.msg, "token 1 has slot 1"), "slot range: %s", err.msg);
    tok[1] = -2;
    s = op_lora_bgmv(be, &ty, &tx, &lb, &err);
    TU_CHECK(s == PS_EINVAL && strstr(err.msg, "slot -2"), "slot -2: %s", err.msg);
    tok[1] = -1;
    sl.r = PS_LORA_MAX_RANK + 1;
    s = op_lora_bgmv(be, &ty, &tx, &lb, &err);
    TU_CHECK(s == PS_EINVAL && strstr(err.msg, "rank"), "rank: %s", err.msg);
    sl.r = 1;
    ps_tensor y3 = ps_tensor_2d(PS_DT_F32, 1, 2, y, PS_DEV_CPU);
    s = op_lora_bgmv(be, &y3, &tx, &lb, &err);
    TU_CHECK(s == PS_EINVAL && strstr(err.msg, "rows"), "rows: %s", err.msg);
    s = op_lora_bgmv(be, &ty, &tx, &lb, &err);
    TU_CHECK(s == PS_OK && y[0] == 6.0f && y[1] == 6.0f && y[2] == 0 && y[3] == 0, "tiny case: %g %g %g %g", y[0], y[1],
             y[2], y[3]);
}

/* op_lora_bgmv_n: q/k/v-like projections of one x (outputs of different
 * widths, each with its own slot table: other ranks, adapters that leave
 * one projection alone) give each y the bits of its own op_lora_bgmv call
 * (on CUDA also with each kernel family forced); and it refuses two
 * projections into one y. */
static void run_n_case(int64_t T, int64_t in, int n_slots, uint64_t seed, ps_dtype dt, int max_run) {
    enum { N = 3 };
    static const int64_t outs[N] = {65, 17, 300};
    static const int ranks[N][5] = {{4, 0, 16, 1, 8}, {2, 3, 0, 16, 5}, {0, 0, 0, 0, 0}};
    slot_data sd[N][5];
    ps_lora_slot slots[N][5];
    memset(sd, 0, sizeof sd), memset(slots, 0, sizeof slots);
    for (int i = 0; i < N; i++) make_slots(in, outs[i], n_slots, ranks[i], seed + 100 * (uint64_t)i, dt, sd[i], slots[i]);
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)T);
    draw_slots(tok, T, n_slots, max_run, seed);
    float *x = malloc(sizeof(float) * (size_t)(T * in));
    tu_rand_fill(x, T * in, seed + 1);
    ps_err err;
    void *dx = to_dev(x, T * in), *dtok = to_dev_bytes(tok, sizeof(int32_t) * (size_t)T);
    ps_tensor tx = ps_tensor_2d(PS_DT_F32, T, in, dx, be->dev);
    ps_lora_batch lb[N];
    const ps_lora_batch *lbs[N];
    ps_tensor y1[N], y2[N], *ys[N];
    float *y0[N];
    void *d1[N], *d2[N];
    for (int i = 0; i < N; i++) {
        lb[i] = (ps_lora_batch){n_slots, slots[i], tok, ps_tensor_1d(PS_DT_I32, T, dtok, be->dev)}, lbs[i] = &lb[i];
        y0[i] = malloc(sizeof(float) * (size_t)(T * outs[i] + 4));
        tu_rand_fill(y0[i], T * outs[i] + 4, seed + 50 + (uint64_t)i);
        d1[i] = to_dev(y0[i], T * outs[i] + 4), d2[i] = to_dev(y0[i], T * outs[i] + 4);
        y1[i] = ps_tensor_2d(PS_DT_F32, T, outs[i], d1[i], be->dev);
        y2[i] = ps_tensor_2d(PS_DT_F32, T, outs[i], d2[i], be->dev), ys[i] = &y2[i];
        TU_CHECK(op_lora_bgmv(be, &y1[i], &tx, &lb[i], &err) == PS_OK, "lora_bgmv: %s", err.msg);
    }
    static const char *pass_name[] = {"", " (cuda bgmv)", " (cuda sgmv)"};
    int passes = 1;
#ifdef PS_HAVE_CUDA
    ps_cuda_tuning t0, t;
    if (be->dev == PS_DEV_CUDA && ps_cuda_get_tuning(be, &t0, &err) == PS_OK) passes = 3;
#endif
    for (int pass = 0; pass < passes; pass++) {
#ifdef PS_HAVE_CUDA
        if (pass > 0) {
            t = t0, t.lora_path = pass == 1 ? PS_CUDA_LORA_BGMV : PS_CUDA_LORA_SGMV;
            TU_CHECK(ps_cuda_set_tuning(be, &t, &err) == PS_OK, "tuning: %s", err.msg);
        }
#endif
        for (int i = 0; i < N; i++)
            ps_buf_upload(be, d2[i], y0[i], sizeof(float) * (size_t)(T * outs[i] + 4), &err);
        TU_CHECK(op_lora_bgmv_n(be, N, ys, &tx, lbs, &err) == PS_OK, "lora_bgmv_n: %s", err.msg);
        for (int i = 0; i < N; i++) {
            size_t bytes = sizeof(float) * (size_t)(T * outs[i] + 4);
            float *a = malloc(bytes), *b = malloc(bytes);
            ps_buf_download(be, a, d1[i], bytes, &err), ps_buf_download(be, b, d2[i], bytes, &err);
            TU_CHECK(!memcmp(a, b, bytes), "lora_bgmv_n%s %s T=%lld projection %d differs from its lora_bgmv",
                     pass_name[pass], ps_dtype_name(dt), (long long)T, i);
            free(a), free(b);
        }
        printf("  lora_bgmv_n%s %-4s T=%-3lld in=%-4lld runs<=%d 3 projections: each = its lora_bgmv\n",
               pass_name[pass], ps_dtype_name(dt), (long long)T, (long long)in, max_run);
    }
#ifdef PS_HAVE_CUDA
    if (passes > 1) TU_CHECK(ps_cuda_set_tuning(be, &t0, &err) == PS_OK, "tuning: %s", err.msg);
#endif
    ps_tensor *twice[N] = {ys[0], ys[0], ys[2]};
    TU_CHECK(op_lora_bgmv_n(be, N, twice, &tx, lbs, &err) == PS_EINVAL, "lora_bgmv_n: one y twice accepted");
    TU_CHECK(op_lora_bgmv_n(be, 0, ys, &tx, lbs, &err) == PS_EINVAL, "lora_bgmv_n: 0 projections accepted");
    for (int i = 0; i < N; i++) {
        free_slots(n_slots, sd[i]);
        ps_buf_free(be, d1[i]), ps_buf_free(be, d2[i]);
        free(y0[i]);
    }
    ps_buf_free(be, dx), ps_buf_free(be, dtok);
    free(tok), free(x);
}

int main(void) {
    be = tu_backend_create();
    static const int r1[] = {1, 3, 0, 8};
    static const int r2[] = {16, 4, 7, 16, 1, 0, 2, 5, 12, 9, 3, 16, 8, 6, 11, 13, 15};
    run_case(1, 17, 3, 4, r1, 1, PS_DT_F32, 1);
    run_case(5, 128, 64, 4, r1, 2, PS_DT_F32, 1);
    run_case(37, 127, 352, 4, r1, 3, PS_DT_F32, 1);
    run_case(64, 300, 129, 17, r2, 4, PS_DT_F32, 1);   /* 16 distinct adapters + a non-adapting one */
    run_case(300, 64, 4097, 2, r2, 5, PS_DT_F32, 1);   /* many tokens: chunking, several output blocks */
    run_case(3000, 33, 17, 3, r2 + 1, 6, PS_DT_F32, 1); /* beyond the stack scratch */
    run_case(37, 1100, 352, 4, r1, 7, PS_DT_F32, 1);   /* in > the 512-column widening chunk */
    /* runs of one adapter, as prefill chunks give: tiles of one slot, tiles
     * across a boundary, ranks beyond one rank tile, odd shapes */
    run_case(203, 300, 129, 17, r2, 13, PS_DT_F32, 40);
    run_case(517, 1100, 353, 4, r1, 14, PS_DT_F32, 90);
    run_case(97, 33, 4097, 3, r2 + 8, 15, PS_DT_F32, 300); /* r = 9, 3, 16: rank tiles of 4 and a part */
    /* 16-bit A/B: the reference uses the same rounded values, so the fp32 tolerance holds */
    run_case(37, 1100, 353, 4, r1, 8, PS_DT_F16, 1);
    run_case(64, 300, 129, 17, r2, 9, PS_DT_BF16, 1);
    run_case(1, 17, 3, 4, r1, 10, PS_DT_BF16, 1);
    run_case(131, 127, 65, 4, r1, 16, PS_DT_F16, 24);
    run_case(77, 300, 129, 17, r2, 17, PS_DT_BF16, 24);
    run_n_case(1, 64, 5, 11, PS_DT_F32, 1);
    run_n_case(37, 300, 5, 12, PS_DT_BF16, 1);
    run_n_case(150, 300, 5, 18, PS_DT_F32, 50); /* the automatic choice takes SGMV from 64 tokens */
    test_checks();
    ps_backend_destroy(be);
    return tu_finish("lora bgmv");
}
