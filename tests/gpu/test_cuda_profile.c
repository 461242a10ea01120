/* The CUDA backend's per-op profiler (ps_cuda_profile_*, cuda_ext.h):
 *   - its accounting of a real model: decode steps of a random NF4 LLaMA give,
 *     per step, exactly the calls llama_forward issues (7 projections per
 *     layer keyed by shape and path, one F16 lm_head, 2 rmsnorms, 2L-1 add_rmsnorms, L rope_stores, ...) and
 *     the logits' bytes downloaded; a prefill above gemv_max_t lands in the
 *     gemm rows, its lm_head (one output row) in the gemv row;
 *   - every row with calls has device time (its pairs were read), and the
 *     pairs and host intervals, being disjoint, sum to no more than the wall
 *     time around the steps; with a pad of P us the pads lie outside the
 *     pairs, so pairs + calls * P fit in the wall time too;
 *   - a ring of 8 pairs (read many times inside a step) counts the same; in
 *     the emulator, where pairs must enclose their calls, no pair is lost and
 *     no pad is inside one;
 *   - logits are bit-identical with the profiler off, on, and padded;
 *   - with the v6 GEMV a decode step launches 3 L - 1 kernels fewer with the
 *     fused ops (ps_cuda_counters) and gives the same logits;
 *   - off restores the plain table exactly; reset empties the rows; bad
 *     options and a CPU backend are refused; PS_CUDA_PROFILE=1 at create
 *     turns it on.
 * The model shapes are all distinct (q 96x64, k/v 48x64, o 64x96, gate/up
 * 160x64, down 64x160, lm_head 300x64) so every row name is checkable. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gpu_util.h"
#include "models/llama.h"

#define NSTEPS 3
#define PAD_US 200
#define MAX_PAGES 4
#define PAGE 16

/* In the CPU emulator a launch runs to completion before it returns, so each
 * event pair encloses its call's host interval and exceeds it only by the
 * marks' own cost: a pair lost from the ring (device < host) or a pad inside
 * the pair (device - host >= pad) shows per row. */
static bool g_emulated;
#define EMU_MARK_US 50.0

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

typedef struct {
    llama_model *m;
    kv_cache kv;
    int32_t pages[MAX_PAGES];
    float *logits;
} fixture;

/* One step: n tokens of sequence 0 at positions p0.., logits of the last. */
static ps_status step(fixture *f, int n, int p0, ps_err *err) {
    int32_t ids[16], pos[16], seq[16] = {0}, out = n - 1;
    int V = llama_get_config(f->m)->vocab;
    for (int t = 0; t < n; t++) ids[t] = (int32_t)((p0 + t) * 7919 % V), pos[t] = p0 + t;
    llama_batch b = {n, ids, pos, seq, pos, 1, MAX_PAGES, f->pages, 1, &out};
    return llama_forward(f->m, &f->kv, &b, f->logits, err);
}

static const ps_cuda_profile_row *find(const ps_cuda_profile_row *r, int n, const char *name) {
    for (int k = 0; k < n; k++)
        if (!strcmp(r[k].name, name)) return &r[k];
    return NULL;
}

/* The rows of NSTEPS decode steps against what llama_forward issues. */
static void check_decode_rows(const char *what, const llama_config *c, const ps_cuda_profile_row *r, int n,
                              double wall_ms, int pad_us) {
    int L = c->n_layers;
    char lm[64];
    snprintf(lm, sizeof lm, "linear F16 gemv %dx%d", c->vocab, c->hidden);
    struct { const char *name; int64_t per_step; } want[] = {
        {"linear nf4 gemv 96x64", L}, {"linear nf4 gemv 48x64", 2 * L}, {"linear nf4 gemv 64x96", L},
        {"linear nf4 gemv 160x64", 2 * L}, {"linear nf4 gemv 64x160", L}, {lm, 1},
        {"embed", 1}, {"rmsnorm", 2}, {"add_rmsnorm", 2 * L - 1}, {"rope_store", L},
        {"attention", L}, {"add", 1}, {"silu_mul", L}, {"gather_rows", 1}, {"upload", 1}, {"download", 1},
    };
    int nw = (int)(sizeof want / sizeof want[0]);
    TU_CHECK(n == nw, "%s: %d rows, expected %d", what, n, nw);
    int64_t calls = 0;
    double dev = 0, host = 0;
    for (int i = 0; i < nw; i++) {
        const ps_cuda_profile_row *x = find(r, n, want[i].name);
        TU_CHECK(x != NULL, "%s: no row '%s'", what, want[i].name);
        if (!x) continue;
        TU_CHECK(x->calls == NSTEPS * want[i].per_step, "%s: '%s' %lld calls, expected %d x %lld", what,
                 x->name, (long long)x->calls, NSTEPS, (long long)want[i].per_step);
        TU_CHECK(x->device_ms > 0 && x->host_ms > 0, "%s: '%s' device %.6f ms, host %.6f ms (want > 0)", what,
                 x->name, x->device_ms, x->host_ms);
        if (g_emulated)
            TU_CHECK(x->device_ms >= x->host_ms && x->device_ms - x->host_ms <= x->calls * EMU_MARK_US * 1e-3,
                     "%s: '%s' device %.6f ms vs host %.6f ms over %lld calls (emulator: pairs enclose the call)",
                     what, x->name, x->device_ms, x->host_ms, (long long)x->calls);
    }
    for (int k = 0; k < n; k++) calls += r[k].calls, dev += r[k].device_ms, host += r[k].host_ms;
    const ps_cuda_profile_row *dl = find(r, n, "download"), *ul = find(r, n, "upload");
    if (dl)
        TU_CHECK(dl->bytes == (int64_t)NSTEPS * c->vocab * 4, "%s: %lld bytes downloaded, expected %d x %d x 4",
                 what, (long long)dl->bytes, NSTEPS, c->vocab);
    if (ul) TU_CHECK(ul->bytes > 0 && ul->bytes % 4 == 0, "%s: %lld bytes uploaded", what, (long long)ul->bytes);
    /* disjoint intervals inside the wall time; the pads are outside the pairs */
    double slack = 0.01 * wall_ms + 0.05;
    double pads = (double)(calls) * pad_us * 1e-3;
    TU_CHECK(dev + pads <= wall_ms + slack, "%s: device %.3f ms + pads %.3f ms > wall %.3f ms", what, dev, pads,
             wall_ms);
    TU_CHECK(host <= wall_ms + slack, "%s: host %.3f ms > wall %.3f ms", what, host, wall_ms);
    printf("%s: %lld calls in %d steps, device %.3f ms, host %.3f ms, pads %.3f ms, wall %.3f ms\n", what,
           (long long)calls, NSTEPS, dev, host, pads, wall_ms);
}

/* NSTEPS decode steps at positions 9.. (after a 9-token prefill) under the
 * given options; returns the logits of the last step in `last`. */
static void profiled_decode(fixture *f, const char *what, const ps_cuda_profile_opts *o, float *last) {
    const llama_config *c = llama_get_config(f->m);
    ps_cuda_profile_row rows[64];
    int n = 0;
    GU_OK(ps_cuda_profile_enable(gu_gpu, true, o, &gu_err), "enable");
    GU_OK(ps_cuda_profile_reset(gu_gpu, &gu_err), "reset");
    double t0 = now_ms();
    for (int s = 0; s < NSTEPS; s++) GU_OK(step(f, 1, 9 + s, &gu_err), "decode step");
    double wall = now_ms() - t0;
    memcpy(last, f->logits, sizeof(float) * (size_t)c->vocab);
    GU_OK(ps_cuda_profile_rows(gu_gpu, rows, 64, &n, NULL, &gu_err), "rows");
    check_decode_rows(what, c, rows, n, wall, o ? o->pad_us : 0);
    if (!o) GU_OK(ps_cuda_profile_report(gu_gpu, stdout, NSTEPS, wall / NSTEPS, &gu_err), "report");
    GU_OK(ps_cuda_profile_enable(gu_gpu, false, NULL, &gu_err), "disable");
}

static void check_prefill_rows(fixture *f) {
    ps_cuda_profile_row rows[64];
    int n = 0;
    GU_OK(ps_cuda_profile_enable(gu_gpu, true, NULL, &gu_err), "enable");
    GU_OK(ps_cuda_profile_reset(gu_gpu, &gu_err), "reset");
    GU_OK(step(f, 9, 0, &gu_err), "prefill 9 tokens");
    GU_OK(ps_cuda_profile_rows(gu_gpu, rows, 64, &n, NULL, &gu_err), "rows");
    const ps_cuda_profile_row *g = find(rows, n, "linear nf4 gemm 160x64");
    const ps_cuda_profile_row *h = find(rows, n, "linear F16 gemv 300x64");
    TU_CHECK(g && g->calls == 2 * llama_get_config(f->m)->n_layers, "prefill: gate/up gemm row %lld calls",
             g ? (long long)g->calls : -1LL);
    /* lm_head runs on the one output row only: the gemv path */
    TU_CHECK(h && h->calls == 1, "prefill: lm_head gemv row %lld calls", h ? (long long)h->calls : -1LL);
    TU_CHECK(!find(rows, n, "linear nf4 gemv 160x64"), "prefill of 9 tokens took the gemv path");
    GU_OK(ps_cuda_profile_enable(gu_gpu, false, NULL, &gu_err), "disable");
}

static void check_api_edges(void) {
    ps_backend before;
    memcpy(&before, gu_gpu, sizeof before);
    ps_cuda_profile_opts bad[] = {{-1, 0}, {1001, 0}, {0, 1}, {0, 65537}};
    for (int i = 0; i < 4; i++)
        TU_CHECK(ps_cuda_profile_enable(gu_gpu, true, &bad[i], &gu_err) == PS_EINVAL,
                 "opts pad %d ring %d accepted", bad[i].pad_us, bad[i].ring);
    TU_CHECK(!memcmp(&before, gu_gpu, sizeof before), "refused options changed the table");
    TU_CHECK(ps_cuda_profile_enable(gu_cpu, true, NULL, &gu_err) == PS_EINVAL, "profiling the cpu backend");
    GU_OK(ps_cuda_profile_enable(gu_gpu, true, NULL, &gu_err), "enable");
    TU_CHECK(gu_gpu->linear != before.linear && gu_gpu->attention_dense != NULL, "enable did not wrap the table");
    GU_OK(ps_cuda_profile_enable(gu_gpu, true, &(ps_cuda_profile_opts){5, 16}, &gu_err), "re-enable");
    GU_OK(ps_cuda_profile_enable(gu_gpu, false, NULL, &gu_err), "disable");
    TU_CHECK(!memcmp(&before, gu_gpu, sizeof before), "disable left a wrapped table");
    GU_OK(ps_cuda_profile_enable(gu_gpu, false, NULL, &gu_err), "disable twice");
}

/* PS_CUDA_PROFILE=1 at create: counts from the start (one add, one sync). */
static void check_env(void) {
    setenv("PS_CUDA_PROFILE", "1", 1);
    setenv("PS_CUDA_PROFILE_PAD_US", "3", 1);
    ps_backend *be = NULL;
    ps_status st = ps_backend_cuda_create(0, &be, &gu_err);
    unsetenv("PS_CUDA_PROFILE");
    unsetenv("PS_CUDA_PROFILE_PAD_US");
    GU_OK(st, "create with PS_CUDA_PROFILE=1");
    if (st) return;
    float h[37];
    tu_rand_fill(h, 37, 5);
    void *d = NULL;
    GU_OK(ps_buf_alloc(be, sizeof h, &d, &gu_err), "alloc");
    GU_OK(ps_buf_upload(be, d, h, sizeof h, &gu_err), "upload");
    ps_tensor t = ps_tensor_1d(PS_DT_F32, 37, d, PS_DEV_CUDA);
    GU_OK(op_add(be, &t, &t, &gu_err), "add");
    GU_OK(ps_backend_sync(be, &gu_err), "sync");
    ps_cuda_profile_row rows[8];
    int n = 0;
    GU_OK(ps_cuda_profile_rows(be, rows, 8, &n, NULL, &gu_err), "rows");
    const ps_cuda_profile_row *a = find(rows, n, "add"), *s = find(rows, n, "sync"), *u = find(rows, n, "upload");
    TU_CHECK(n == 3 && a && a->calls == 1 && s && s->calls == 1 && s->device_ms == 0 && u &&
                 u->bytes == (int64_t)sizeof h,
             "env profile: %d rows (add %lld, sync %lld, upload %lld bytes)", n, a ? (long long)a->calls : -1LL,
             s ? (long long)s->calls : -1LL, u ? (long long)u->bytes : -1LL);
    ps_buf_free(be, d);
    ps_backend_destroy(be); /* logs the totals */
}

/* With the v6 GEMV of 8 warps, a decode step run op by op launches 3 L - 1
 * kernels fewer with the fused ops than without (per layer the MLP's
 * add_rmsnorm and silu_mul, and every layer's attention add_rmsnorm but the
 * first, which has no add), issues 2 L - 1 fused-norm and L gate/up + silu
 * launches, and gives the same logits bit for bit. */
static void check_fused_launches(fixture *f, int L, int V) {
    ps_cuda_tuning saved, t;
    GU_OK(ps_cuda_get_tuning(gu_gpu, &saved, &gu_err), "get tuning");
    t = saved;
    t.gemv_kernel = ps_cuda_gemv_find("v6w8r1u4"), t.graphs = false;
    long long k[2], norm[2], glu[2];
    float *logits[2] = {malloc(sizeof(float) * (size_t)V), malloc(sizeof(float) * (size_t)V)};
    for (int fuse = 0; fuse < 2; fuse++) {
        t.fuse = fuse;
        GU_OK(ps_cuda_set_tuning(gu_gpu, &t, &gu_err), "set tuning");
        ps_cuda_counters c0, c1;
        GU_OK(ps_cuda_get_counters(gu_gpu, &c0, &gu_err), "counters");
        GU_OK(step(f, 1, 9, &gu_err), "decode step");
        GU_OK(ps_cuda_get_counters(gu_gpu, &c1, &gu_err), "counters");
        k[fuse] = c1.kernels - c0.kernels, norm[fuse] = c1.fused_norm - c0.fused_norm;
        glu[fuse] = c1.fused_glu - c0.fused_glu;
        memcpy(logits[fuse], f->logits, sizeof(float) * (size_t)V);
    }
    printf("  decode step with v6, op by op: %lld kernels unfused, %lld fused (%lld with the norm, %lld with "
           "silu * up)\n", k[0], k[1], norm[1], glu[1]);
    TU_CHECK(k[0] - k[1] == 3 * L - 1 && norm[1] == 2 * L - 1 && glu[1] == L && norm[0] == 0 && glu[0] == 0,
             "fused launches: %lld - %lld kernels (want %d fewer), %lld norm and %lld glu launches (want %d, %d)", k[0],
             k[1], 3 * L - 1, norm[1], glu[1], 2 * L - 1, L);
    gu_check("logits fused == unfused (v6)", logits[1], logits[0], V, 0);
    GU_OK(ps_cuda_set_tuning(gu_gpu, &saved, &gu_err), "restore tuning");
    free(logits[0]), free(logits[1]);
}

int main(void) {
    gu_init();
    ps_cuda_info info;
    GU_OK(ps_cuda_get_info(gu_gpu, &info, &gu_err), "info");
    g_emulated = !strncmp(info.name, "CPU emulation", 13);
    ps_cuda_tuning tune;
    GU_OK(ps_cuda_get_tuning(gu_gpu, &tune, &gu_err), "get tuning");
    tune.sync_each_op = false; /* as in serving: ops queue, nothing waits inside a step */
    tune.linear_path = PS_CUDA_LINEAR_AUTO;
    tune.gemv_max_t = 4; /* the 9-token prefill takes the gemm path */
    GU_OK(ps_cuda_set_tuning(gu_gpu, &tune, &gu_err), "set tuning");
    check_api_edges();
    check_env();

    /* vocab hidden ffn layers heads kv head_dim max_pos eps theta tie bos eos */
    llama_config cfg = {300, 64, 160, 3, 4, 2, 24, 128, 1e-5f, 10000.0f, false, 1, 2};
    fixture f = {0};
    float *plain = malloc(sizeof(float) * cfg.vocab), *on = malloc(sizeof(float) * cfg.vocab),
          *pad = malloc(sizeof(float) * cfg.vocab);
    f.logits = malloc(sizeof(float) * cfg.vocab * 16);
    GU_OK(llama_init_random(&cfg, 77, LLAMA_QUANT_NF4, gu_gpu, &f.m, &gu_err), "random model");
    GU_OK(kv_cache_init(&f.kv, gu_gpu, &cfg, PAGE, MAX_PAGES, PS_DT_F32, &gu_err), "kv cache");
    for (int p = 0; p < MAX_PAGES; p++) f.pages[p] = kv_cache_alloc_page(&f.kv);
    if (f.m && f.kv.layers) {
        check_prefill_rows(&f);
        check_fused_launches(&f, cfg.n_layers, cfg.vocab);
        /* unprofiled reference: the same steps rewrite the same KV slots */
        for (int s = 0; s < NSTEPS; s++) GU_OK(step(&f, 1, 9 + s, &gu_err), "decode step");
        memcpy(plain, f.logits, sizeof(float) * cfg.vocab);
        profiled_decode(&f, "decode", NULL, on);
        profiled_decode(&f, "decode ring 8", &(ps_cuda_profile_opts){0, 8}, on);
        profiled_decode(&f, "decode pad", &(ps_cuda_profile_opts){PAD_US, 0}, pad);
        gu_check("logits profiled == plain", on, plain, cfg.vocab, 0);
        gu_check("logits padded == plain", pad, plain, cfg.vocab, 0);
        /* off: nothing counted; reset: nothing left */
        ps_cuda_profile_row rows[64];
        int n0 = 0, n1 = 0;
        GU_OK(ps_cuda_profile_rows(gu_gpu, rows, 64, &n0, NULL, &gu_err), "rows");
        int64_t c0 = rows[0].calls;
        GU_OK(step(&f, 1, 9, &gu_err), "decode step, profiler off");
        GU_OK(ps_cuda_profile_rows(gu_gpu, rows, 64, &n1, NULL, &gu_err), "rows");
        TU_CHECK(n0 == n1 && n1 > 0 && rows[0].calls == c0, "profiler off still counted (%d -> %d rows)", n0, n1);
        GU_OK(ps_cuda_profile_reset(gu_gpu, &gu_err), "reset");
        GU_OK(ps_cuda_profile_rows(gu_gpu, rows, 64, &n1, NULL, &gu_err), "rows");
        TU_CHECK(n1 == 0, "reset left %d rows", n1);
    }
    kv_cache_free(&f.kv);
    llama_free(f.m);
    free(f.logits), free(plain), free(on), free(pad);
    return gu_finish("cuda profile");
}
