/* Benchmark of the CPU linear layer (not a ctest; run by hand):
 *  - this machine's memory bandwidth: a streaming read of a buffer much
 *    larger than the last-level cache, best of several runs, per thread count;
 *  - NF4 + double-quant decode GEMV (T == 1) at LLaMA-7B and TinyLlama layer
 *    shapes, as GB/s of weight bytes read (packed + absmax_q8 + absmax2) and
 *    as a share of the measured bandwidth. Each shape is copied enough times
 *    to exceed the LLC and the copies are used in turn, as a model's
 *    successive layers would be, so the weights really come from DRAM;
 *  - F16 GEMV (an lm_head), small-batch decode (T = 4, 16), and prefill
 *    GFLOP/s at T = 128 and 512.
 *
 * The machine may be shared: each timing is the best of several runs, and
 * "cpu%" says how much of its threads' time the best run really got
 * (process CPU time / (wall time * threads)); well below 100% means other
 * work competed and the number understates what the code can do.
 *
 * usage: bench_linear [--quick] [--reps N]   (timed runs per number, default 5;
 *        --quick: 2; more runs find quieter moments on a busy machine) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cpu/cpu_backend.h"
#include "math/half.h"
#include "nf4_quant.h"
#include "ops.h"

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#define BENCH_BW_BYTES ((size_t)1 << 29)   /* 512 MiB, 16x a 32 MiB LLC */
#define BENCH_ROTATE_BYTES ((size_t)256 << 20) /* weight copies in rotation */

static int reps = 5;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu_s(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return (double)(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
           1e-6 * (double)(r.ru_utime.tv_usec + r.ru_stime.tv_usec);
}

/* The best of several timed runs and the CPU share it got. */
typedef struct {
    double best_s, cpu_share;
} bench_time;

static void bench_time_add(bench_time *bt, double wall, double cpu, int threads) {
    if (bt->best_s == 0 || wall < bt->best_s) {
        bt->best_s = wall;
        bt->cpu_share = cpu / (wall * threads);
    }
}

static void fill_rand(float *x, int64_t n, uint64_t seed) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        x[i] = (float)((double)(s >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
    }
}

/* ---- memory bandwidth ---- */

typedef struct {
    const uint64_t *buf;
    int64_t words_per_chunk;
    uint64_t sink[256];
} bw_job;

static void bw_read(void *ctx, int64_t c0, int64_t c1) {
    bw_job *j = ctx;
    const uint64_t *p = j->buf + c0 * j->words_per_chunk;
    int64_t n = (c1 - c0) * j->words_per_chunk;
#ifdef __AVX512F__
    __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
    for (int64_t i = 0; i + 32 <= n; i += 32) {
        a = _mm512_xor_si512(a, _mm512_load_si512(p + i));
        b = _mm512_xor_si512(b, _mm512_load_si512(p + i + 8));
        c = _mm512_xor_si512(c, _mm512_load_si512(p + i + 16));
        d = _mm512_xor_si512(d, _mm512_load_si512(p + i + 24));
    }
    uint64_t s = (uint64_t)_mm512_reduce_add_epi64(
        _mm512_xor_si512(_mm512_xor_si512(a, b), _mm512_xor_si512(c, d)));
#elif defined(__AVX2__)
    __m256i a = _mm256_setzero_si256(), b = a, c = a, d = a;
    for (int64_t i = 0; i + 16 <= n; i += 16) {
        a = _mm256_xor_si256(a, _mm256_load_si256((const __m256i *)(p + i)));
        b = _mm256_xor_si256(b, _mm256_load_si256((const __m256i *)(p + i + 4)));
        c = _mm256_xor_si256(c, _mm256_load_si256((const __m256i *)(p + i + 8)));
        d = _mm256_xor_si256(d, _mm256_load_si256((const __m256i *)(p + i + 12)));
    }
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, _mm256_xor_si256(_mm256_xor_si256(a, b), _mm256_xor_si256(c, d)));
    uint64_t s = lanes[0] ^ lanes[1] ^ lanes[2] ^ lanes[3];
#else
    uint64_t s = 0;
    for (int64_t i = 0; i < n; i++) s ^= p[i];
#endif
    j->sink[c0 % 256] = s;
}

static bench_time bench_bandwidth(ps_backend *be) {
    uint64_t *buf = aligned_alloc(64, BENCH_BW_BYTES);
    memset(buf, 1, BENCH_BW_BYTES);
    bw_job j = {.buf = buf, .words_per_chunk = (int64_t)(BENCH_BW_BYTES / 8 / 64)};
    bench_time bt = {0};
    for (int r = 0; r < 2 * reps + 1; r++) {
        double t0 = now_s(), c0 = cpu_s();
        cpu_parallel_for(be, 64, bw_read, &j);
        if (r > 0) bench_time_add(&bt, now_s() - t0, cpu_s() - c0, cpu_threads(be));
    }
    free(buf);
    return bt;
}

/* ---- linear layers ---- */

typedef struct {
    int n_copies;
    nf4_host *q;       /* NF4 copies, or */
    uint16_t **dense;  /* F16 copies */
    int64_t out, in;
    size_t bytes;      /* weight bytes read per call */
} bench_weights;

static void weights_nf4(bench_weights *bw, int64_t out, int64_t in) {
    memset(bw, 0, sizeof *bw);
    bw->out = out, bw->in = in;
    int64_t n = out * in;
    float *w = malloc(sizeof(float) * (size_t)n);
    fill_rand(w, n, 7);
    nf4_host q0;
    ps_err err;
    if (nf4_quantize(w, out, in, true, &q0, &err) != PS_OK) {
        fprintf(stderr, "quantise: %s\n", err.msg);
        exit(1);
    }
    free(w);
    int64_t nb = nf4_n_blocks(n), nb2 = nf4_n_blocks2(n);
    bw->bytes = (size_t)((n + 1) / 2 + nb + 4 * nb2);
    bw->n_copies = (int)(BENCH_ROTATE_BYTES / bw->bytes) + 1;
    bw->q = calloc((size_t)bw->n_copies, sizeof(nf4_host));
    for (int c = 0; c < bw->n_copies; c++) {
        nf4_host *q = &bw->q[c];
        *q = q0;
        q->packed = malloc((size_t)(n + 1) / 2);
        q->absmax_q8 = malloc((size_t)nb);
        q->absmax2 = malloc(sizeof(float) * (size_t)nb2);
        memcpy(q->packed, q0.packed, (size_t)(n + 1) / 2);
        memcpy(q->absmax_q8, q0.absmax_q8, (size_t)nb);
        memcpy(q->absmax2, q0.absmax2, sizeof(float) * (size_t)nb2);
    }
    nf4_host_free(&q0);
}

static void weights_f16(bench_weights *bw, int64_t out, int64_t in) {
    memset(bw, 0, sizeof *bw);
    bw->out = out, bw->in = in;
    int64_t n = out * in;
    bw->bytes = (size_t)n * 2;
    bw->n_copies = (int)(BENCH_ROTATE_BYTES / bw->bytes) + 1;
    bw->dense = calloc((size_t)bw->n_copies, sizeof(uint16_t *));
    for (int c = 0; c < bw->n_copies; c++) {
        bw->dense[c] = malloc(bw->bytes);
        for (int64_t i = 0; i < n; i++)
            bw->dense[c][i] = ps_f32_to_f16((float)((i * 37 + c) % 101) * 0.01f - 0.5f);
    }
}

static void weights_free(bench_weights *bw) {
    for (int c = 0; c < bw->n_copies; c++) {
        if (bw->q) nf4_host_free(&bw->q[c]);
        if (bw->dense) free(bw->dense[c]);
    }
    free(bw->q);
    free(bw->dense);
}

static ps_weight weight_at(const bench_weights *bw, int c) {
    ps_weight w = {0};
    if (bw->q) {
        w.kind = PS_WEIGHT_NF4;
        w.nf4 = nf4_host_view(&bw->q[c]);
    } else {
        w.kind = PS_WEIGHT_DENSE;
        w.dense = ps_tensor_2d(PS_DT_F16, bw->out, bw->in, bw->dense[c], PS_DEV_CPU);
    }
    return w;
}

/* Seconds per call, best over passes; each pass walks all copies once. */
static bench_time bench_calls(ps_backend *be, const bench_weights *bw, int64_t T, int copies) {
    float *x = malloc(sizeof(float) * (size_t)(T * bw->in));
    float *y = malloc(sizeof(float) * (size_t)(T * bw->out));
    fill_rand(x, T * bw->in, 3);
    ps_tensor tx = ps_tensor_2d(PS_DT_F32, T, bw->in, x, PS_DEV_CPU);
    ps_tensor ty = ps_tensor_2d(PS_DT_F32, T, bw->out, y, PS_DEV_CPU);
    ps_err err;
    bench_time bt = {0};
    for (int r = 0; r < reps + 1; r++) {
        double t0 = now_s(), c0 = cpu_s();
        for (int c = 0; c < copies; c++) {
            ps_weight w = weight_at(bw, c);
            if (op_linear(be, &ty, &tx, &w, &err) != PS_OK) {
                fprintf(stderr, "linear: %s\n", err.msg);
                exit(1);
            }
        }
        if (r > 0) bench_time_add(&bt, (now_s() - t0) / copies, (cpu_s() - c0) / copies,
                                  cpu_threads(be));
    }
    free(x);
    free(y);
    return bt;
}

static void print_gemv(const char *name, const bench_weights *w, ps_backend *be, double bw) {
    bench_time t = bench_calls(be, w, 1, w->n_copies);
    double gbs = (double)w->bytes / t.best_s / 1e9;
    printf("%-6s %5lld x %-5lld   %7d %10.1f %8.1f %8.0f%% %6.0f%%\n", name, (long long)w->out,
           (long long)w->in, cpu_threads(be), t.best_s * 1e6, gbs, 100.0 * gbs / bw,
           100.0 * t.cpu_share);
}

int main(int argc, char **argv) {
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--quick") == 0) reps = 2;
        else if (strcmp(argv[a], "--reps") == 0 && a + 1 < argc) reps = atoi(argv[++a]);
        else {
            fprintf(stderr, "usage: %s [--quick] [--reps N]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    ps_backend *be[2];
    ps_err err;
    for (int i = 0; i < 2; i++)
        if (ps_backend_cpu_create(i + 1, &be[i], &err) != PS_OK) {
            fprintf(stderr, "backend: %s\n", err.msg);
            return 1;
        }
    double bw[2];
    printf("memory bandwidth, streaming read of %zu MiB, best of %d:\n", BENCH_BW_BYTES >> 20,
           2 * reps);
    for (int i = 0; i < 2; i++) {
        bench_time t = bench_bandwidth(be[i]);
        bw[i] = (double)BENCH_BW_BYTES / t.best_s / 1e9;
        printf("  %d thread(s): %5.1f GB/s (cpu%% %3.0f)\n", i + 1, bw[i], 100.0 * t.cpu_share);
    }

    static const int64_t shapes[][2] = {{4096, 4096}, {11008, 4096}, {2048, 5632}};
    printf("\ndecode GEMV, T = 1, weights from DRAM (copies > LLC used in turn)\n");
    printf("%-20s %9s %10s %8s %9s %7s\n", "weight (out x in)", "threads", "us/call", "GB/s",
           "% of BW", "cpu%");
    for (size_t s = 0; s < 3; s++) {
        bench_weights w;
        weights_nf4(&w, shapes[s][0], shapes[s][1]);
        for (int i = 0; i < 2; i++) print_gemv("nf4+dq", &w, be[i], bw[i]);
        weights_free(&w);
    }
    bench_weights lm;
    weights_f16(&lm, 32000, 4096);
    for (int i = 0; i < 2; i++) print_gemv("f16", &lm, be[i], bw[i]);
    weights_free(&lm);

    printf("\nbatched decode and prefill, nf4+dq, 2 threads\n");
    printf("%-20s %7s %10s %10s %7s\n", "weight (out x in)", "T", "ms/call", "GFLOP/s", "cpu%");
    static const int64_t Ts[] = {4, 16, 128, 512};
    for (size_t s = 0; s < 3; s += 2) {
        bench_weights w;
        weights_nf4(&w, shapes[s][0], shapes[s][1]);
        for (size_t i = 0; i < 4; i++) {
            int copies = Ts[i] >= 128 ? 2 : w.n_copies;
            bench_time t = bench_calls(be[1], &w, Ts[i], copies);
            double flops = 2.0 * (double)Ts[i] * (double)(w.out * w.in);
            printf("nf4+dq %5lld x %-5lld %7lld %10.3f %10.1f %6.0f%%\n", (long long)w.out,
                   (long long)w.in, (long long)Ts[i], t.best_s * 1e3, flops / t.best_s / 1e9,
                   100.0 * t.cpu_share);
        }
        weights_free(&w);
    }
    ps_backend_destroy(be[0]);
    ps_backend_destroy(be[1]);
    return 0;
}
