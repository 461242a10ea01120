/* CUDA attention vs the CPU oracle: the paged op (both CUDA kernels, forced
 * through the tuning, and the automatic choice) over caches with random
 * content and shuffled page tables, with sequences that have a prefix (KV
 * entries before their first new token, as prefix tuning and earlier chunks
 * leave), decode tokens, prefill chunks, contiguous and interleaved token
 * orders, GQA, odd head dims and page sizes; the dense encoder op causal and
 * full; and bad metadata reported as PS_EINVAL. Bit equality (no tolerance):
 * the decode and split kernels cut a row's keys into the same parts and
 * merge them in the same order, so they must give the same bits, and a
 * decode-kernel row of a batch must equal that token run alone (T = 1,
 * automatic path).
 *
 * F16 and BF16 caches (the contract: widen exactly, then the f32 math): K
 * and V drawn in f32 and rounded to the dtype. Every path over the 16-bit
 * device cache is checked against the CPU op over the same 16-bit cache
 * (tolerance below), and must give the same bits as the same path over an
 * F32 device cache holding the widened values (no tolerance), alone and in
 * a batch; that F32 run is checked against the CPU op over it. Two cases
 * plant widening corners (subnormals, signed zeros, 65504): on the device
 * F16 is widened by the conversion instruction, not by half.h's code.
 *
 * Tolerance 1e-5 rel L2 (measured per case in the log): the CUDA kernels
 * keep a running max and sum (online softmax) and add in another order than
 * the CPU's stored-score loop, and fast-math expf is __expf (2 ulp + 2^-21).
 * The same tolerance for every cache dtype: a 16-bit cache changes the
 * values, not the arithmetic, and both sides read the same values. Worst
 * measured on the CPU emulator (tests/gpu/emu, no fast math): 8.8e-7 F32,
 * 9.8e-7 F32 of widened values, 8.1e-7 F16, 9.8e-7 BF16 (vs the CPU on the
 * same cache); not yet measured on a GPU. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_util.h"

#define TOL_ATT 1e-5

typedef struct {
    int prefix, n_new; /* KV entries before the first new token; new tokens */
} seq_spec;

typedef struct {
    const char *name;
    int H, n_kv, D, page_size;
    int n_seqs;
    const seq_spec *seqs;
    bool interleave; /* tokens round-robin over sequences (decode batches) */
    bool corners;    /* every 5th K and V entry a widening corner (plant_corners) */
} att_case;

/* Entries whose widening is a corner: F16 subnormals and smallest normal,
 * signed zeros, BF16 subnormals (f32 denormals; F16: 0), and in V the
 * largest F16 magnitude (K stays within 1 so that no score is large enough
 * for the CPU's and the device's summation orders to move a softmax weight
 * visibly). Planted before the rounding to the cache dtype. */
static void plant_corners(float *x, int64_t n, bool big) {
    static const float small[] = {0x1p-24f, 3 * 0x1p-24f, 0x3ffp-24f, -0x1p-20f, 0x1p-14f, 0.0f, -0.0f,
                                  1e-39f, -3e-40f, -1.0f};
    int ns = (int)(sizeof small / sizeof small[0]);
    for (int64_t i = 0, k = 0; i < n; i += 5, k++)
        x[i] = big && k % (ns + 2) >= ns ? (k % 2 ? 65504.0f : -65504.0f) : small[k % (ns + 2) % ns];
}

/* Tokens of a batch run alone (T = 1, automatic path: the split or decode
 * kernel) give the bits of their row of the batch's decode-kernel output
 * `batch`: the first and last ALONE_N tokens. */
#define ALONE_N 3
static void check_alone(const att_case *c, int T, const ps_kv_layer *gkv, const ps_attn_meta *gm,
                        const gu_buf *dq, float scale, const float *batch) {
    int64_t n = (int64_t)c->H * c->D;
    float *got = malloc(sizeof(float) * (size_t)n);
    gu_set_paths(PS_CUDA_LINEAR_AUTO, PS_CUDA_ATTN_AUTO);
    for (int t = 0; t < T; t++) {
        if (t >= ALONE_N && t < T - ALONE_N) continue;
        ps_attn_meta m = *gm;
        m.n_tokens = 1;
        m.tok_seq = ps_tensor_1d(PS_DT_I32, 1, (int32_t *)gm->tok_seq.data + t, PS_DEV_CUDA);
        m.tok_kv_pos = ps_tensor_1d(PS_DT_I32, 1, (int32_t *)gm->tok_kv_pos.data + t, PS_DEV_CUDA);
        ps_tensor gq = ps_tensor_3d(PS_DT_F32, 1, c->H, c->D, (float *)dq->d + t * n, PS_DEV_CUDA);
        gu_buf dout = gu_poisoned(sizeof(float) * n);
        ps_tensor go = ps_tensor_3d(PS_DT_F32, 1, c->H, c->D, dout.d, PS_DEV_CUDA);
        GU_OK(op_attention(gu_gpu, &go, &gq, gkv, &m, scale, &gu_err), "cuda attention alone");
        gu_download(&dout, got);
        TU_CHECK(!memcmp(got, batch + t * n, sizeof(float) * (size_t)n),
                 "attention %s: token %d alone differs in bits from its row of the batch", c->name, t);
        gu_free(&dout);
    }
    free(got);
}

static const char *const path_name[] = {"auto", "decode-kernel", "prefill-kernel", "split-kernel"};

/* Runs every path over the device cache gkv, checks each against the oracle
 * `want` and its output guard bytes, and leaves path p's output in by_path[p]
 * (malloc'd). */
static void run_paths(const att_case *c, int T, const char *tag, const ps_kv_layer *gkv,
                      const ps_attn_meta *gm, const ps_tensor *gq, float scale, const float *want,
                      float **by_path) {
    int64_t nq = (int64_t)T * c->H * c->D;
    for (int path = PS_CUDA_ATTN_AUTO; path <= PS_CUDA_ATTN_SPLIT; path++) {
        gu_set_paths(PS_CUDA_LINEAR_AUTO, path);
        gu_buf dout = gu_poisoned(sizeof(float) * nq);
        ps_tensor go = ps_tensor_3d(PS_DT_F32, T, c->H, c->D, dout.d, PS_DEV_CUDA);
        by_path[path] = malloc(sizeof(float) * (size_t)nq);
        GU_OK(op_attention(gu_gpu, &go, gq, gkv, gm, scale, &gu_err), "cuda attention");
        gu_download(&dout, by_path[path]);
        gu_guard_check(&dout, "attention out");
        char what[128];
        snprintf(what, sizeof what, "attention %s T=%d H=%d n_kv=%d D=%d ps=%d %s %s", c->name, T, c->H,
                 c->n_kv, c->D, c->page_size, tag, path_name[path]);
        gu_check(what, by_path[path], want, nq, TOL_ATT);
        gu_free(&dout);
    }
    TU_CHECK(!memcmp(by_path[PS_CUDA_ATTN_DECODE], by_path[PS_CUDA_ATTN_SPLIT], sizeof(float) * (size_t)nq),
             "attention %s %s: decode and split kernels differ in bits", c->name, tag);
}

/* One case over a cache of dtype dt (K and V drawn in f32 and rounded to
 * dt). The oracles: the CPU op over an F32 cache holding the widened values
 * (what the 16-bit cache contract defines) for the device's F32 cache of
 * them, and the CPU op over the same 16-bit cache for the device's 16-bit
 * cache. A 16-bit cache
 * must give, on every path, the bits of the F32 device cache holding the
 * same widened values (the kernels widen exactly on load, then the same f32
 * math). */
static void run_paged(const att_case *c, ps_dtype dt, uint64_t seed) {
    int S = c->n_seqs, max_len = 0, T = 0;
    for (int s = 0; s < S; s++) {
        int len = c->seqs[s].prefix + c->seqs[s].n_new;
        if (len > max_len) max_len = len;
        T += c->seqs[s].n_new;
    }
    int max_pages = (max_len + c->page_size - 1) / c->page_size;
    int n_pages = S * max_pages + 3; /* spare pages: garbage the kernels must not read */
    int64_t row = (int64_t)c->n_kv * c->D, nc = (int64_t)n_pages * c->page_size * row;
    float *K = gu_rand(nc, seed, 1.0f), *V = gu_rand(nc, seed + 1, 1.0f);
    if (c->corners) plant_corners(K, nc, false), plant_corners(V, nc, true);
    gu_round_dtype(K, nc, dt);
    gu_round_dtype(V, nc, dt);
    int32_t *bt = malloc(sizeof(int32_t) * (size_t)(S * max_pages));
    int32_t *perm = malloc(sizeof(int32_t) * (size_t)n_pages);
    for (int i = 0; i < n_pages; i++) perm[i] = i;
    uint64_t r = seed * 2654435761u + 1;
    for (int i = n_pages - 1; i > 0; i--) { /* shuffled page ids */
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        int j = (int)(r % (uint64_t)(i + 1));
        int32_t tmp = perm[i];
        perm[i] = perm[j], perm[j] = tmp;
    }
    for (int i = 0; i < S * max_pages; i++) bt[i] = perm[i];
    int32_t *tok_seq = malloc(sizeof(int32_t) * (size_t)T), *tok_pos = malloc(sizeof(int32_t) * (size_t)T);
    int t = 0;
    if (c->interleave) {
        for (int k = 0; t < T; k++)
            for (int s = 0; s < S; s++)
                if (k < c->seqs[s].n_new) tok_seq[t] = s, tok_pos[t] = c->seqs[s].prefix + k, t++;
    } else {
        for (int s = 0; s < S; s++)
            for (int k = 0; k < c->seqs[s].n_new; k++) tok_seq[t] = s, tok_pos[t] = c->seqs[s].prefix + k, t++;
    }
    int64_t nq = (int64_t)T * c->H * c->D;
    float *q = gu_rand(nq, seed + 2, 1.0f), *want = malloc(sizeof(float) * (size_t)nq);
    float scale = 1.0f / sqrtf((float)c->D);

    ps_kv_layer ckv = {c->page_size, {PS_DT_F32, 4, {n_pages, c->page_size, c->n_kv, c->D}, K, PS_DEV_CPU},
                       {PS_DT_F32, 4, {n_pages, c->page_size, c->n_kv, c->D}, V, PS_DEV_CPU}};
    ps_attn_meta cm = {T, S, max_pages, ps_tensor_1d(PS_DT_I32, T, tok_seq, PS_DEV_CPU),
                       ps_tensor_1d(PS_DT_I32, T, tok_pos, PS_DEV_CPU),
                       ps_tensor_2d(PS_DT_I32, S, max_pages, bt, PS_DEV_CPU), max_len};
    ps_tensor cq = ps_tensor_3d(PS_DT_F32, T, c->H, c->D, q, PS_DEV_CPU), co = ps_tensor_3d(PS_DT_F32, T, c->H, c->D, want, PS_DEV_CPU);
    GU_OK(op_attention(gu_cpu, &co, &cq, &ckv, &cm, scale, &gu_err), "cpu attention");

    gu_buf dK = gu_upload(K, sizeof(float) * nc), dV = gu_upload(V, sizeof(float) * nc);
    gu_buf dseq = gu_upload(tok_seq, sizeof(int32_t) * T), dpos = gu_upload(tok_pos, sizeof(int32_t) * T);
    gu_buf dbt = gu_upload(bt, sizeof(int32_t) * S * max_pages), dq = gu_upload(q, sizeof(float) * nq);
    ps_kv_layer gkv = ckv;
    gkv.k.data = dK.d, gkv.k.dev = PS_DEV_CUDA, gkv.v.data = dV.d, gkv.v.dev = PS_DEV_CUDA;
    ps_attn_meta gm = {T, S, max_pages, ps_tensor_1d(PS_DT_I32, T, dseq.d, PS_DEV_CUDA),
                       ps_tensor_1d(PS_DT_I32, T, dpos.d, PS_DEV_CUDA),
                       ps_tensor_2d(PS_DT_I32, S, max_pages, dbt.d, PS_DEV_CUDA), max_len};
    ps_tensor gq = ps_tensor_3d(PS_DT_F32, T, c->H, c->D, dq.d, PS_DEV_CUDA);
    float *by_path[PS_CUDA_ATTN_SPLIT + 1] = {0}, *by_path16[PS_CUDA_ATTN_SPLIT + 1] = {0};
    run_paths(c, T, dt == PS_DT_F32 ? "f32" : "f32-widened", &gkv, &gm, &gq, scale, want, by_path);
    if (dt == PS_DT_F32) {
        check_alone(c, T, &gkv, &gm, &dq, scale, by_path[PS_CUDA_ATTN_DECODE]);
    } else {
        void *K16 = gu_to_dtype(K, nc, dt), *V16 = gu_to_dtype(V, nc, dt); /* exact: K, V are rounded */
        /* the CPU op over the same 16-bit cache */
        float *want16 = malloc(sizeof(float) * (size_t)nq);
        ps_kv_layer c16 = ckv;
        c16.k.dtype = c16.v.dtype = dt;
        c16.k.data = K16, c16.v.data = V16;
        co.data = want16;
        GU_OK(op_attention(gu_cpu, &co, &cq, &c16, &cm, scale, &gu_err), "cpu attention 16-bit cache");
        gu_buf dK16 = gu_upload(K16, 2 * (size_t)nc), dV16 = gu_upload(V16, 2 * (size_t)nc);
        ps_kv_layer g16 = gkv;
        g16.k.dtype = g16.v.dtype = dt;
        g16.k.data = dK16.d, g16.v.data = dV16.d;
        char tag[32];
        snprintf(tag, sizeof tag, "%s vs cpu-%s", ps_dtype_name(dt), ps_dtype_name(dt));
        run_paths(c, T, tag, &g16, &gm, &gq, scale, want16, by_path16);
        free(want16);
        for (int path = PS_CUDA_ATTN_AUTO; path <= PS_CUDA_ATTN_SPLIT; path++)
            TU_CHECK(!memcmp(by_path16[path], by_path[path], sizeof(float) * (size_t)nq),
                     "attention %s %s %s: differs in bits from the f32 cache of the widened values",
                     c->name, ps_dtype_name(dt), path_name[path]);
        check_alone(c, T, &g16, &gm, &dq, scale, by_path16[PS_CUDA_ATTN_DECODE]);
        gu_guard_check(&dK16, "k cache (read only)");
        gu_guard_check(&dV16, "v cache (read only)");
        gu_free(&dK16), gu_free(&dV16);
        free(K16), free(V16);
    }
    for (int path = PS_CUDA_ATTN_AUTO; path <= PS_CUDA_ATTN_SPLIT; path++) free(by_path[path]), free(by_path16[path]);
    gu_guard_check(&dK, "k cache (read only)");
    gu_free(&dK), gu_free(&dV), gu_free(&dseq), gu_free(&dpos), gu_free(&dbt), gu_free(&dq);
    free(K), free(V), free(bt), free(perm), free(tok_seq), free(tok_pos), free(q), free(want);
}

static void run_dense(int B, int T, int H, int D, bool causal, uint64_t seed) {
    int64_t n = (int64_t)B * T * H * D;
    float *q = gu_rand(n, seed, 1.0f), *k = gu_rand(n, seed + 1, 1.0f), *v = gu_rand(n, seed + 2, 1.0f);
    float *want = malloc(sizeof(float) * (size_t)n), *got = malloc(sizeof(float) * (size_t)n);
    float scale = 1.0f / sqrtf((float)D);
    ps_tensor cq = {PS_DT_F32, 4, {B, T, H, D}, q, PS_DEV_CPU}, ck = cq, cv = cq, co = cq;
    ck.data = k, cv.data = v, co.data = want;
    GU_OK(op_attention_dense(gu_cpu, &co, &cq, &ck, &cv, causal, scale, &gu_err), "cpu dense attention");
    gu_buf dq = gu_upload(q, sizeof(float) * n), dk = gu_upload(k, sizeof(float) * n), dv = gu_upload(v, sizeof(float) * n);
    gu_buf dout = gu_poisoned(sizeof(float) * n);
    ps_tensor gq = cq, gk = cq, gv = cq, go = cq;
    gq.dev = gk.dev = gv.dev = go.dev = PS_DEV_CUDA;
    gq.data = dq.d, gk.data = dk.d, gv.data = dv.d, go.data = dout.d;
    GU_OK(op_attention_dense(gu_gpu, &go, &gq, &gk, &gv, causal, scale, &gu_err), "cuda dense attention");
    gu_download(&dout, got);
    gu_guard_check(&dout, "dense attention out");
    char what[128];
    snprintf(what, sizeof what, "attention_dense B=%d T=%d H=%d D=%d %s", B, T, H, D, causal ? "causal" : "full");
    gu_check(what, got, want, n, TOL_ATT);
    gu_free(&dq), gu_free(&dk), gu_free(&dv), gu_free(&dout);
    free(q), free(k), free(v), free(want), free(got);
}

/* One token with broken metadata among good ones: PS_EINVAL naming it, and
 * the backend stays healthy. */
static void run_bad_meta(int which) {
    int H = 2, D = 8, ps = 4, n_pages = 4, S = 2, max_pages = 2, T = 3;
    int64_t nc = (int64_t)n_pages * ps * H * D;
    float *K = gu_rand(nc, 71, 1.0f), *q = gu_rand((int64_t)T * H * D, 72, 1.0f);
    int32_t seq[3] = {0, 1, 1}, pos[3] = {3, 0, 5}, bt[4] = {2, 0, 1, 3};
    const char *expect = "";
    if (which == 0) seq[1] = 2, expect = "seq 2"; /* n_seqs = 2 */
    if (which == 1) pos[2] = 8, expect = "kv_pos 8"; /* needs a third page */
    if (which == 2) bt[3] = 9, expect = "page id 9"; /* pages 0..3 */
    gu_buf dK = gu_upload(K, sizeof(float) * nc), dq = gu_upload(q, sizeof(float) * T * H * D);
    gu_buf ds = gu_upload(seq, sizeof seq), dp = gu_upload(pos, sizeof pos), db = gu_upload(bt, sizeof bt);
    gu_buf dout = gu_poisoned(sizeof(float) * T * H * D);
    ps_kv_layer kv = {ps, {PS_DT_F32, 4, {n_pages, ps, H, D}, dK.d, PS_DEV_CUDA}, {PS_DT_F32, 4, {n_pages, ps, H, D}, dK.d, PS_DEV_CUDA}};
    ps_attn_meta m = {T, S, max_pages, ps_tensor_1d(PS_DT_I32, T, ds.d, PS_DEV_CUDA), ps_tensor_1d(PS_DT_I32, T, dp.d, PS_DEV_CUDA),
                      ps_tensor_2d(PS_DT_I32, S, max_pages, db.d, PS_DEV_CUDA), 8};
    ps_tensor gq = ps_tensor_3d(PS_DT_F32, T, H, D, dq.d, PS_DEV_CUDA), go = ps_tensor_3d(PS_DT_F32, T, H, D, dout.d, PS_DEV_CUDA);
    for (int path = PS_CUDA_ATTN_DECODE; path <= PS_CUDA_ATTN_SPLIT; path++) {
        gu_set_paths(PS_CUDA_LINEAR_AUTO, path);
        ps_status s = op_attention(gu_gpu, &go, &gq, &kv, &m, 0.5f, &gu_err);
        TU_CHECK(s == PS_EINVAL && strstr(gu_err.msg, expect), "bad metadata %d path %d: %s '%s'",
                 which, path, ps_status_name(s), gu_err.msg);
        if (path == PS_CUDA_ATTN_DECODE) printf("  error path: %s\n", gu_err.msg);
    }
    gu_guard_check(&dout, "attention out (bad metadata)");
    TU_CHECK(ps_cuda_health(gu_gpu, &gu_err) == PS_OK, "unhealthy after bad metadata: %s", gu_err.msg);
    gu_free(&dK), gu_free(&dq), gu_free(&ds), gu_free(&dp), gu_free(&db), gu_free(&dout);
    free(K), free(q);
}

int main(void) {
    gu_init();
    static const seq_spec a[] = {{0, 17}, {10, 5}, {40, 1}};
    static const seq_spec b[] = {{0, 64}, {300, 1}};
    static const seq_spec c[] = {{5, 3}, {0, 1}, {2, 20}};
    static const seq_spec d[] = {{100, 9}};
    static const seq_spec e1[] = {{0, 1}};
    static seq_spec e[40];
    for (int i = 0; i < 40; i++) e[i].prefix = (i * 37) % 211, e[i].n_new = 1;
    static const seq_spec f[] = {{0, 512}};
    static const seq_spec g[] = {{700, 1}, {0, 33}, {129, 16}};
    /* split decode: one (token, head) gets the most splits; long: every split has
     * keys (and a partial last one), short: most splits are empty */
    static const seq_spec long1[] = {{1000, 1}}, short1[] = {{77, 1}}, two[] = {{4000, 1}, {3, 1}};
    /* decode batches of mixed contexts 1, 17, 33, 100, 1000 (one query per
     * sequence: its context is prefix + 1) */
    static const seq_spec ctx[] = {{0, 1}, {16, 1}, {32, 1}, {99, 1}, {999, 1}};
    static const seq_spec ctx1000[] = {{999, 1}}, ctx100[] = {{99, 1}}, ctx17[] = {{16, 1}};
    const att_case cases[] = {
        {"ctx-mixed-gqa", 8, 2, 128, 16, 5, ctx, true},
        {"ctx-mixed-D64", 4, 4, 64, 16, 5, ctx, true},
        {"ctx-mixed-D33", 3, 1, 33, 16, 5, ctx, true},
        {"ctx-mixed-D256-gqa", 4, 2, 256, 8, 5, ctx, true},
        {"ctx-mixed-D16", 2, 1, 16, 4, 5, ctx, true},
        {"ctx1000-D128", 32, 8, 128, 16, 1, ctx1000, false},
        {"ctx100-D64-ps1", 2, 2, 64, 1, 1, ctx100, false},
        {"ctx17-D40", 4, 2, 40, 16, 1, ctx17, false},
        {"mixed", 4, 2, 32, 16, 3, a, false},
        {"prefill+long-decode", 32, 32, 128, 16, 2, b, false},
        {"odd-D", 8, 1, 17, 3, 3, c, true},
        {"D=256", 2, 2, 256, 7, 1, d, false},
        {"single", 1, 1, 2, 1, 1, e1, false},
        {"decode-batch", 6, 3, 96, 16, 40, e, true},
        {"prefill-512", 8, 8, 128, 16, 1, f, false},
        {"mixed-gqa", 32, 8, 128, 16, 3, g, true},
        {"split-long", 1, 1, 64, 16, 1, long1, false},
        {"split-short", 2, 1, 64, 5, 1, short1, true},
        {"split-gqa-uneven", 4, 2, 128, 16, 2, two, true},
        {"corners-D64", 4, 2, 64, 16, 5, ctx, true, true},
        {"corners-D33", 3, 1, 33, 5, 3, c, true, true},
    };
    /* every case over an F32 cache, and over a 16-bit one: F16 and BF16 in
     * turn (both share every line of the kernels but the widening) */
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
        run_paged(&cases[i], PS_DT_F32, 500 + i);
        if (cases[i].corners) {
            run_paged(&cases[i], PS_DT_F16, 700 + i);
            run_paged(&cases[i], PS_DT_BF16, 700 + i);
        } else {
            run_paged(&cases[i], i % 2 ? PS_DT_BF16 : PS_DT_F16, 700 + i);
        }
    }
    run_dense(2, 17, 3, 64, true, 600);
    run_dense(2, 17, 3, 64, false, 601);
    run_dense(1, 1, 1, 8, true, 602);
    run_dense(3, 77, 8, 64, false, 603);
    run_dense(1, 197, 12, 64, false, 604);
    run_dense(1, 5, 2, 256, true, 605);
    for (int w = 0; w < 3; w++) run_bad_meta(w);
    return gu_finish("cuda attention");
}
