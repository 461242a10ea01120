/* CUDA backend vs the CPU oracle, element-wise and row ops: embed,
 * gather_rows, kv_store and rope_store (F32, F16 and BF16 caches), add,
 * add_bias, silu_mul, activate, rmsnorm, layernorm, rope, plus buffers
 * (odd-sized round trips) and the error paths (bad indices found on the
 * device, out of memory, bad tuning). Random inputs
 * (never zeros) at odd shapes; every output is poisoned with NaN first and
 * followed by guard bytes. Shapes reach both the vector (16-byte, register)
 * paths and their scalar fallbacks: C divisible by 4 or not, C above the
 * rmsnorm register limit (8192), T = 1 and T > 1, and buffers placed one float
 * off 16-byte alignment; the two paths must agree bit for bit where the
 * arithmetic is the same (silu_mul, add). Linear and attention: test_cuda_linear.c and
 * test_cuda_attention.c.
 *
 * Tolerances (rel L2 against the CPU op; every case prints its measured error):
 *  - embed, gather_rows, kv_store, add, add_bias, relu: 0 = bit-identical
 *    (copies, exact conversions and one IEEE add per element, same order).
 *  - kv_store and rope_store into F16 / BF16 caches: the cache bytes equal
 *    the host's rounding (half.h ps_f32_to_f16 / _bf16) of the f32 values,
 *    bit for bit, corners included (overflow, ties, subnormals, inf, NaN),
 *    and kv_store's equal the CPU op's. rope_store's k cache vs the CPU's
 *    (ADJ_ROPE16): the roped k differs by a few f32 ulps (TOL_ROPE), so an
 *    element may round to the neighbouring 16-bit code; each must be equal
 *    or one code apart, at most 1% of them apart (emulator: 0 apart; on the
 *    device about 1 f32 ulp per differing element, so roughly 2^-13 of the
 *    elements straddle an F16 boundary and 2^-16 a BF16 one).
 *  - silu_mul, silu/gelu/quick_gelu: 2e-6. The device builds with fast math:
 *    expf is __expf (2 ulp + ~2^-21 relative); erff is the accurate one.
 *  - rmsnorm 2e-6: the sum of squares is a tree instead of a sequential loop,
 *    and fast math makes sqrtf/division approximate (~2 ulp).
 *  - layernorm 1e-6: statistics in double on both sides.
 *  - rope 2e-6: identical inverse frequencies (computed on the host with the
 *    shared formula), cos/sin in double and rounded (glibc cosf/sinf are
 *    correctly rounded nearly always), then a possibly fused multiply-add. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_util.h"

#define TOL_EXACT 0.0
#define TOL_ACT 2e-6
#define TOL_RMS 2e-6
#define TOL_LN 1e-6
#define TOL_ROPE 2e-6
#define ADJ_ROPE16 0.01 /* rope_store's 16-bit k cache vs the CPU's: share of elements one code apart */

static const int64_t SIZES[] = {1, 3, 17, 127, 4097, 1 << 20};
#define N_SIZES (int)(sizeof SIZES / sizeof SIZES[0])

static void test_buffers(void) {
    const size_t ns[] = {1, 3, 17, 4097};
    for (int i = 0; i < 4; i++) {
        size_t n = ns[i];
        unsigned char *h = malloc(n), *back = malloc(n);
        for (size_t j = 0; j < n; j++) h[j] = (unsigned char)(j * 7 + 1);
        gu_buf b = gu_upload(h, n);
        gu_download(&b, back);
        TU_CHECK(memcmp(h, back, n) == 0, "buffer round trip of %zu bytes differs", n);
        gu_guard_check(&b, "buffer");
        gu_free(&b);
        free(h), free(back);
    }
}

/* ---- binary element-wise ops on (R, C) ---- */

static void test_elementwise(int64_t n, uint64_t seed, bool extreme) {
    char what[96];
    int64_t C = n >= 17 ? 17 : n, R = n / C; /* add_bias needs a row width */
    n = R * C;
    float *x = gu_rand(n, seed, 3.0f), *y = gu_rand(n, seed + 1, 3.0f), *b = gu_rand(C, seed + 2, 1.0f);
    if (extreme) { /* expf overflows to inf inside silu(-x): the fast-math division must give -0, not NaN */
        static const float big[] = {-100.0f, 100.0f, -1e4f, 1e4f, -88.5f, 30.0f, -1e30f, 1e30f};
        for (int64_t i = 0; i < n && i < 8; i++) x[i] = big[i];
    }
    float *want = malloc(sizeof(float) * (size_t)n), *got = malloc(sizeof(float) * (size_t)n);

    /* add: x += y */
    memcpy(want, x, sizeof(float) * (size_t)n);
    ps_tensor cw = ps_tensor_2d(PS_DT_F32, R, C, want, PS_DEV_CPU), cy = ps_tensor_2d(PS_DT_F32, R, C, y, PS_DEV_CPU);
    GU_OK(op_add(gu_cpu, &cw, &cy, &gu_err), "cpu add");
    gu_buf dx = gu_upload(x, sizeof(float) * n), dy = gu_upload(y, sizeof(float) * n);
    ps_tensor gx = ps_tensor_2d(PS_DT_F32, R, C, dx.d, PS_DEV_CUDA), gy = ps_tensor_2d(PS_DT_F32, R, C, dy.d, PS_DEV_CUDA);
    GU_OK(op_add(gu_gpu, &gx, &gy, &gu_err), "cuda add");
    gu_download(&dx, got);
    gu_guard_check(&dx, "add");
    snprintf(what, sizeof what, "add n=%lld%s", (long long)n, extreme ? " extreme" : "");
    gu_check(what, got, want, n, TOL_EXACT);
    gu_free(&dx);

    /* add_bias in each bias dtype */
    for (int dt = PS_DT_F32; dt <= PS_DT_BF16; dt++) {
        void *bh = gu_to_dtype(b, C, (ps_dtype)dt);
        memcpy(want, x, sizeof(float) * (size_t)n);
        ps_tensor cb = ps_tensor_1d((ps_dtype)dt, C, bh, PS_DEV_CPU);
        GU_OK(op_add_bias(gu_cpu, &cw, &cb, &gu_err), "cpu add_bias");
        dx = gu_upload(x, sizeof(float) * n);
        gu_buf db = gu_upload(bh, ps_dtype_size((ps_dtype)dt) * C);
        gx.data = dx.d;
        ps_tensor gb = ps_tensor_1d((ps_dtype)dt, C, db.d, PS_DEV_CUDA);
        GU_OK(op_add_bias(gu_gpu, &gx, &gb, &gu_err), "cuda add_bias");
        gu_download(&dx, got);
        gu_guard_check(&dx, "add_bias");
        snprintf(what, sizeof what, "add_bias n=%lld bias=%s", (long long)n, ps_dtype_name((ps_dtype)dt));
        gu_check(what, got, want, n, TOL_EXACT);
        gu_free(&dx), gu_free(&db), free(bh);
    }

    /* silu_mul: out = silu(x) * y */
    ps_tensor cx = ps_tensor_2d(PS_DT_F32, R, C, x, PS_DEV_CPU);
    GU_OK(op_silu_mul(gu_cpu, &cw, &cx, &cy, &gu_err), "cpu silu_mul");
    dx = gu_upload(x, sizeof(float) * n);
    gu_buf dout = gu_poisoned(sizeof(float) * n);
    gx.data = dx.d;
    ps_tensor go = ps_tensor_2d(PS_DT_F32, R, C, dout.d, PS_DEV_CUDA);
    GU_OK(op_silu_mul(gu_gpu, &go, &gx, &gy, &gu_err), "cuda silu_mul");
    gu_download(&dout, got);
    gu_guard_check(&dout, "silu_mul");
    snprintf(what, sizeof what, "silu_mul n=%lld%s", (long long)n, extreme ? " extreme" : "");
    gu_check(what, got, want, n, TOL_ACT);
    gu_free(&dout), gu_free(&dx);

    /* activate in place, every activation */
    static const char *names[] = {"silu", "gelu", "quick_gelu", "relu"};
    for (int act = PS_ACT_SILU; act <= PS_ACT_RELU; act++) {
        memcpy(want, x, sizeof(float) * (size_t)n);
        GU_OK(op_activate(gu_cpu, &cw, act, &gu_err), "cpu activate");
        dx = gu_upload(x, sizeof(float) * n);
        gx.data = dx.d;
        GU_OK(op_activate(gu_gpu, &gx, act, &gu_err), "cuda activate");
        gu_download(&dx, got);
        gu_guard_check(&dx, "activate");
        snprintf(what, sizeof what, "activate %s n=%lld%s", names[act], (long long)n, extreme ? " extreme" : "");
        gu_check(what, got, want, n, act == PS_ACT_RELU ? TOL_EXACT : TOL_ACT);
        gu_free(&dx);
    }
    gu_free(&dy);
    free(x), free(y), free(b), free(want), free(got);
}

/* Device copy of h (n floats) placed `off` floats into its buffer (off = 1:
 * not 16-byte aligned, so the vector paths must step aside); AT() is the
 * tensor pointer, down_at the matching download. */
static gu_buf up_at(const float *h, int64_t n, int off) {
    float *p = calloc((size_t)(n + off), sizeof(float));
    memcpy(p + off, h, sizeof(float) * (size_t)n);
    gu_buf b = gu_upload(p, sizeof(float) * (size_t)(n + off));
    free(p);
    return b;
}
static void down_at(const gu_buf *b, float *h, int64_t n, int off) {
    float *p = malloc(sizeof(float) * (size_t)(n + off));
    gu_download(b, p);
    memcpy(h, p + off, sizeof(float) * (size_t)n);
    free(p);
}
#define AT(b, off) ((float *)(b).d + (off))

/* silu_mul and add at decode-like lengths, aligned (vector path when n % 4 ==
 * 0) and one float off (scalar path): each vs the CPU, and the two paths vs
 * each other bit for bit. */
static void test_silu_add_paths(int64_t R, int64_t C) {
    int64_t n = R * C;
    float *g = gu_rand(n, 300 + n, 4.0f), *u = gu_rand(n, 301, 2.0f);
    float *want_s = malloc(sizeof(float) * (size_t)n), *want_a = malloc(sizeof(float) * (size_t)n);
    float *got[2][2];
    ps_tensor cg = ps_tensor_2d(PS_DT_F32, R, C, g, PS_DEV_CPU), cu = ps_tensor_2d(PS_DT_F32, R, C, u, PS_DEV_CPU);
    ps_tensor cs = ps_tensor_2d(PS_DT_F32, R, C, want_s, PS_DEV_CPU), ca = ps_tensor_2d(PS_DT_F32, R, C, want_a, PS_DEV_CPU);
    GU_OK(op_silu_mul(gu_cpu, &cs, &cg, &cu, &gu_err), "cpu silu_mul");
    memcpy(want_a, g, sizeof(float) * (size_t)n);
    GU_OK(op_add(gu_cpu, &ca, &cu, &gu_err), "cpu add");
    char what[112];
    for (int off = 0; off < 2; off++) {
        gu_buf dg = up_at(g, n, off), du = up_at(u, n, off), dout = gu_poisoned(sizeof(float) * (size_t)(n + off));
        ps_tensor gg = ps_tensor_2d(PS_DT_F32, R, C, AT(dg, off), PS_DEV_CUDA);
        ps_tensor gu_ = ps_tensor_2d(PS_DT_F32, R, C, AT(du, off), PS_DEV_CUDA);
        ps_tensor go = ps_tensor_2d(PS_DT_F32, R, C, AT(dout, off), PS_DEV_CUDA);
        GU_OK(op_silu_mul(gu_gpu, &go, &gg, &gu_, &gu_err), "cuda silu_mul");
        GU_OK(op_add(gu_gpu, &gg, &gu_, &gu_err), "cuda add");
        got[off][0] = malloc(sizeof(float) * (size_t)n), got[off][1] = malloc(sizeof(float) * (size_t)n);
        down_at(&dout, got[off][0], n, off);
        down_at(&dg, got[off][1], n, off);
        gu_guard_check(&dout, "silu_mul out");
        gu_guard_check(&dg, "add x");
        snprintf(what, sizeof what, "silu_mul R=%lld C=%lld offset %d", (long long)R, (long long)C, off);
        gu_check(what, got[off][0], want_s, n, TOL_ACT);
        snprintf(what, sizeof what, "add R=%lld C=%lld offset %d", (long long)R, (long long)C, off);
        gu_check(what, got[off][1], want_a, n, TOL_EXACT);
        gu_free(&dg), gu_free(&du), gu_free(&dout);
    }
    snprintf(what, sizeof what, "silu_mul R=%lld C=%lld (aligned vs offset)", (long long)R, (long long)C);
    gu_check(what, got[0][0], got[1][0], n, TOL_EXACT);
    for (int off = 0; off < 2; off++) free(got[off][0]), free(got[off][1]);
    free(g), free(u), free(want_s), free(want_a);
}

/* ---- rows: embed, gather_rows ---- */

static void test_embed(int64_t V, int64_t C, int64_t T, ps_dtype dt) {
    float *tab = gu_rand(V * C, 11 + C, 2.0f);
    void *th = gu_to_dtype(tab, V * C, dt);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)T);
    for (int64_t t = 0; t < T; t++) ids[t] = (int32_t)((t * 7919 + 13) % V);
    ids[0] = (int32_t)(V - 1); /* both ends of the table */
    if (T > 1) ids[T - 1] = 0;
    float *want = malloc(sizeof(float) * (size_t)(T * C)), *got = malloc(sizeof(float) * (size_t)(T * C));
    ps_tensor ct = ps_tensor_2d(dt, V, C, th, PS_DEV_CPU), ci = ps_tensor_1d(PS_DT_I32, T, ids, PS_DEV_CPU);
    ps_tensor co = ps_tensor_2d(PS_DT_F32, T, C, want, PS_DEV_CPU);
    GU_OK(op_embed(gu_cpu, &co, &ct, &ci, &gu_err), "cpu embed");
    gu_buf dt_ = gu_upload(th, ps_dtype_size(dt) * V * C), di = gu_upload(ids, sizeof(int32_t) * T);
    gu_buf dout = gu_poisoned(sizeof(float) * T * C);
    ps_tensor gt = ps_tensor_2d(dt, V, C, dt_.d, PS_DEV_CUDA), gi = ps_tensor_1d(PS_DT_I32, T, di.d, PS_DEV_CUDA);
    ps_tensor go = ps_tensor_2d(PS_DT_F32, T, C, dout.d, PS_DEV_CUDA);
    GU_OK(op_embed(gu_gpu, &go, &gt, &gi, &gu_err), "cuda embed");
    gu_download(&dout, got);
    gu_guard_check(&dout, "embed");
    char what[96];
    snprintf(what, sizeof what, "embed V=%lld C=%lld T=%lld %s", (long long)V, (long long)C,
             (long long)T, ps_dtype_name(dt));
    gu_check(what, got, want, T * C, TOL_EXACT);
    gu_free(&dt_), gu_free(&di), gu_free(&dout);
    free(tab), free(th), free(ids), free(want), free(got);
}

static void test_gather_rows(int64_t T, int64_t C, int64_t R) {
    float *x = gu_rand(T * C, 21 + T, 1.0f);
    int32_t *rows = malloc(sizeof(int32_t) * (size_t)R);
    for (int64_t r = 0; r < R; r++) rows[r] = (int32_t)((r * 5 + 3) % T); /* repeats, any order */
    float *want = malloc(sizeof(float) * (size_t)(R * C)), *got = malloc(sizeof(float) * (size_t)(R * C));
    ps_tensor cx = ps_tensor_2d(PS_DT_F32, T, C, x, PS_DEV_CPU), cr = ps_tensor_1d(PS_DT_I32, R, rows, PS_DEV_CPU);
    ps_tensor co = ps_tensor_2d(PS_DT_F32, R, C, want, PS_DEV_CPU);
    GU_OK(op_gather_rows(gu_cpu, &co, &cx, &cr, &gu_err), "cpu gather_rows");
    gu_buf dx = gu_upload(x, sizeof(float) * T * C), dr = gu_upload(rows, sizeof(int32_t) * R);
    gu_buf dout = gu_poisoned(sizeof(float) * R * C);
    ps_tensor gx = ps_tensor_2d(PS_DT_F32, T, C, dx.d, PS_DEV_CUDA), gr = ps_tensor_1d(PS_DT_I32, R, dr.d, PS_DEV_CUDA);
    ps_tensor go = ps_tensor_2d(PS_DT_F32, R, C, dout.d, PS_DEV_CUDA);
    GU_OK(op_gather_rows(gu_gpu, &go, &gx, &gr, &gu_err), "cuda gather_rows");
    gu_download(&dout, got);
    gu_guard_check(&dout, "gather_rows");
    char what[96];
    snprintf(what, sizeof what, "gather_rows T=%lld C=%lld R=%lld", (long long)T, (long long)C, (long long)R);
    gu_check(what, got, want, R * C, TOL_EXACT);
    gu_free(&dx), gu_free(&dr), gu_free(&dout);
    free(x), free(rows), free(want), free(got);
}

/* ---- kv_store into a cache with random prior content ---- */

/* Bytes of n elements of es bytes each, got vs want: identical, else the
 * first differing element (hex) is named. */
static void check_bytes(const char *what, const void *got, const void *want, int64_t n, size_t es) {
    const unsigned char *g = got, *w = want;
    int64_t bad = -1;
    for (int64_t i = 0; i < n && bad < 0; i++)
        if (memcmp(g + i * es, w + i * es, es)) bad = i;
    printf("  %-58s %s\n", what, bad < 0 ? "bit-identical ok" : "FAIL");
    if (bad < 0) return;
    uint32_t gv = 0, wv = 0;
    memcpy(&gv, g + bad * es, es), memcpy(&wv, w + bad * es, es);
    TU_CHECK(0, "%s: element %lld is 0x%x, want 0x%x", what, (long long)bad, gv, wv);
}

/* Values whose rounding to F16 / BF16 is a corner: overflow to inf, largest
 * finite, ties to even, subnormals, zeros of both signs, inf, NaN. */
static void plant_corners(float *x, int64_t n) {
    static const float corner[] = {65504.0f, 65519.996f, 65520.0f, -65536.0f, 3.0e38f, 3.3961776e38f,
                                   1.0f + 0x1p-11f, 1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-11f,
                                   1.0f + 3 * 0x1p-8f, 0x1p-24f, 0x1p-25f, 0x1.8p-25f, -0x1p-20f,
                                   6.0e-5f, 1e-39f, 0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN};
    for (int64_t i = 0; i < n && i < (int64_t)(sizeof corner / sizeof corner[0]); i++) x[i] = corner[i];
}

/* kv_store into a cache of dtype dt placed `off` elements into its buffer
 * (off = 1: off the vector path's alignment). The expected cache is built
 * on the host: the old content with each token's rows replaced by k and v
 * rounded with half.h (gu_to_dtype); the device bytes must equal it and
 * the CPU op's cache of the same dtype. 16-bit runs put rounding corners in
 * k and v. */
static void test_kv_store(int n_pages, int page_size, int n_kv, int D, int T, ps_dtype dt, int off) {
    int64_t slots_all = (int64_t)n_pages * page_size, row = (int64_t)n_kv * D, nc = slots_all * row;
    size_t es = ps_dtype_size(dt), cb = es * (size_t)(nc + off);
    float *kc = gu_rand(nc + off, 31, 1.0f), *vc = gu_rand(nc + off, 32, 1.0f);
    float *k = gu_rand(T * row, 33, 1.0f), *v = gu_rand(T * row, 34, 1.0f);
    if (dt != PS_DT_F32) plant_corners(k, T * row), plant_corners(v + T * row / 2, T * row - T * row / 2);
    int32_t *slots = malloc(sizeof(int32_t) * (size_t)T);
    /* distinct slots (a repeated one would make the result depend on write order): 11 is
     * coprime with every slot count used here (112, 15, 1024) */
    for (int t = 0; t < T; t++) slots[t] = (int32_t)(((int64_t)t * 11 + 5) % slots_all);
    unsigned char *hkc = gu_to_dtype(kc, nc + off, dt), *hvc = gu_to_dtype(vc, nc + off, dt);
    unsigned char *kw = malloc(cb), *vw = malloc(cb), *kg = malloc(cb), *vg = malloc(cb);
    unsigned char *rk = gu_to_dtype(k, T * row, dt), *rv = gu_to_dtype(v, T * row, dt);
    memcpy(kw, hkc, cb), memcpy(vw, hvc, cb);
    for (int t = 0; t < T; t++) {
        memcpy(kw + es * (off + slots[t] * row), rk + es * t * row, es * row);
        memcpy(vw + es * (off + slots[t] * row), rv + es * t * row, es * row);
    }
    gu_buf dkc = gu_upload(hkc, cb), dvc = gu_upload(hvc, cb);
    gu_buf dk = gu_upload(k, sizeof(float) * T * row), dv = gu_upload(v, sizeof(float) * T * row);
    gu_buf ds = gu_upload(slots, sizeof(int32_t) * T);
    ps_kv_layer gkv = {page_size, {dt, 4, {n_pages, page_size, n_kv, D}, (char *)dkc.d + es * off, PS_DEV_CUDA},
                       {dt, 4, {n_pages, page_size, n_kv, D}, (char *)dvc.d + es * off, PS_DEV_CUDA}};
    ps_tensor gk = ps_tensor_3d(PS_DT_F32, T, n_kv, D, dk.d, PS_DEV_CUDA), gv = ps_tensor_3d(PS_DT_F32, T, n_kv, D, dv.d, PS_DEV_CUDA);
    ps_tensor gs = ps_tensor_1d(PS_DT_I32, T, ds.d, PS_DEV_CUDA);
    GU_OK(op_kv_store(gu_gpu, &gkv, &gk, &gv, &gs, &gu_err), "cuda kv_store");
    gu_download(&dkc, kg);
    gu_download(&dvc, vg);
    gu_guard_check(&dkc, "k cache");
    gu_guard_check(&dvc, "v cache");
    char what[112];
    snprintf(what, sizeof what, "kv_store %s off=%d pages=%d ps=%d n_kv=%d D=%d T=%d (k)", ps_dtype_name(dt),
             off, n_pages, page_size, n_kv, D, T);
    check_bytes(what, kg, kw, nc + off, es);
    snprintf(what, sizeof what, "kv_store %s off=%d pages=%d ps=%d n_kv=%d D=%d T=%d (v)", ps_dtype_name(dt),
             off, n_pages, page_size, n_kv, D, T);
    check_bytes(what, vg, vw, nc + off, es);
    { /* the CPU op on the same cache */
        ps_kv_layer ckv = {page_size, {dt, 4, {n_pages, page_size, n_kv, D}, hkc + es * off, PS_DEV_CPU},
                           {dt, 4, {n_pages, page_size, n_kv, D}, hvc + es * off, PS_DEV_CPU}};
        ps_tensor ck = ps_tensor_3d(PS_DT_F32, T, n_kv, D, k, PS_DEV_CPU), cv = ps_tensor_3d(PS_DT_F32, T, n_kv, D, v, PS_DEV_CPU);
        ps_tensor cs = ps_tensor_1d(PS_DT_I32, T, slots, PS_DEV_CPU);
        GU_OK(op_kv_store(gu_cpu, &ckv, &ck, &cv, &cs, &gu_err), "cpu kv_store");
        snprintf(what, sizeof what, "kv_store %s off=%d pages=%d ps=%d n_kv=%d D=%d T=%d (k vs cpu)",
                 ps_dtype_name(dt), off, n_pages, page_size, n_kv, D, T);
        check_bytes(what, kg, hkc, nc + off, es);
        snprintf(what, sizeof what, "kv_store %s off=%d pages=%d ps=%d n_kv=%d D=%d T=%d (v vs cpu)",
                 ps_dtype_name(dt), off, n_pages, page_size, n_kv, D, T);
        check_bytes(what, vg, hvc, nc + off, es);
    }
    gu_free(&dkc), gu_free(&dvc), gu_free(&dk), gu_free(&dv), gu_free(&ds);
    free(kc), free(vc), free(k), free(v), free(slots), free(hkc), free(hvc), free(kw), free(vw), free(kg), free(vg);
    free(rk), free(rv);
}

/* ---- norms ---- */

static void test_norm(bool layer, int64_t T, int64_t C, ps_dtype wdt) {
    float *x = gu_rand(T * C, 41 + C, 2.0f), *w = gu_rand(C, 42, 1.5f), *b = gu_rand(C, 43, 0.5f);
    for (int64_t i = 0; i < T * C; i += 3) x[i] += 0.75f; /* a non-zero mean for layernorm */
    void *wh = gu_to_dtype(w, C, wdt), *bh = gu_to_dtype(b, C, wdt);
    float *want = malloc(sizeof(float) * (size_t)(T * C)), *got = malloc(sizeof(float) * (size_t)(T * C));
    ps_tensor cx = ps_tensor_2d(PS_DT_F32, T, C, x, PS_DEV_CPU), co = ps_tensor_2d(PS_DT_F32, T, C, want, PS_DEV_CPU);
    ps_tensor cw = ps_tensor_1d(wdt, C, wh, PS_DEV_CPU), cb = ps_tensor_1d(wdt, C, bh, PS_DEV_CPU);
    gu_buf dx = gu_upload(x, sizeof(float) * T * C), dout = gu_poisoned(sizeof(float) * T * C);
    gu_buf dw = gu_upload(wh, ps_dtype_size(wdt) * C), db = gu_upload(bh, ps_dtype_size(wdt) * C);
    ps_tensor gx = ps_tensor_2d(PS_DT_F32, T, C, dx.d, PS_DEV_CUDA), go = ps_tensor_2d(PS_DT_F32, T, C, dout.d, PS_DEV_CUDA);
    ps_tensor gw = ps_tensor_1d(wdt, C, dw.d, PS_DEV_CUDA), gb = ps_tensor_1d(wdt, C, db.d, PS_DEV_CUDA);
    if (layer) {
        GU_OK(op_layernorm(gu_cpu, &co, &cx, &cw, &cb, 1e-5f, &gu_err), "cpu layernorm");
        GU_OK(op_layernorm(gu_gpu, &go, &gx, &gw, &gb, 1e-5f, &gu_err), "cuda layernorm");
    } else {
        GU_OK(op_rmsnorm(gu_cpu, &co, &cx, &cw, 1e-6f, &gu_err), "cpu rmsnorm");
        GU_OK(op_rmsnorm(gu_gpu, &go, &gx, &gw, 1e-6f, &gu_err), "cuda rmsnorm");
    }
    gu_download(&dout, got);
    gu_guard_check(&dout, layer ? "layernorm" : "rmsnorm");
    char what[96];
    snprintf(what, sizeof what, "%s T=%lld C=%lld w=%s", layer ? "layernorm" : "rmsnorm",
             (long long)T, (long long)C, ps_dtype_name(wdt));
    gu_check(what, got, want, T * C, layer ? TOL_LN : TOL_RMS);
    gu_free(&dx), gu_free(&dout), gu_free(&dw), gu_free(&db);
    free(x), free(w), free(b), free(wh), free(bh), free(want), free(got);
}

/* add_rmsnorm: x += y then rmsnorm(x), vs the CPU op (x exact, out as
 * rmsnorm), and vs add + rmsnorm on the device bit for bit. xo: x and out
 * placed that many floats off alignment (both ops take the general path),
 * yo: y only (the register path reads y by scalars, same sums). */
static void test_add_rmsnorm(int64_t T, int64_t C, ps_dtype wdt, int xo, int yo) {
    int64_t n = T * C;
    float *x = gu_rand(n, 61 + C, 2.0f), *y = gu_rand(n, 62, 1.0f), *w = gu_rand(C, 63, 1.5f);
    void *wh = gu_to_dtype(w, C, wdt);
    float *want = malloc(sizeof(float) * (size_t)n), *got = malloc(sizeof(float) * (size_t)n);
    float *xg = malloc(sizeof(float) * (size_t)n);
    gu_buf dx = up_at(x, n, xo), dy = up_at(y, n, yo);
    gu_buf dout = gu_poisoned(sizeof(float) * (size_t)(n + xo)), dw = gu_upload(wh, ps_dtype_size(wdt) * C);
    ps_tensor cx = ps_tensor_2d(PS_DT_F32, T, C, x, PS_DEV_CPU), cy = ps_tensor_2d(PS_DT_F32, T, C, y, PS_DEV_CPU);
    ps_tensor co = ps_tensor_2d(PS_DT_F32, T, C, want, PS_DEV_CPU), cw = ps_tensor_1d(wdt, C, wh, PS_DEV_CPU);
    ps_tensor gx = ps_tensor_2d(PS_DT_F32, T, C, AT(dx, xo), PS_DEV_CUDA), gy = ps_tensor_2d(PS_DT_F32, T, C, AT(dy, yo), PS_DEV_CUDA);
    ps_tensor go = ps_tensor_2d(PS_DT_F32, T, C, AT(dout, xo), PS_DEV_CUDA), gw = ps_tensor_1d(wdt, C, dw.d, PS_DEV_CUDA);
    /* the two separate ops on the device first, on copies: the fused op must equal them exactly */
    gu_buf sx = up_at(x, n, xo), sout = gu_poisoned(sizeof(float) * (size_t)(n + xo));
    ps_tensor tsx = ps_tensor_2d(PS_DT_F32, T, C, AT(sx, xo), PS_DEV_CUDA), tso = ps_tensor_2d(PS_DT_F32, T, C, AT(sout, xo), PS_DEV_CUDA);
    GU_OK(op_add(gu_gpu, &tsx, &gy, &gu_err), "cuda add");
    GU_OK(op_rmsnorm(gu_gpu, &tso, &tsx, &gw, 1e-6f, &gu_err), "cuda rmsnorm");
    float *sep = malloc(sizeof(float) * (size_t)n);
    down_at(&sout, sep, n, xo);
    GU_OK(op_add_rmsnorm(gu_cpu, &co, &cx, &cy, &cw, 1e-6f, &gu_err), "cpu add_rmsnorm");
    GU_OK(op_add_rmsnorm(gu_gpu, &go, &gx, &gy, &gw, 1e-6f, &gu_err), "cuda add_rmsnorm");
    down_at(&dout, got, n, xo);
    down_at(&dx, xg, n, xo);
    gu_guard_check(&dout, "add_rmsnorm out");
    gu_guard_check(&dx, "add_rmsnorm x");
    char what[128];
    snprintf(what, sizeof what, "add_rmsnorm T=%lld C=%lld w=%s offsets %d %d", (long long)T, (long long)C,
             ps_dtype_name(wdt), xo, yo);
    size_t at = strlen(what);
    snprintf(what + at, sizeof what - at, " (x)");
    gu_check(what, xg, x, n, TOL_EXACT);
    snprintf(what + at, sizeof what - at, " (out)");
    gu_check(what, got, want, n, TOL_RMS);
    snprintf(what + at, sizeof what - at, " (out, fused vs add + rmsnorm)");
    gu_check(what, got, sep, n, TOL_EXACT);
    gu_free(&dx), gu_free(&dy), gu_free(&dout), gu_free(&dw), gu_free(&sx), gu_free(&sout);
    free(x), free(y), free(w), free(wh), free(want), free(got), free(xg), free(sep);
}

/* Two 16-bit caches (F16 or BF16 codes) rounded from f32 values a few f32
 * ulps apart: every element equal or one code apart (same sign, adjacent
 * magnitudes: the two values straddled a rounding boundary), and at most
 * max_frac of them apart. */
static void check_adjacent(const char *what, const uint16_t *got, const uint16_t *want, int64_t n,
                           double max_frac) {
    int64_t apart = 0, bad = -1;
    for (int64_t i = 0; i < n && bad < 0; i++) {
        if (got[i] == want[i]) continue;
        apart++;
        if ((got[i] ^ want[i]) & 0x8000 || abs((int)(got[i] & 0x7fff) - (int)(want[i] & 0x7fff)) != 1) bad = i;
    }
    bool ok = bad < 0 && apart <= max_frac * (double)n;
    printf("  %-58s %lld of %lld one code apart (max %.0f%%) %s\n", what, (long long)apart, (long long)n,
           100 * max_frac, ok ? "ok" : "FAIL");
    if (bad >= 0) TU_CHECK(0, "%s: element %lld is 0x%x, want 0x%x", what, (long long)bad, got[bad], want[bad]);
    else TU_CHECK(ok, "%s: %lld of %lld elements one code apart", what, (long long)apart, (long long)n);
}

/* rope_store on the device = rope(q), rope(k), kv_store(k, v) on the device,
 * bit for bit (q, k and both caches of dtype dt), q and k within TOL_ROPE of
 * the CPU, and the caches = the old content with each token's rows replaced
 * by the device's roped k and v rounded on the host (half.h), bit for bit. */
static void test_rope_store(int T, int H, int KV, int D, int n_pages, int page_size, ps_dtype dt) {
    int64_t nq = (int64_t)T * H * D, nk = (int64_t)T * KV * D, nc = (int64_t)n_pages * page_size * KV * D;
    size_t es = ps_dtype_size(dt), cb = es * (size_t)nc;
    float *q = gu_rand(nq, 71 + D, 1.0f), *k = gu_rand(nk, 72, 1.0f), *v = gu_rand(nk, 73, 1.0f);
    float *kc = gu_rand(nc, 74, 1.0f), *vc = gu_rand(nc, 75, 1.0f);
    unsigned char *hkc = gu_to_dtype(kc, nc, dt), *hvc = gu_to_dtype(vc, nc, dt);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)T), *slots = malloc(sizeof(int32_t) * (size_t)T);
    int64_t n_slots = (int64_t)n_pages * page_size;
    for (int t = 0; t < T; t++) {
        pos[t] = (int32_t)((t * 7919 + 11) % 4096);
        slots[t] = (int32_t)(((int64_t)t * 11 + 5) % n_slots); /* distinct: 11 is coprime with 64, 20, 6 */
    }
    gu_buf dp = gu_upload(pos, sizeof(int32_t) * T), ds = gu_upload(slots, sizeof(int32_t) * T);
    gu_buf dv = gu_upload(v, sizeof(float) * nk);
    gu_buf dq[2], dk[2], dkc[2], dvc[2];
    ps_kv_layer gkv[2];
    ps_tensor gp = ps_tensor_1d(PS_DT_I32, T, dp.d, PS_DEV_CUDA), gs = ps_tensor_1d(PS_DT_I32, T, ds.d, PS_DEV_CUDA);
    ps_tensor gv = ps_tensor_3d(PS_DT_F32, T, KV, D, dv.d, PS_DEV_CUDA), gq[2], gk[2];
    for (int f = 0; f < 2; f++) { /* 0: three ops, 1: fused */
        dq[f] = gu_upload(q, sizeof(float) * nq), dk[f] = gu_upload(k, sizeof(float) * nk);
        dkc[f] = gu_upload(hkc, cb), dvc[f] = gu_upload(hvc, cb);
        gkv[f] = (ps_kv_layer){page_size, {dt, 4, {n_pages, page_size, KV, D}, dkc[f].d, PS_DEV_CUDA},
                               {dt, 4, {n_pages, page_size, KV, D}, dvc[f].d, PS_DEV_CUDA}};
        gq[f] = ps_tensor_3d(PS_DT_F32, T, H, D, dq[f].d, PS_DEV_CUDA);
        gk[f] = ps_tensor_3d(PS_DT_F32, T, KV, D, dk[f].d, PS_DEV_CUDA);
    }
    GU_OK(op_rope(gu_gpu, &gq[0], &gp, 10000.0f, &gu_err), "cuda rope q");
    GU_OK(op_rope(gu_gpu, &gk[0], &gp, 10000.0f, &gu_err), "cuda rope k");
    GU_OK(op_kv_store(gu_gpu, &gkv[0], &gk[0], &gv, &gs, &gu_err), "cuda kv_store");
    GU_OK(op_rope_store(gu_gpu, &gq[1], &gk[1], &gv, &gp, 10000.0f, &gkv[1], &gs, &gu_err), "cuda rope_store");
    /* the CPU: its fallback (three ops) on host copies, same cache dtype */
    float *hq = malloc(sizeof(float) * nq), *hk = malloc(sizeof(float) * nk);
    unsigned char *ckc = malloc(cb), *cvc = malloc(cb);
    memcpy(hq, q, sizeof(float) * nq), memcpy(hk, k, sizeof(float) * nk);
    memcpy(ckc, hkc, cb), memcpy(cvc, hvc, cb);
    ps_kv_layer ckv = {page_size, {dt, 4, {n_pages, page_size, KV, D}, ckc, PS_DEV_CPU},
                       {dt, 4, {n_pages, page_size, KV, D}, cvc, PS_DEV_CPU}};
    ps_tensor cq = ps_tensor_3d(PS_DT_F32, T, H, D, hq, PS_DEV_CPU), ck = ps_tensor_3d(PS_DT_F32, T, KV, D, hk, PS_DEV_CPU);
    ps_tensor cv = ps_tensor_3d(PS_DT_F32, T, KV, D, v, PS_DEV_CPU), cp = ps_tensor_1d(PS_DT_I32, T, pos, PS_DEV_CPU);
    ps_tensor cs = ps_tensor_1d(PS_DT_I32, T, slots, PS_DEV_CPU);
    GU_OK(op_rope_store(gu_cpu, &cq, &ck, &cv, &cp, 10000.0f, &ckv, &cs, &gu_err), "cpu rope_store");
    char what[128];
    float *sep = malloc(sizeof(float) * nq), *fus = malloc(sizeof(float) * nq), *fk = malloc(sizeof(float) * nk);
    const char *names[2] = {"q", "k"};
    gu_buf *bufs[2][2] = {{&dq[0], &dq[1]}, {&dk[0], &dk[1]}};
    const float *cpu[2] = {hq, hk};
    int64_t ns[2] = {nq, nk};
    for (int b = 0; b < 2; b++) {
        gu_download(bufs[b][0], sep);
        gu_download(bufs[b][1], fus);
        gu_guard_check(bufs[b][1], names[b]);
        snprintf(what, sizeof what, "rope_store %s T=%d H=%d KV=%d D=%d (%s, fused vs three ops)",
                 ps_dtype_name(dt), T, H, KV, D, names[b]);
        gu_check(what, fus, sep, ns[b], TOL_EXACT);
        snprintf(what, sizeof what, "rope_store %s T=%d H=%d KV=%d D=%d (%s, vs cpu)", ps_dtype_name(dt), T, H,
                 KV, D, names[b]);
        gu_check(what, fus, cpu[b], ns[b], TOL_ROPE);
        if (b == 1) memcpy(fk, fus, sizeof(float) * nk);
    }
    /* the caches: host rounding of the device's roped k (and of v) */
    unsigned char *rk = gu_to_dtype(fk, nk, dt), *rv = gu_to_dtype(v, nk, dt);
    int64_t row = (int64_t)KV * D;
    for (int t = 0; t < T; t++) {
        memcpy(hkc + es * slots[t] * row, rk + es * t * row, es * row);
        memcpy(hvc + es * slots[t] * row, rv + es * t * row, es * row);
    }
    unsigned char *cs0 = malloc(cb), *cs1 = malloc(cb);
    const char *cnames[2] = {"k cache", "v cache"};
    gu_buf *cbufs[2][2] = {{&dkc[0], &dkc[1]}, {&dvc[0], &dvc[1]}};
    const unsigned char *cwant[2] = {hkc, hvc};
    for (int b = 0; b < 2; b++) {
        gu_download(cbufs[b][0], cs0);
        gu_download(cbufs[b][1], cs1);
        gu_guard_check(cbufs[b][1], cnames[b]);
        snprintf(what, sizeof what, "rope_store %s T=%d H=%d KV=%d D=%d (%s, fused vs three ops)",
                 ps_dtype_name(dt), T, H, KV, D, cnames[b]);
        check_bytes(what, cs1, cs0, nc, es);
        snprintf(what, sizeof what, "rope_store %s T=%d H=%d KV=%d D=%d (%s, vs host rounding)",
                 ps_dtype_name(dt), T, H, KV, D, cnames[b]);
        check_bytes(what, cs1, cwant[b], nc, es);
        /* vs the CPU's cache: v bit for bit; k within the rope tolerance, widened
         * (a device and a CPU value a few f32 ulps apart may round apart) */
        snprintf(what, sizeof what, "rope_store %s T=%d H=%d KV=%d D=%d (%s, vs cpu)", ps_dtype_name(dt), T, H,
                 KV, D, cnames[b]);
        if (b == 1) check_bytes(what, cs1, cvc, nc, es);
        else if (dt == PS_DT_F32) gu_check(what, (const float *)cs1, (const float *)ckc, nc, TOL_ROPE);
        else check_adjacent(what, (const uint16_t *)cs1, (const uint16_t *)ckc, nc, ADJ_ROPE16);
    }
    for (int f = 0; f < 2; f++) gu_free(&dq[f]), gu_free(&dk[f]), gu_free(&dkc[f]), gu_free(&dvc[f]);
    gu_free(&dp), gu_free(&ds), gu_free(&dv);
    free(q), free(k), free(v), free(kc), free(vc), free(pos), free(slots), free(hq), free(hk), free(ckc), free(cvc);
    free(hkc), free(hvc), free(sep), free(fus), free(fk), free(rk), free(rv), free(cs0), free(cs1);
}

/* ---- rope ---- */

static void test_rope(int64_t T, int64_t H, int64_t D, float theta, int max_pos) {
    int64_t n = T * H * D;
    float *x = gu_rand(n, 51 + D, 1.0f), *got = malloc(sizeof(float) * (size_t)n);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)T);
    for (int64_t t = 0; t < T; t++) pos[t] = (int32_t)((t * 7919 + 11) % max_pos);
    pos[0] = max_pos - 1; /* the largest angle */
    gu_buf dx = gu_upload(x, sizeof(float) * n), dp = gu_upload(pos, sizeof(int32_t) * T);
    ps_tensor cx = ps_tensor_3d(PS_DT_F32, T, H, D, x, PS_DEV_CPU), cp = ps_tensor_1d(PS_DT_I32, T, pos, PS_DEV_CPU);
    ps_tensor gx = ps_tensor_3d(PS_DT_F32, T, H, D, dx.d, PS_DEV_CUDA), gp = ps_tensor_1d(PS_DT_I32, T, dp.d, PS_DEV_CUDA);
    GU_OK(op_rope(gu_cpu, &cx, &cp, theta, &gu_err), "cpu rope");
    GU_OK(op_rope(gu_gpu, &gx, &gp, theta, &gu_err), "cuda rope");
    gu_download(&dx, got);
    gu_guard_check(&dx, "rope");
    char what[96];
    snprintf(what, sizeof what, "rope T=%lld H=%lld D=%lld theta=%g pos<%d", (long long)T,
             (long long)H, (long long)D, theta, max_pos);
    gu_check(what, got, x, n, TOL_ROPE);
    gu_free(&dx), gu_free(&dp);
    free(x), free(got), free(pos);
}

/* ---- error paths ---- */

static void set_sync(bool on) {
    ps_cuda_tuning t;
    ps_cuda_get_tuning(gu_gpu, &t, &gu_err);
    t.sync_each_op = on;
    ps_cuda_set_tuning(gu_gpu, &t, &gu_err);
}

static void test_errors(void) {
    float tab[4 * 8];
    tu_rand_fill(tab, 32, 61);
    int32_t ids[3] = {1, 4, 2}; /* 4 is out of [0, 4) */
    gu_buf dt = gu_upload(tab, sizeof tab), di = gu_upload(ids, sizeof ids), dout = gu_poisoned(3 * 8 * 4);
    ps_tensor gt = ps_tensor_2d(PS_DT_F32, 4, 8, dt.d, PS_DEV_CUDA), gi = ps_tensor_1d(PS_DT_I32, 3, di.d, PS_DEV_CUDA);
    ps_tensor go = ps_tensor_2d(PS_DT_F32, 3, 8, dout.d, PS_DEV_CUDA);

    /* synchronous mode: the op itself reports it */
    ps_status s = op_embed(gu_gpu, &go, &gt, &gi, &gu_err);
    TU_CHECK(s == PS_EINVAL && strstr(gu_err.msg, "token id 4"), "bad id (sync mode): %s '%s'",
             ps_status_name(s), gu_err.msg);
    printf("  error path: %s\n", gu_err.msg);
    /* asynchronous mode: the next sync reports it, once */
    set_sync(false);
    s = op_embed(gu_gpu, &go, &gt, &gi, &gu_err);
    TU_CHECK(s == PS_OK, "bad id (async mode) op: %s", ps_status_name(s));
    s = ps_backend_sync(gu_gpu, &gu_err);
    TU_CHECK(s == PS_EINVAL && strstr(gu_err.msg, "token id 4"), "bad id (async) at sync: %s '%s'",
             ps_status_name(s), gu_err.msg);
    s = ps_backend_sync(gu_gpu, &gu_err);
    TU_CHECK(s == PS_OK, "flag not cleared after it was reported: %s", gu_err.msg);
    set_sync(true);

    /* gather_rows and kv_store with a bad index */
    int32_t rows[2] = {0, -1};
    gu_buf dr = gu_upload(rows, sizeof rows);
    ps_tensor gr = ps_tensor_1d(PS_DT_I32, 2, dr.d, PS_DEV_CUDA), g2 = ps_tensor_2d(PS_DT_F32, 2, 8, dout.d, PS_DEV_CUDA);
    s = op_gather_rows(gu_gpu, &g2, &gt, &gr, &gu_err);
    TU_CHECK(s == PS_EINVAL && strstr(gu_err.msg, "row -1"), "bad row: %s '%s'", ps_status_name(s), gu_err.msg);
    int32_t slot[1] = {2 * 4};
    gu_buf dsl = gu_upload(slot, sizeof slot), dc = gu_poisoned(2 * 4 * 8 * 4), dc2 = gu_poisoned(2 * 4 * 8 * 4);
    ps_kv_layer kv = {4, {PS_DT_F32, 4, {2, 4, 1, 8}, dc.d, PS_DEV_CUDA}, {PS_DT_F32, 4, {2, 4, 1, 8}, dc2.d, PS_DEV_CUDA}};
    ps_tensor gk = ps_tensor_3d(PS_DT_F32, 1, 1, 8, dt.d, PS_DEV_CUDA), gs = ps_tensor_1d(PS_DT_I32, 1, dsl.d, PS_DEV_CUDA);
    s = op_kv_store(gu_gpu, &kv, &gk, &gk, &gs, &gu_err);
    TU_CHECK(s == PS_EINVAL && strstr(gu_err.msg, "slot 8"), "bad slot: %s '%s'", ps_status_name(s), gu_err.msg);
    gu_guard_check(&dc, "k cache after a bad slot");

    /* out of memory: ENOMEM with sizes, not sticky */
    void *huge = NULL;
    s = ps_buf_alloc(gu_gpu, (size_t)1 << 50, &huge, &gu_err);
    TU_CHECK(s == PS_ENOMEM && strstr(gu_err.msg, "MiB"), "1 PiB alloc: %s '%s'", ps_status_name(s), gu_err.msg);
    printf("  error path: %s\n", gu_err.msg);
    TU_CHECK(ps_cuda_health(gu_gpu, &gu_err) == PS_OK, "unhealthy after ENOMEM: %s", gu_err.msg);

    /* tuning and the cpu backend refused with EINVAL */
    ps_cuda_tuning bad = {99, 8, 0, false};
    TU_CHECK(ps_cuda_set_tuning(gu_gpu, &bad, &gu_err) == PS_EINVAL, "bad tuning accepted");
    TU_CHECK(ps_cuda_health(gu_cpu, &gu_err) == PS_EINVAL, "cuda_health on the cpu backend");

    /* still fully working: a correct embed right after the errors */
    ids[1] = 3;
    gu_buf di2 = gu_upload(ids, sizeof ids);
    gi.data = di2.d;
    GU_OK(op_embed(gu_gpu, &go, &gt, &gi, &gu_err), "embed after errors");
    float got[24];
    gu_download(&dout, got);
    TU_CHECK(memcmp(got + 8, tab + 24, 32) == 0, "embed after errors: row 1 wrong");
    gu_free(&dt), gu_free(&di), gu_free(&dout), gu_free(&dr), gu_free(&dsl), gu_free(&dc),
        gu_free(&dc2), gu_free(&di2);
}

int main(void) {
    gu_init();
    test_buffers();
    for (int i = 0; i < N_SIZES; i++) test_elementwise(SIZES[i], 100 + i, false);
    test_elementwise(8, 200, true);
    test_elementwise(17, 201, true);
    test_silu_add_paths(1, 11008);
    test_silu_add_paths(5, 4096);
    test_silu_add_paths(3, 17);
    const ps_dtype dts[3] = {PS_DT_F32, PS_DT_F16, PS_DT_BF16};
    for (int d = 0; d < 3; d++) {
        test_embed(1000, 127, 17, dts[d]);
        test_embed(3, 1, 1, dts[d]);
        test_embed(32000, 4096, 3, dts[d]);
        test_embed(64, 11008, 1, dts[d]);
        test_embed(70, 4100, 5, dts[d]);
        test_norm(false, 1, 4096, dts[d]);
        test_norm(false, 3, 17, dts[d]);
        test_norm(false, 127, 4097, dts[d]);
        test_norm(false, 1, 11008, dts[d]); /* register path, partly filled chunks */
        test_norm(false, 5, 8192, dts[d]);  /* register path, full */
        test_norm(false, 2, 8196, dts[d]);  /* over the register limit: general path */
        test_norm(false, 5, 16, dts[d]);
        test_add_rmsnorm(1, 4096, dts[d], 0, 0);
        test_add_rmsnorm(3, 17, dts[d], 0, 0);
        test_add_rmsnorm(127, 4097, dts[d], 0, 0);
        test_add_rmsnorm(1, 11008, dts[d], 0, 0);
        test_add_rmsnorm(5, 4100, dts[d], 0, 0);
        test_add_rmsnorm(5, 4096, dts[d], 0, 1); /* y off alignment */
        test_add_rmsnorm(5, 4096, dts[d], 1, 0); /* x, out off alignment */
        test_add_rmsnorm(1, 8196, dts[d], 0, 0);
        test_add_rmsnorm(2, 12, dts[d], 0, 1);
        test_norm(true, 1, 1, dts[d]);
        test_norm(true, 17, 768, dts[d]);
        test_norm(true, 5, 4097, dts[d]);
    }
    test_gather_rows(17, 4097, 5);
    test_gather_rows(1, 3, 1);
    test_gather_rows(512, 4096, 33);
    for (int d = 0; d < 3; d++) { /* kv cache F32, F16, BF16 */
        test_kv_store(7, 16, 2, 64, 17, dts[d], 0);
        test_rope_store(1, 32, 8, 128, 4, 16, dts[d]);
        test_rope_store(5, 32, 8, 128, 4, 16, dts[d]);
        test_rope_store(17, 6, 2, 34, 5, 4, dts[d]);
        test_rope_store(3, 3, 3, 2, 2, 3, dts[d]);
        test_kv_store(3, 5, 1, 3, 1, dts[d], 0);
        test_kv_store(8, 16, 32, 128, 1, dts[d], 0);
        test_kv_store(3, 5, 2, 3, 5, dts[d], 0);
        test_kv_store(64, 16, 32, 128, 127, dts[d], 0);
        test_kv_store(7, 16, 2, 64, 17, dts[d], 1); /* cache off alignment: scalar path */
    }
    test_rope(1, 1, 2, 10000.0f, 2);
    test_rope(1, 32, 128, 10000.0f, 4096);
    test_rope(17, 3, 64, 10000.0f, 4096);
    test_rope(5, 32, 128, 500000.0f, 131072);
    test_rope(127, 4, 18, 10000.0f, 2048);
    test_errors();
    return gu_finish("cuda ops");
}
