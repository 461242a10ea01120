/* Benchmark of the CUDA backend (run by tests/gpu/run.sh; prints a table last).
 *  1. Device read bandwidth: a read kernel over 2 GiB (median of 10).
 *  2. NF4 GEMV / GEMM micro-benchmark on LLaMA-7B layer shapes (4096x4096,
 *     11008x4096, 4096x11008) and the F16 lm_head (32000x4096): random
 *     weights made on the device, enough copies rotated to defeat the L2
 *     cache, achieved GB/s against the measured bandwidth. Needs no model.
 *  3. (when engine/models/llama.h is in the tree) a random LLaMA-7B-shaped NF4
 *     model built on the device by llama_init_random: prefill tok/s at 512
 *     tokens, decode tok/s at batch 1, 8, 16, 32 (prompt 128 tokens, 32 timed
 *     steps), and the bandwidth floor of batch 1 (bytes read per token over the
 *     measured bandwidth, weights + KV at the mean context).
 *  4. (with the model) where a batch-1 decode step goes: a few more steps under
 *     the backend's per-op profiler (ps_cuda_profile_*): device time per op
 *     class against the wall time of 3., host time per op, upload/download,
 *     the device-idle rest, and the host sampler on one step's logits.
 *  5. (with the model) decode at context 2048 with an F32 and an F16 KV
 *     cache, batch 1 and 8.
 * Environment: PS_BENCH_LAYERS (default 32) shrinks the model for quick runs.
 * PS_BENCH_LONG_ONLY=1: the model and section 5 only.
 * PS_BENCH_GEMV_ONLY=1: only the bandwidth probe and a sweep of every NF4
 * GEMV configuration (ps_cuda_gemv_name) at T = 1, 2, 4, 8 on the three layer
 * shapes: one table (us, % of bandwidth) and the best configuration per T.
 * Multi-adapter ratio: adapters are a later issue; reported as n/a. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/status.h"
#include "ops.h"
#ifdef PS_HAVE_CUDA
#include "cuda/cuda_ext.h"
#endif
#if defined(__has_include)
#if __has_include("models/llama.h")
#include "models/llama.h"
#include "sampler.h"
#define BENCH_HAVE_LLAMA 1
#endif
#endif

#ifndef PS_HAVE_CUDA
int main(void) {
    printf("SKIP: built without the CUDA backend\n");
    return 77;
}
#else

static ps_backend *be;
static ps_err err;
static double g_bw; /* measured read bandwidth, GB/s */
/* PS_BENCH_SMOKE=1: every shape divided by 16 and few iterations, to check
 * the program itself quickly (the numbers mean nothing then) */
static int g_div = 1, g_iters = 1;
/* PS_BENCH_LONG_ONLY=1: the model and its long-context section only */
static bool g_long_only;

/* the summary table printed last */
#define MAX_ROWS 160
static char rows[MAX_ROWS][1024];
static int n_rows;
#define ROW(...) snprintf(rows[n_rows < MAX_ROWS ? n_rows++ : MAX_ROWS - 1], sizeof rows[0], __VA_ARGS__)

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define BENCH_TRY(call)                                                                   \
    do {                                                                                  \
        ps_status s_ = (call);                                                            \
        if (s_ != PS_OK) {                                                                \
            fprintf(stderr, "bench: %s failed: %s (%s)\n", #call, ps_status_name(s_), err.msg); \
            goto fail;                                                                    \
        }                                                                                 \
    } while (0)

/* ---- 2. GEMV micro-benchmark ---- */

typedef struct {
    void *block;  /* all copies */
    ps_weight *w; /* one per copy */
    int copies;
    size_t bytes_per_copy; /* bytes one GEMV pass reads of W */
} weight_set;

static void weight_set_free(weight_set *s) {
    ps_buf_free(be, s->block);
    free(s->w);
    memset(s, 0, sizeof *s);
}

/* NF4 + DQ weights (random codes and DQ codes, sane absmax2) or F16 weights
 * (random finite halves), `copies` of them in one allocation. */
static ps_status weight_set_init(weight_set *s, bool nf4, int64_t out, int64_t in, size_t min_total) {
    memset(s, 0, sizeof *s);
    int64_t n = out * in, nb = n / 64, nb2 = (nb + 255) / 256;
    size_t sp = (size_t)n / 2, sq = ((size_t)nb + 15) & ~(size_t)15, sa = sizeof(float) * (size_t)nb2;
    size_t per = nf4 ? ((sp + sq + sa + 255) & ~(size_t)255) : (size_t)n * 2;
    s->bytes_per_copy = nf4 ? sp + (size_t)nb + sa : (size_t)n * 2;
    s->copies = (int)((min_total + per - 1) / per);
    if (s->copies < 2) s->copies = 2;
    if (s->copies > 64) s->copies = 64;
    s->w = calloc((size_t)s->copies, sizeof(ps_weight));
    float *a2 = malloc(sa);
    uint16_t *h = NULL;
    ps_status st = s->w && a2 ? PS_OK : ps_errf(&err, PS_ENOMEM, "bench: host alloc");
    if (!st) st = ps_buf_alloc(be, per * (size_t)s->copies, &s->block, &err);
    if (!st) st = ps_cuda_fill_random_bytes(be, s->block, per * (size_t)s->copies, 99, &err);
    for (int64_t i = 0; i < nb2; i++) a2[i] = 0.01f + 0.001f * (float)(i % 7);
    if (!st && !nf4) { /* random bytes can be NaN/inf halves: upload finite ones */
        h = malloc((size_t)n * 2);
        if (!h) st = ps_errf(&err, PS_ENOMEM, "bench: host alloc");
        for (int64_t i = 0; !st && i < n; i++) h[i] = (uint16_t)(0x2000 + (i * 2654435761u) % 0x1800) ^ (uint16_t)((i & 1) << 15);
        for (int c = 0; !st && c < s->copies; c++)
            st = ps_buf_upload(be, (char *)s->block + per * (size_t)c, h, (size_t)n * 2, &err);
    }
    for (int c = 0; !st && c < s->copies; c++) {
        char *base = (char *)s->block + per * (size_t)c;
        ps_weight *w = &s->w[c];
        if (nf4) {
            w->kind = PS_WEIGHT_NF4;
            w->nf4 = (ps_nf4){out, in, (uint8_t *)base, (uint8_t *)(base + sp), (float *)(base + sp + sq),
                              0.02f, NULL, PS_DEV_CUDA};
            st = ps_buf_upload(be, base + sp + sq, a2, sa, &err);
        } else {
            w->kind = PS_WEIGHT_DENSE;
            w->dense = ps_tensor_2d(PS_DT_F16, out, in, base, PS_DEV_CUDA);
        }
    }
    free(a2);
    free(h);
    if (st) weight_set_free(s);
    return st;
}

static int g_gemv_kernel = PS_CUDA_GEMV_DEFAULT; /* the NF4 GEMV configuration time_linear uses */
static bool g_pdl;                                 /* and whether its launches use PDL */

static ps_status set_path(int path) {
    ps_cuda_tuning t;
    ps_status st = ps_cuda_get_tuning(be, &t, &err);
    if (st) return st;
    t.linear_path = path;
    t.gemv_kernel = g_gemv_kernel;
    t.pdl = g_pdl;
    t.sync_each_op = false;
    return ps_cuda_set_tuning(be, &t, &err);
}

/* Times `iters` linear calls of T rows over the rotating copies: us per call. */
static ps_status time_linear(weight_set *s, int64_t T, int path, int iters, double *us) {
    int64_t out = ps_weight_out(&s->w[0]), in = ps_weight_in(&s->w[0]);
    void *x = NULL, *y = NULL;
    float *hx = malloc(sizeof(float) * (size_t)(T * in));
    ps_cuda_timer *tm = NULL;
    double ms = 0;
    ps_status st = hx ? PS_OK : ps_errf(&err, PS_ENOMEM, "bench: host alloc");
    for (int64_t i = 0; hx && i < T * in; i++) hx[i] = (float)((i * 7919) % 2001) / 1000.0f - 1.0f;
    if (!st) st = ps_buf_alloc(be, sizeof(float) * (size_t)(T * in), &x, &err);
    if (!st) st = ps_buf_alloc(be, sizeof(float) * (size_t)(T * out), &y, &err);
    if (!st) st = ps_buf_upload(be, x, hx, sizeof(float) * (size_t)(T * in), &err);
    if (!st) st = set_path(path);
    ps_tensor tx = ps_tensor_2d(PS_DT_F32, T, in, x, PS_DEV_CUDA), ty = ps_tensor_2d(PS_DT_F32, T, out, y, PS_DEV_CUDA);
    for (int i = 0; !st && i < 3; i++) st = op_linear(be, &ty, &tx, &s->w[i % s->copies], &err); /* warm-up */
    if (!st) st = ps_backend_sync(be, &err);
    if (!st) st = ps_cuda_timer_start(be, &tm, &err);
    for (int i = 0; !st && i < iters; i++) st = op_linear(be, &ty, &tx, &s->w[i % s->copies], &err);
    if (tm) {
        ps_status s2 = ps_cuda_timer_stop(be, tm, &ms, &err);
        if (!st) st = s2;
    }
    *us = ms * 1e3 / iters;
    ps_buf_free(be, x);
    ps_buf_free(be, y);
    free(hx);
    set_path(PS_CUDA_LINEAR_AUTO);
    return st;
}

static void bench_layer(const char *name, bool nf4, int64_t out, int64_t in) {
    weight_set s;
    out /= g_div, in /= g_div;
    if (weight_set_init(&s, nf4, out, in, ((size_t)512 << 20) / ((size_t)g_div * g_div)) != PS_OK) {
        ROW("%-22s setup failed: %s", name, err.msg);
        return;
    }
    printf("%s: %d copies of %.1f MB rotated\n", name, s.copies, s.bytes_per_copy / 1e6);
    /* NF4: the simplest GEMV (v1), the default, the default with PDL (back-to-back
     * launches overlap: the fixed cost per launch) and the tensor-core v6 with PDL,
     * one block per tile and on a persistent grid, at decode batch sizes; F16:
     * its one kernel */
    static const int64_t gemv_T[] = {1, 2, 4, 8, 32};
    const struct {
        int k;
        bool pdl;
    } variants[] = {{ps_cuda_gemv_find("v1"), false},
                    {PS_CUDA_GEMV_DEFAULT, false},
                    {PS_CUDA_GEMV_DEFAULT, true},
                    {ps_cuda_gemv_find("v6w8r1u4"), true},
                    {ps_cuda_gemv_find("v6w8r1u4p1"), true}};
    for (int v = nf4 ? 0 : 1; v < (nf4 ? 5 : 2); v++) {
        g_gemv_kernel = variants[v].k, g_pdl = variants[v].pdl;
        for (int i = 0; i < 5; i++) {
            int64_t T = gemv_T[i];
            double us;
            char k[48] = "";
            if (nf4) snprintf(k, sizeof k, "%s%s", ps_cuda_gemv_name(g_gemv_kernel), g_pdl ? "+pdl" : "");
            if (time_linear(&s, T, PS_CUDA_LINEAR_GEMV, 200 / g_iters, &us) != PS_OK) {
                ROW("%-22s gemv%s T=%-3lld failed: %s", name, k, (long long)T, err.msg);
                continue;
            }
            int64_t per = ps_cuda_gemv_rows_per_launch(g_gemv_kernel); /* each chunk rereads W */
            int64_t passes = (T + per - 1) / per;
            double bytes = (double)s.bytes_per_copy * passes + 4.0 * T * (in + out);
            double gbs = bytes / (us * 1e-6) / 1e9;
            printf("  gemv%s T=%-3lld %8.2f us  %7.1f GB/s  %5.1f%% of %.0f GB/s\n", k, (long long)T, us, gbs,
                   100 * gbs / g_bw, g_bw);
            ROW("%-22s gemv%s T=%-3lld %8.2f us %7.1f GB/s %5.1f%% bw", name, k, (long long)T, us, gbs,
                100 * gbs / g_bw);
        }
    }
    g_gemv_kernel = PS_CUDA_GEMV_DEFAULT, g_pdl = false;
    static const int64_t gemm_T[] = {32, 512};
    for (int i = 0; i < 2; i++) {
        int64_t T = gemm_T[i];
        double us;
        if (time_linear(&s, T, PS_CUDA_LINEAR_GEMM, 50 / g_iters, &us) != PS_OK) {
            ROW("%-22s gemm T=%-3lld failed: %s", name, (long long)T, err.msg);
            continue;
        }
        double tflops = 2.0 * T * out * in / (us * 1e-6) / 1e12;
        printf("  gemm T=%-3lld %8.2f us  %7.1f TFLOP/s (dequant + cuBLAS bf16)\n", (long long)T, us, tflops);
        ROW("%-22s gemm T=%-3lld %8.2f us %7.1f TFLOP/s", name, (long long)T, us, tflops);
    }
    weight_set_free(&s);
}

/* ---- 2a. where a small kernel's time goes (PS_BENCH_PROBE=1) ----
 * A plain read kernel at the layer sizes, from DRAM (rotated over 512 MB)
 * and from L2 (two copies), against bytes / bandwidth: the fixed cost of a
 * launch. Then GEMV configurations at T = 1 with the weights from DRAM and
 * from L2: if L2-resident weights are not much faster, the kernel is bound
 * on chip (decode arithmetic, latency), not by DRAM. */
static int bench_probe(void) {
    static const double mb[] = {2, 4, 8.4, 22.5, 64, 256};
    printf("\n==== probe: read kernel, us per launch back to back (ideal = bytes / %.0f GB/s) ====\n", g_bw);
    for (int i = 0; i < 6; i++) {
        size_t bytes = (size_t)(mb[i] * 1e6 / g_div / g_div);
        int copies = (int)(512e6 / g_div / g_div / (double)bytes) + 1;
        double dram = 0, l2 = 0;
        if (copies > 64) copies = 64;
        if (ps_cuda_read_probe(be, bytes, copies, 200 / g_iters, &dram, &err) != PS_OK ||
            ps_cuda_read_probe(be, bytes, 2, 200 / g_iters, &l2, &err) != PS_OK) {
            printf("probe failed: %s\n", err.msg);
            return 1;
        }
        double ideal = (double)bytes / (g_bw * 1e3);
        printf("read %6.1f MB: DRAM %7.2f us (%4.0f%% of bw, %+6.2f us over ideal)   L2 (2 copies) %7.2f us\n",
               mb[i], dram, 100 * ideal / dram, dram - ideal, l2);
        ROW("probe read %6.1f MB      DRAM %7.2f us (%3.0f%%, +%.2f us)  L2 %7.2f us", mb[i], dram, 100 * ideal / dram,
            dram - ideal, l2);
    }
    static const int64_t shapes[2][2] = {{4096, 4096}, {11008, 4096}};
    const char *cfgs[] = {"v2", "v4s1r2u4", "v5w4r4u2p0", "v2w8r1"};
    printf("\n==== probe: NF4 GEMV T=1, weights from DRAM (rotated) vs L2 (2 copies) ====\n");
    for (int si = 0; si < 2; si++) {
        weight_set big, small;
        int64_t out = shapes[si][0] / g_div, in = shapes[si][1] / g_div;
        if (weight_set_init(&big, true, out, in, ((size_t)512 << 20) / ((size_t)g_div * g_div)) != PS_OK) return 1;
        if (weight_set_init(&small, true, out, in, 1) != PS_OK) return 1;
        for (int k = 0; k < 4; k++) {
            double ud = 0, ul = 0;
            g_gemv_kernel = ps_cuda_gemv_find(cfgs[k]);
            if (g_gemv_kernel < 0 || time_linear(&big, 1, PS_CUDA_LINEAR_GEMV, 200 / g_iters, &ud) != PS_OK ||
                time_linear(&small, 1, PS_CUDA_LINEAR_GEMV, 200 / g_iters, &ul) != PS_OK) {
                printf("probe gemv %s failed: %s\n", cfgs[k], err.msg);
                continue;
            }
            double ideal = (double)big.bytes_per_copy / (g_bw * 1e3);
            printf("gemv %-11s %lldx%lld: DRAM %7.2f us (%3.0f%%)   L2 %7.2f us   ideal %.2f us\n", cfgs[k],
                   (long long)out, (long long)in, ud, 100 * ideal / ud, ul, ideal);
            ROW("probe gemv %-10s %lldx%lld DRAM %6.2f us (%3.0f%%) L2 %6.2f us", cfgs[k], (long long)out,
                (long long)in, ud, 100 * ideal / ud, ul);
        }
        g_gemv_kernel = PS_CUDA_GEMV_DEFAULT;
        weight_set_free(&big);
        weight_set_free(&small);
    }
    printf("\n==== bench_cuda summary ====\n");
    for (int i = 0; i < n_rows; i++) printf("%s\n", rows[i]);
    return 0;
}

/* ---- 2b. GEMV configuration sweep (PS_BENCH_GEMV_ONLY=1) ---- */

#define SW_SHAPES 3
#define SW_TS 4
#define SW_MAX_CFG 64

/* Times every configuration at every T on each shape; prints one line per
 * (configuration, shape), then the best configuration per (shape, T) and per
 * T over the three shapes (smallest summed time). */
static int bench_gemv_sweep(void) {
    static const int64_t shapes[SW_SHAPES][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}};
    static const int64_t Ts[SW_TS] = {1, 2, 4, 8};
    static double us[SW_MAX_CFG][SW_SHAPES][SW_TS], pct[SW_MAX_CFG][SW_SHAPES][SW_TS];
    int ncfg = ps_cuda_gemv_count() < SW_MAX_CFG ? ps_cuda_gemv_count() : SW_MAX_CFG, rc = 0;
    for (int si = 0; si < SW_SHAPES; si++) {
        int64_t out = shapes[si][0] / g_div, in = shapes[si][1] / g_div;
        weight_set s;
        if (weight_set_init(&s, true, out, in, ((size_t)512 << 20) / ((size_t)g_div * g_div)) != PS_OK) {
            printf("sweep %lldx%lld: setup failed: %s\n", (long long)out, (long long)in, err.msg);
            return 1;
        }
        for (int k = 0; k < ncfg; k++)
            for (int ti = 0; ti < SW_TS; ti++) {
                int64_t T = Ts[ti];
                g_gemv_kernel = k;
                us[k][si][ti] = pct[k][si][ti] = -1;
                double t_us;
                if (time_linear(&s, T, PS_CUDA_LINEAR_GEMV, 200 / g_iters, &t_us) != PS_OK) {
                    printf("sweep %s %lldx%lld T=%lld failed: %s\n", ps_cuda_gemv_name(k), (long long)out,
                           (long long)in, (long long)T, err.msg);
                    rc = 1;
                    continue;
                }
                double bytes = (double)s.bytes_per_copy + 4.0 * T * (in + out);
                us[k][si][ti] = t_us;
                pct[k][si][ti] = 100 * bytes / (t_us * 1e-6) / 1e9 / g_bw;
            }
        weight_set_free(&s);
    }
    g_gemv_kernel = PS_CUDA_GEMV_DEFAULT;
    printf("\n==== NF4 GEMV sweep: us (%% of %.0f GB/s) ====\n%-10s %-11s", g_bw, "config", "shape");
    for (int ti = 0; ti < SW_TS; ti++) printf("   T=%-12lld", (long long)Ts[ti]);
    printf("\n");
    for (int k = 0; k < ncfg; k++)
        for (int si = 0; si < SW_SHAPES; si++) {
            char shp[32];
            snprintf(shp, sizeof shp, "%lldx%lld", (long long)shapes[si][0], (long long)shapes[si][1]);
            printf("%-10s %-11s", ps_cuda_gemv_name(k), shp);
            for (int ti = 0; ti < SW_TS; ti++)
                if (us[k][si][ti] < 0) printf("   %-14s", "failed");
                else printf("   %7.2f (%3.0f%%)", us[k][si][ti], pct[k][si][ti]);
            printf("\n");
        }
    printf("\n==== best configuration per T ====\n");
    for (int ti = 0; ti < SW_TS; ti++) {
        printf("T=%lld:", (long long)Ts[ti]);
        int best_all = -1;
        double best_sum = 0;
        for (int si = 0; si < SW_SHAPES; si++) {
            int b = -1;
            for (int k = 0; k < ncfg; k++)
                if (us[k][si][ti] >= 0 && (b < 0 || us[k][si][ti] < us[b][si][ti])) b = k;
            if (b >= 0)
                printf("  %lldx%lld %s %.2f us (%.0f%%)", (long long)shapes[si][0], (long long)shapes[si][1],
                       ps_cuda_gemv_name(b), us[b][si][ti], pct[b][si][ti]);
        }
        for (int k = 0; k < ncfg; k++) {
            double sum = 0;
            bool ok = true;
            for (int si = 0; si < SW_SHAPES; si++) ok = ok && us[k][si][ti] >= 0, sum += us[k][si][ti];
            if (ok && (best_all < 0 || sum < best_sum)) best_all = k, best_sum = sum;
        }
        if (best_all >= 0)
            printf("  | all three: %s %.2f us (default %s %.2f us)", ps_cuda_gemv_name(best_all), best_sum,
                   ps_cuda_gemv_name(PS_CUDA_GEMV_DEFAULT),
                   us[PS_CUDA_GEMV_DEFAULT][0][ti] + us[PS_CUDA_GEMV_DEFAULT][1][ti] + us[PS_CUDA_GEMV_DEFAULT][2][ti]);
        printf("\n");
    }
    return rc;
}

/* ---- 3. the 7B-shaped model ---- */

#ifdef BENCH_HAVE_LLAMA
static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One forward over T tokens: n_seqs sequences, each with n_new tokens starting
 * at KV position p0 (same for all), pages from `pages` (n_seqs x max_pages). */
static ps_status step(llama_model *m, kv_cache *kv, int n_seqs, int n_new, int p0, int max_pages,
                      const int32_t *pages, float *logits, uint64_t salt) {
    int T = n_seqs * n_new, vocab = llama_get_config(m)->vocab;
    int32_t *buf = malloc(sizeof(int32_t) * (size_t)(5 * T + n_seqs));
    if (!buf) return ps_errf(&err, PS_ENOMEM, "bench: host alloc");
    int32_t *ids = buf, *pos = ids + T, *seq = pos + T, *kvp = seq + T, *outr = kvp + T;
    for (int s = 0; s < n_seqs; s++)
        for (int k = 0; k < n_new; k++) {
            int t = s * n_new + k;
            ids[t] = 3 + (int32_t)((salt * 2654435761u + (uint64_t)t * 40503u) % (uint64_t)(vocab - 3));
            pos[t] = kvp[t] = p0 + k;
            seq[t] = s;
        }
    for (int s = 0; s < n_seqs; s++) outr[s] = s * n_new + n_new - 1; /* last token of each */
    llama_batch b = {T, ids, pos, seq, kvp, n_seqs, max_pages, pages, n_seqs, outr};
    ps_status st = llama_forward(m, kv, &b, logits, &err);
    free(buf);
    return st;
}

/* Kernels the first untimed step of the last bench_decode_tuned launched:
 * a step's kernels (op by op, or the ones a graph records). */
static long long g_step_kernels;

/* tok/s of G decode steps of batch B under tuning t (three untimed steps
 * first: they record the step graph when t.graphs). Positions repeat those
 * of the direct run (KV entries rewritten), so the context length is the same. */
static ps_status bench_decode_tuned(llama_model *m, kv_cache *kv, const ps_cuda_tuning *t, int B, int p0, int G,
                                    int ctx_pages, const int32_t *pages, float *logits, double *tps) {
    ps_status st = ps_cuda_set_tuning(be, t, &err); /* also drops recorded graphs: step 1 launches everything */
    ps_cuda_counters c0 = {0}, c1 = {0};
    ps_cuda_get_counters(be, &c0, &err);
    for (int g = 0; g < 3 && !st; g++) {
        st = step(m, kv, B, 1, p0 + g, ctx_pages, pages, logits, 40 + g);
        if (g == 0) ps_cuda_get_counters(be, &c1, &err);
    }
    g_step_kernels = c1.kernels - c0.kernels;
    double a = now_s();
    for (int g = 0; g < G && !st; g++) st = step(m, kv, B, 1, p0 + g, ctx_pages, pages, logits, 50 + g);
    *tps = st ? 0 : (double)B * G / (now_s() - a);
    return st;
}

/* Decode with step graphs (PS_CUDA_GRAPHS), then with split attention too,
 * with programmatic dependent launch (PS_CUDA_PDL) too, and with PDL and the
 * tensor-core GEMV v6 (bf16 operands; ps_cuda_gemv_bf16), one block per tile
 * and on a persistent grid. */
static ps_status bench_decode_graphs(llama_model *m, kv_cache *kv, int B, int p0, int G, int ctx_pages,
                                     const int32_t *pages, float *logits, double direct_tps) {
    ps_cuda_tuning t, saved;
    ps_status st = ps_cuda_get_tuning(be, &saved, &err);
    if (st) return st;
    t = saved;
    t.graphs = true;
    ps_cuda_counters g0 = {0}, g1 = {0};
    double tps = 0, tps_split = 0, tps_pdl = 0;
    ps_cuda_get_counters(be, &g0, &err);
    st = bench_decode_tuned(m, kv, &t, B, p0, G, ctx_pages, pages, logits, &tps);
    ps_cuda_get_counters(be, &g1, &err);
    ps_cuda_tuning ts = t;
    ts.attn_path = PS_CUDA_ATTN_SPLIT; /* the keys of each (token, head) over several blocks */
    if (!st) st = bench_decode_tuned(m, kv, &ts, B, p0, G, ctx_pages, pages, logits, &tps_split);
    ps_cuda_tuning tp = t;
    tp.pdl = true;
    if (!st) st = bench_decode_tuned(m, kv, &tp, B, p0, G, ctx_pages, pages, logits, &tps_pdl);
    /* and the tensor-core GEMV (bf16 operands) on top: its gain should grow with the batch */
    double tps_v6 = 0, tps_v6p = 0;
    ps_cuda_tuning t6 = tp;
    t6.gemv_kernel = ps_cuda_gemv_find("v6w8r1u4");
    /* v6 takes up to 32 rows in one launch: batches up to 32 stay on it (no dequantised copy) */
    int v6_rows = ps_cuda_gemv_rows_per_launch(t6.gemv_kernel);
    if (t6.gemv_max_t < v6_rows) t6.gemv_max_t = v6_rows;
    long long kern_pdl = g_step_kernels, kern_v6 = 0, kern_v6u = 0;
    if (!st && t6.gemv_kernel >= 0) st = bench_decode_tuned(m, kv, &t6, B, p0, G, ctx_pages, pages, logits, &tps_v6);
    kern_v6 = g_step_kernels;
    /* the same without the ops fused into its launches (the add + RMSNorm in
     * q/k/v and gate/up while x fits v6's staging, batches up to 4 at hidden
     * 4096; silu * up in gate/up up to 8) */
    double tps_v6u = 0;
    ps_cuda_counters f0 = {0}, f1 = {0};
    ps_cuda_tuning tu = t6;
    tu.fuse = false;
    if (!st && t6.gemv_kernel >= 0) st = bench_decode_tuned(m, kv, &tu, B, p0, G, ctx_pages, pages, logits, &tps_v6u);
    kern_v6u = g_step_kernels;
    ps_cuda_get_counters(be, &f0, &err);
    t6.gemv_kernel = ps_cuda_gemv_find("v6w8r1u4p1");
    if (!st && t6.gemv_kernel >= 0) st = bench_decode_tuned(m, kv, &t6, B, p0, G, ctx_pages, pages, logits, &tps_v6p);
    ps_cuda_get_counters(be, &f1, &err);
    ps_status st2 = ps_cuda_set_tuning(be, &saved, &err);
    if (st) return st;
    printf("  decode batch %2d with step graphs: %.2f ms/step, %.1f tok/s (%.2fx direct; %lld recorded, "
           "%lld graph launches); with split attention too: %.1f tok/s; with PDL too: %.1f tok/s; PDL and the "
           "v6w8r1u4 GEMV (up to 32 tokens, no dequantised copy): %.1f tok/s, %.1f tok/s without its fused ops; "
           "PDL and v6w8r1u4p1 (persistent): %.1f tok/s (its launches issued: %lld with the norm, %lld with "
           "silu * up fused in); kernels per step: %lld (default GEMV), %lld (v6), %lld (v6 unfused)\n",
           B, B / tps * 1e3, tps, tps / direct_tps, g1.graph_records - g0.graph_records,
           g1.graph_launches - g0.graph_launches, tps_split, tps_pdl, tps_v6, tps_v6u, tps_v6p,
           f1.fused_norm - f0.fused_norm, f1.fused_glu - f0.fused_glu, kern_pdl, kern_v6, kern_v6u);
    char what[40];
    snprintf(what, sizeof what, "decode batch %d, graphs", B);
    ROW("%-26s %8.1f tok/s (%.2fx op by op); + split attention %.1f tok/s (%.2fx); + PDL %.1f tok/s (%.2fx); "
        "PDL + v6 GEMV (bf16) %.1f tok/s (%.2fx; %.1f without its fused ops); persistent v6 %.1f tok/s (%.2fx)",
        what, tps, tps / direct_tps, tps_split, tps_split / direct_tps, tps_pdl, tps_pdl / direct_tps, tps_v6,
        tps_v6 / direct_tps, tps_v6u, tps_v6p, tps_v6p / direct_tps);
    return st2;
}

/* ---- 4. decode profile ---- */

#define PROF_ROWS 64
#define PROF_PAD_US 30      /* longer than the host needs to queue one op (a few us) */
#define PROF_PAD_CHECK_US 100 /* the same steps again: equal sums say 30 us was enough */

typedef struct {
    ps_cuda_profile_row r[PROF_ROWS];
    int n;
    double wall_ms; /* of the profiled steps, per step */
} prof_run;

/* nsteps decode steps of sequence 0 at positions p0.. under the profiler;
 * the plain run (pad 0) also prints the profiler's own report. */
static ps_status prof_steps(llama_model *m, kv_cache *kv, int max_pages, const int32_t *pages, float *logits,
                            int p0, int nsteps, int pad_us, prof_run *out) {
    ps_cuda_profile_opts o = {pad_us, 0};
    ps_status st = ps_cuda_profile_enable(be, true, &o, &err);
    if (!st) st = ps_cuda_profile_reset(be, &err);
    double a = now_s();
    for (int g = 0; !st && g < nsteps; g++) st = step(m, kv, 1, 1, p0 + g, max_pages, pages, logits, 40 + g);
    out->wall_ms = (now_s() - a) * 1e3 / nsteps;
    if (!st) st = ps_cuda_profile_rows(be, out->r, PROF_ROWS, &out->n, NULL, &err);
    if (out->n > PROF_ROWS) out->n = PROF_ROWS;
    if (!st && pad_us == 0) {
        printf("\n== decode batch 1, plain event pairs, against their own wall time ==\n");
        st = ps_cuda_profile_report(be, stdout, nsteps, out->wall_ms, &err);
    }
    ps_status s2 = ps_cuda_profile_enable(be, false, NULL, &err);
    return st ? st : s2;
}

static const ps_cuda_profile_row *prof_find(const prof_run *p, const char *name) {
    for (int k = 0; k < p->n; k++)
        if (!strcmp(p->r[k].name, name)) return &p->r[k];
    return NULL;
}

static double prof_sum(const prof_run *p, bool device) {
    double s = 0;
    for (int k = 0; k < p->n; k++) s += device ? p->r[k].device_ms : p->r[k].host_ms;
    return s;
}

/* Summary groups: 0 nf4 gemv, 1 dense linear (lm_head), 2 other linear
 * (gemm path), 3 attention, 4 upload + download, 5 the small ops. */
static int prof_group(const char *name) {
    if (!strncmp(name, "linear nf4 gemv", 15)) return 0;
    if (!strncmp(name, "linear", 6)) return strstr(name, "gemv") && !strstr(name, " nf4 ") ? 1 : 2;
    if (!strcmp(name, "attention")) return 3;
    if (!strcmp(name, "upload") || !strcmp(name, "download")) return 4;
    return 5;
}

/* Host time of one sampled token on `logits` (V floats): us per call. */
static double time_sampler(const float *logits, int V, const sampler_params *sp, int iters) {
    sampler_scratch sc;
    if (sampler_scratch_init(&sc, V, &err) != PS_OK) return -1;
    sampler_rng r;
    sampler_rng_seed(&r, 7);
    volatile int32_t sink = 0;
    double a = now_s();
    for (int i = 0; i < iters; i++) sink += sampler_sample(sp, &r, logits, &sc);
    double us = (now_s() - a) * 1e6 / iters;
    (void)sink;
    sampler_scratch_free(&sc);
    return us;
}

static int prof_cmp_device(const void *a, const void *b) {
    double x = ((const ps_cuda_profile_row *)a)->device_ms, y = ((const ps_cuda_profile_row *)b)->device_ms;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* One table, largest device time first: device time per op from the padded
 * run (the op alone), host time and pair time from the plain run; % of the
 * unprofiled wall time. */
static void prof_print(prof_run *pad, const prof_run *plain, int nsteps, double wall_ms) {
    printf("\n==== decode batch 1: where a step goes (%d profiled steps; wall %.3f ms/step unprofiled) ====\n",
           nsteps, wall_ms);
    printf("%-30s %6s %10s %7s %10s %10s\n", "op (device: padded run)", "calls", "device us", "% wall",
           "host us", "pair us");
    double dev = 0;
    qsort(pad->r, (size_t)pad->n, sizeof pad->r[0], prof_cmp_device);
    for (int k = 0; k < pad->n; k++) {
        const ps_cuda_profile_row *x = &pad->r[k], *y = prof_find(plain, x->name);
        dev += x->device_ms;
        printf("%-30s %6.1f %10.1f %7.1f %10.1f %10.1f\n", x->name, (double)x->calls / nsteps,
               x->device_ms * 1e3 / nsteps, 100 * x->device_ms / nsteps / wall_ms,
               y ? y->host_ms * 1e3 / nsteps : 0.0, y ? y->device_ms * 1e3 / nsteps : 0.0);
    }
    double pd = prof_sum(plain, true) / nsteps, ph = prof_sum(plain, false) / nsteps;
    printf("%-30s %6s %10.1f %7.1f %10.1f %10.1f\n", "all ops", "", dev * 1e3 / nsteps,
           100 * dev / nsteps / wall_ms, ph * 1e3, pd * 1e3);
    printf("%-30s %6s %10.1f %7.1f\n", "device idle (wall - all ops)", "", (wall_ms - dev / nsteps) * 1e3,
           100 * (wall_ms - dev / nsteps) / wall_ms);
    printf("(host us: inside the backend call, from the plain run; download's includes waiting for the\n"
           " stream. pair us: the plain run's event pairs, which also hold launch stalls when the host is\n"
           " behind. The plain run took %.3f ms/step: the profiler's own overhead is the rest.)\n",
           plain->wall_ms);
}

static void bench_decode_profile(llama_model *m, kv_cache *kv, int max_pages, const int32_t *pages,
                                 float *logits, int p0, int nsteps, double wall_ms) {
    const llama_config *c = llama_get_config(m);
    static prof_run plain, pad, pad2;
    if (prof_steps(m, kv, max_pages, pages, logits, p0, nsteps, 0, &plain) ||
        prof_steps(m, kv, max_pages, pages, logits, p0, nsteps, PROF_PAD_US, &pad) ||
        prof_steps(m, kv, max_pages, pages, logits, p0, nsteps, PROF_PAD_CHECK_US, &pad2)) {
        ROW("decode b1 profile          failed: %s", err.msg);
        return;
    }
    prof_print(&pad, &plain, nsteps, wall_ms);
    double g[6] = {0}, gc[6] = {0};
    int64_t lin = 0;
    for (int k = 0; k < pad.n; k++) {
        int i = prof_group(pad.r[k].name);
        g[i] += pad.r[k].device_ms / nsteps;
        gc[i] += (double)pad.r[k].calls / nsteps;
        if (!strncmp(pad.r[k].name, "linear", 6)) lin += pad.r[k].calls;
    }
    double dev = prof_sum(&pad, true) / nsteps, dev2 = prof_sum(&pad2, true) / nsteps;
    double host = prof_sum(&plain, false) / nsteps;
    const ps_cuda_profile_row *dl = prof_find(&plain, "download");
    double dl_host = dl ? dl->host_ms / nsteps : 0;
    int64_t want_lin = 7LL * c->n_layers + 1;
    ROW("decode b1 profile          ops %.3f ms of %.3f ms wall (%.1f%%), device idle %.3f ms; pad %d/%d us: %.3f/%.3f ms",
        dev, wall_ms, 100 * dev / wall_ms, wall_ms - dev, PROF_PAD_US, PROF_PAD_CHECK_US, dev, dev2);
    ROW("  nf4 gemv %.0f/step %.3f ms | lm_head %.3f ms | attention %.3f ms | small ops %.0f/step %.3f ms",
        gc[0], g[0], g[1], g[3], gc[5], g[5]);
    ROW("  upload+download %.1f us | host in backend calls %.3f ms/step (+ download call %.3f incl. wait) | linear calls/step %.1f %s",
        g[4] * 1e3, host - dl_host, dl_host, (double)lin / nsteps,
        lin == want_lin * nsteps ? "(= 7L+1)" : "(MISMATCH: expected 7L+1)");
    if (g[2] > 0) ROW("  other linear (gemm path) %.3f ms", g[2]);
    sampler_params top_p = {0.8f, 0.9f, 0}, greedy = {0.0f, 1.0f, 0};
    int iters = 200 / g_iters < 4 ? 4 : 200 / g_iters;
    double us_p = time_sampler(logits, c->vocab, &top_p, iters), us_g = time_sampler(logits, c->vocab, &greedy, iters);
    printf("host sampler on one step's logits (V=%d): top-p 0.9 T=0.8 %.1f us, greedy %.1f us\n", c->vocab, us_p,
           us_g);
    ROW("  host sampling (not in the step above) top-p %.1f us, greedy %.1f us per token (V=%d)", us_p, us_g,
        c->vocab);
}

/* Batch-1 decode, end to end, with every NF4 GEMV configuration (step graphs
 * on, so launch costs do not hide kernel differences): which one the default
 * should be. A few milliseconds of device time per configuration. */
static ps_status bench_decode_configs(llama_model *m, kv_cache *kv, int p0, int G, int ctx_pages,
                                      const int32_t *pages, float *logits, double floor_tps) {
    ps_cuda_tuning saved, t;
    ps_status st = ps_cuda_get_tuning(be, &saved, &err);
    if (st) return st;
    int n = ps_cuda_gemv_count(), best = -1;
    double best_tps = 0, default_tps = 0;
    printf("  decode batch 1 by GEMV configuration (step graphs on):\n");
    for (int k = 0; k < n && !st; k++) {
        t = saved;
        t.gemv_kernel = k;
        t.graphs = true;
        double tps;
        if ((st = bench_decode_tuned(m, kv, &t, 1, p0, G, ctx_pages, pages, logits, &tps))) break;
        printf("    %-10s %7.1f tok/s  %5.1f%% of the floor\n", ps_cuda_gemv_name(k), tps, 100 * tps / floor_tps);
        if (tps > best_tps) best_tps = tps, best = k;
        if (k == PS_CUDA_GEMV_DEFAULT) default_tps = tps;
    }
    ps_status st2 = ps_cuda_set_tuning(be, &saved, &err);
    if (st) return st;
    ROW("decode b1, graphs, best GEMV %8.1f tok/s = %.1f%% of the floor (%s; default %s %.1f tok/s)", best_tps,
        100 * best_tps / floor_tps, ps_cuda_gemv_name(best), ps_cuda_gemv_name(PS_CUDA_GEMV_DEFAULT), default_tps);
    return st2;
}

/* Bytes of F32 K and V one decoded token reads at context ctx. */
static double kv_f32_bytes(const llama_config *c, double ctx) {
    return 2.0 * c->n_layers * c->n_kv_heads * c->head_dim * 4.0 * ctx;
}

/* Decode at a long context (2048 tokens, where a 7B model's F32 KV cache
 * weighs 2.1 GB per sequence and token, more than half its NF4 weights) with
 * an F32 and an F16 cache (--kv-dtype), batch 1 and 8, step graphs on: what
 * the 16-bit cache saves where the attention reads dominate. */
static void bench_long_context(llama_model *m, const llama_config *cfg) {
    enum { BL = 8 };
    const int ctx = 2048 / g_div, G = 32 / g_div < 2 ? 2 : 32 / g_div, chunk = 64 / g_div < 1 ? 1 : 64 / g_div;
    const int ctx_pages = (ctx + G + 3 + 15) / 16;
    static const ps_dtype dts[2] = {PS_DT_F32, PS_DT_F16};
    double tps[2][2] = {{0}};
    ps_cuda_tuning saved, t;
    if (ps_cuda_get_tuning(be, &saved, &err) != PS_OK) return;
    t = saved;
    t.graphs = true;
    ps_status st = PS_OK;
    for (int di = 0; di < 2 && !st; di++) {
        kv_cache kv = {0};
        int32_t *pages = malloc(sizeof(int32_t) * (size_t)BL * ctx_pages);
        float *logits = malloc(sizeof(float) * (size_t)BL * cfg->vocab);
        st = pages && logits ? kv_cache_init(&kv, be, cfg, 16, BL * ctx_pages, dts[di], &err)
                             : ps_errf(&err, PS_ENOMEM, "bench: host alloc");
        for (int i = 0; !st && i < BL * ctx_pages; i++) pages[i] = kv_cache_alloc_page(&kv);
        for (int p0 = 0; !st && p0 < ctx; p0 += chunk) /* the prompts, 8 x chunk tokens a step */
            st = step(m, &kv, BL, ctx - p0 < chunk ? ctx - p0 : chunk, p0, ctx_pages, pages, logits, 70 + p0);
        if (!st) st = bench_decode_tuned(m, &kv, &t, 1, ctx, G, ctx_pages, pages, logits, &tps[di][0]);
        if (!st) st = bench_decode_tuned(m, &kv, &t, BL, ctx, G, ctx_pages, pages, logits, &tps[di][1]);
        kv_cache_free(&kv);
        free(pages), free(logits);
    }
    ps_cuda_set_tuning(be, &saved, &err);
    if (st) {
        ROW("decode at context %d: failed: %s", ctx, err.msg);
        return;
    }
    double kv_tok = kv_f32_bytes(cfg, ctx);
    printf("  decode at context %d (graphs): F32 KV b1 %.1f tok/s, b%d %.1f tok/s; F16 KV b1 %.1f tok/s (%.2fx), "
           "b%d %.1f tok/s (%.2fx); KV read per token %.2f GB (F32)\n", ctx, tps[0][0], BL, tps[0][1], tps[1][0],
           tps[1][0] / tps[0][0], BL, tps[1][1], tps[1][1] / tps[0][1], kv_tok / 1e9);
    ROW("decode ctx %d, graphs    F32 KV b1 %.1f b%d %.1f tok/s | F16 KV b1 %.1f (%.2fx) b%d %.1f tok/s (%.2fx)", ctx,
        tps[0][0], BL, tps[0][1], tps[1][0], tps[1][0] / tps[0][0], BL, tps[1][1], tps[1][1] / tps[0][1]);
}

static void bench_model(void) {
    const char *env = getenv("PS_BENCH_LAYERS");
    int L = env && atoi(env) > 0 ? atoi(env) : 32;
    int d = g_div;
    llama_config cfg = {32000 / d, 4096 / d, 11008 / d, L, 32 / d, 32 / d, 128, 4096, 1e-5f, 10000.0f, false, 1, 2};
    enum { WARM = 2, BMAX = 32 };
    const int P = 128 / d, G = 32 / d < 2 ? 2 : 32 / d, PF = 512 / d;
    int ctx_pages = (P + G + WARM + 15) / 16, pf_pages = PF / 16;
    llama_model *m = NULL;
    kv_cache kv = {0};
    bool done = false;
    memset(&err, 0, sizeof err);
    int32_t *pages = NULL;
    float *logits = NULL;
    double t0 = now_s();
    printf("model: LLaMA-7B shape (hidden 4096, ffn 11008, %d layers, 32 heads), random NF4+DQ\n", L);
    BENCH_TRY(llama_init_random(&cfg, 1234, LLAMA_QUANT_NF4, be, &m, &err));
    double init_s = now_s() - t0;
    int64_t wbytes = llama_weight_bytes(m), tok_bytes = llama_decode_bytes_per_token(m);
    printf("  llama_init_random: %.1f s, %.2f GB resident, %.3f GB read per decoded token\n", init_s,
           wbytes / 1e9, tok_bytes / 1e9);
    ROW("model init (host+upload)   %.1f s, %.2f GB weights", init_s, wbytes / 1e9);
    if (g_long_only) {
        bench_long_context(m, &cfg);
        done = true;
        goto fail;
    }
    int n_pages = BMAX * ctx_pages + pf_pages + 4;
    BENCH_TRY(kv_cache_init(&kv, be, &cfg, 16, n_pages, PS_DT_F32, &err));
    pages = malloc(sizeof(int32_t) * (size_t)n_pages);
    logits = malloc(sizeof(float) * (size_t)BMAX * cfg.vocab);
    if (!pages || !logits) {
        ps_errf(&err, PS_ENOMEM, "bench: host alloc");
        goto fail;
    }
    for (int i = 0; i < n_pages; i++) pages[i] = kv_cache_alloc_page(&kv);

    /* prefill 512 tokens of one sequence (pages after the decode pages) */
    double pf[3];
    BENCH_TRY(step(m, &kv, 1, PF, 0, pf_pages, pages + BMAX * ctx_pages, logits, 1)); /* warm-up */
    for (int r = 0; r < 3; r++) {
        double a = now_s();
        BENCH_TRY(step(m, &kv, 1, PF, 0, pf_pages, pages + BMAX * ctx_pages, logits, 2 + r));
        pf[r] = now_s() - a;
    }
    qsort(pf, 3, sizeof(double), cmp_d);
    printf("  prefill %d: %.1f ms, %.0f tok/s\n", PF, pf[1] * 1e3, PF / pf[1]);
    ROW("prefill 512 tokens         %8.0f tok/s (%.1f ms)", PF / pf[1], pf[1] * 1e3);

    static const int batches[] = {1, 8, 16, 32};
    for (int bi = 0; bi < 4; bi++) {
        int B = batches[bi];
        BENCH_TRY(step(m, &kv, B, P, 0, ctx_pages, pages, logits, 10 + B)); /* prompts */
        for (int g = 0; g < WARM; g++) BENCH_TRY(step(m, &kv, B, 1, P + g, ctx_pages, pages, logits, 20 + g));
        double a = now_s();
        for (int g = 0; g < G; g++) BENCH_TRY(step(m, &kv, B, 1, P + WARM + g, ctx_pages, pages, logits, 30 + g));
        double dt = now_s() - a, tps = (double)B * G / dt;
        printf("  decode batch %2d: %.2f ms/step, %.1f tok/s\n", B, dt / G * 1e3, tps);
        if (B == 1) {
            double ctx = P + WARM + G / 2.0; /* mean context of the timed steps */
            double kv_bytes = kv_f32_bytes(&cfg, ctx);
            double floor_w = g_bw * 1e9 / (double)tok_bytes;
            double floor_all = g_bw * 1e9 / ((double)tok_bytes + kv_bytes);
            printf("  floor batch 1: %.3f GB weights + %.3f GB KV per token at %.0f GB/s -> %.1f tok/s "
                   "(weights only %.1f); measured = %.1f%% of the floor\n",
                   tok_bytes / 1e9, kv_bytes / 1e9, g_bw, floor_all, floor_w, 100 * tps / floor_all);
            ROW("decode batch 1             %8.1f tok/s | floor %.1f tok/s (%.3f GB/tok) = %.1f%% (target 70%%)",
                tps, floor_all, ((double)tok_bytes + kv_bytes) / 1e9, 100 * tps / floor_all);
            /* the same positions again (rewriting the same KV slots) */
            bench_decode_profile(m, &kv, ctx_pages, pages, logits, P + WARM, G < 8 ? G : 8, dt / G * 1e3);
        } else {
            ROW("decode batch %-2d            %8.1f tok/s (%.2f ms/step)", B, tps, dt / G * 1e3);
        }
        BENCH_TRY(bench_decode_graphs(m, &kv, B, P + WARM, G, ctx_pages, pages, logits, tps));
    }
    { /* last: a configuration failing on the device cannot cost the numbers above */
        double kv_bytes = kv_f32_bytes(&cfg, P + WARM + G / 2.0);
        BENCH_TRY(bench_decode_configs(m, &kv, P + WARM, G, ctx_pages, pages, logits,
                                       g_bw * 1e9 / ((double)tok_bytes + kv_bytes)));
    }
    kv_cache_free(&kv); /* its memory back before the long-context caches */
    bench_long_context(m, &cfg);
    done = true;
fail:
    if (!done) ROW("model benchmark failed: %s", err.msg);
    free(pages);
    free(logits);
    kv_cache_free(&kv);
    llama_free(m);
}
#endif

int main(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (ps_backend_cuda_create(0, &be, &err) != PS_OK) {
        printf("SKIP: no CUDA backend: %s\n", err.msg);
        return 77;
    }
    ps_cuda_info info;
    if (ps_cuda_get_info(be, &info, &err) == PS_OK)
        printf("device: %s, %d SMs, %.1f GiB (%.1f free), L2 %.0f MB\n", info.name, info.sm_count,
               info.total_mem / 1073741824.0, info.free_mem / 1073741824.0, info.l2_bytes / 1e6);
    const char *smoke = getenv("PS_BENCH_SMOKE");
    if (smoke && atoi(smoke) > 0) g_div = 16, g_iters = 25;
    if (ps_cuda_read_bandwidth(be, ((size_t)2 << 30) / ((size_t)g_div * g_div), 10, &g_bw, &err) != PS_OK) {
        printf("bandwidth probe failed: %s\n", err.msg);
        ps_backend_destroy(be);
        return 1;
    }
    printf("device read bandwidth: %.0f GB/s (2 GiB read kernel, median of 10)\n", g_bw);
    { /* the direct ("op by op") measurements: no step graphs (the graph sections turn them on) */
        ps_cuda_tuning t;
        if (ps_cuda_get_tuning(be, &t, &err) == PS_OK) t.graphs = false, ps_cuda_set_tuning(be, &t, &err);
    }
    ROW("device read bandwidth      %.0f GB/s (%s)", g_bw, info.name);
    const char *probe = getenv("PS_BENCH_PROBE");
    if (probe && atoi(probe) > 0) {
        int rc = bench_probe();
        ps_backend_destroy(be);
        return rc;
    }
    const char *only = getenv("PS_BENCH_GEMV_ONLY");
    if (only && atoi(only) > 0) {
        int rc = bench_gemv_sweep();
        if (ps_cuda_health(be, &err) != PS_OK) printf("CUDA backend unhealthy: %s\n", err.msg), rc = 1;
        ps_backend_destroy(be);
        return rc;
    }
    const char *long_only = getenv("PS_BENCH_LONG_ONLY");
    g_long_only = long_only && atoi(long_only) > 0;
    if (!g_long_only) {
        bench_layer("nf4 4096x4096", true, 4096, 4096);
        bench_layer("nf4 11008x4096", true, 11008, 4096);
        bench_layer("nf4 4096x11008", true, 4096, 11008);
        bench_layer("f16 lm_head 32000x4096", false, 32000, 4096);
    }
#ifdef BENCH_HAVE_LLAMA
    bench_model();
#else
    ROW("model benchmark            skipped: engine/models/llama.h not in this tree");
#endif
    int rc = ps_cuda_health(be, &err) == PS_OK ? 0 : 1;
    if (rc) ROW("CUDA backend unhealthy: %s", err.msg);
    ps_backend_destroy(be);
    printf("\n==== bench_cuda summary ====\n");
    for (int i = 0; i < n_rows; i++) printf("%s\n", rows[i]);
    return rc;
}
#endif
