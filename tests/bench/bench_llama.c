/* LLaMA throughput on the CPU backend, measured against the machine's memory
 * bandwidth (decoding one token must read every weight once, so bandwidth /
 * bytes-per-token is the floor of the decode time).
 *
 * Model: a TinyLlama-1.1B-shaped random model (hidden 2048, 22 layers, 32
 * heads, 4 KV heads, ffn 5632, vocab 32000) made by llama_init_random, or any
 * HF folder given with --model (e.g. one written by gen_random_llama).
 * Measures: prefill tok/s at 128 and 512 tokens (one forward each, logits of
 * the last token only), decode tok/s (batch 1, --steps greedy steps after a
 * --context-token prompt, 128 by default; --kv-dtype f32|f16|bf16 picks the
 * KV cache), bytes of weights read per decoded token, the read
 * bandwidth of a 1 GB buffer with the same thread count, and decode as a
 * percentage of the bandwidth floor.
 *
 *   bench_llama [--threads 2] [--model DIR] [--quant nf4|none] [--layers N]
 *               [--steps 32] [--prefill 128,512] [--bw-mb 1024] [--context 128]
 *               [--kv-dtype f32|f16|bf16]
 * Not a ctest: it takes about a minute and measures, it does not judge. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "models/llama.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU seconds used by the whole process (all threads). On a shared machine
 * cpu / (wall * threads) says how much of the asked-for cores a timing got. */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- memory bandwidth: threads each sum their part of one big buffer ---- */

typedef struct {
    const uint64_t *p;
    size_t n;
    uint64_t sum;
} bw_part;

static void *bw_read(void *arg) {
    bw_part *b = arg;
    uint64_t s[8] = {0};
    for (size_t i = 0; i + 8 <= b->n; i += 8)
        for (int k = 0; k < 8; k++) s[k] += b->p[i + k];
    b->sum = s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
    return NULL;
}

/* Best of 5 passes, GB/s (1e9 bytes). */
static double bandwidth(size_t mb, int threads) {
    size_t n = mb * (1u << 20) / 8;
    uint64_t *buf = malloc(n * 8);
    if (!buf) return 0;
    for (size_t i = 0; i < n; i++) buf[i] = i; /* touch every page */
    double best = 0;
    uint64_t check = 0;
    for (int pass = 0; pass < 5; pass++) {
        bw_part parts[64];
        pthread_t th[64];
        size_t per = n / (size_t)threads / 8 * 8;
        double t0 = now();
        for (int i = 0; i < threads; i++) {
            parts[i] = (bw_part){buf + (size_t)i * per, i == threads - 1 ? n - (size_t)i * per : per, 0};
            if (i) pthread_create(&th[i], NULL, bw_read, &parts[i]);
        }
        bw_read(&parts[0]);
        for (int i = 1; i < threads; i++) pthread_join(th[i], NULL);
        double dt = now() - t0;
        for (int i = 0; i < threads; i++) check += parts[i].sum;
        double gbs = (double)(n * 8) / dt / 1e9;
        if (gbs > best) best = gbs;
    }
    if (check == 42) printf("(checksum %llu)\n", (unsigned long long)check); /* keeps the sums live */
    free(buf);
    return best;
}

/* ---- model runs ---- */

typedef struct {
    llama_model *m;
    kv_cache kv;
    int32_t pages[256];
    int n_pages, len;
    float *logits;
} bench_seq;

static int argmax(const float *x, int n) {
    int a = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[a]) a = i;
    return a;
}

/* Appends n tokens to the sequence (one forward); logits of the last one. */
static ps_status seq_step(bench_seq *s, const int32_t *ids, int n, ps_err *err) {
    static int32_t pos[4096], seq0[4096];
    while (s->n_pages * s->kv.page_size < s->len + n) {
        int32_t p = kv_cache_alloc_page(&s->kv);
        if (p < 0) return ps_errf(err, PS_ENOMEM, "bench: KV pages exhausted");
        s->pages[s->n_pages++] = p;
    }
    for (int t = 0; t < n; t++) pos[t] = s->len + t, seq0[t] = 0;
    int32_t last = n - 1;
    llama_batch b = {n, ids, pos, seq0, pos, 1, s->n_pages, s->pages, 1, &last};
    ps_status st = llama_forward(s->m, &s->kv, &b, s->logits, err);
    s->len += n;
    return st;
}

static void seq_reset(bench_seq *s) {
    for (int i = 0; i < s->n_pages; i++) kv_cache_release_page(&s->kv, s->pages[i]);
    s->n_pages = s->len = 0;
}

static void prompt_ids(int32_t *ids, int n, int vocab) {
    uint64_t x = 88172645463325252ull;
    for (int t = 0; t < n; t++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ids[t] = t == 0 ? 1 : (int32_t)(x % (uint64_t)vocab);
    }
}

int main(int argc, char **argv) {
    int threads = 2, layers = 22, steps = 32, bw_mb = 1024, prefill[8] = {128, 512}, n_prefill = 2, context = 128;
    ps_dtype kv_dt = PS_DT_F32;
    const char *model_dir = NULL;
    llama_quant quant = LLAMA_QUANT_NF4;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--model")) model_dir = argv[i + 1];
        else if (!strcmp(argv[i], "--quant")) quant = strcmp(argv[i + 1], "none") ? LLAMA_QUANT_NF4 : LLAMA_QUANT_NONE;
        else if (!strcmp(argv[i], "--layers")) layers = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--bw-mb")) bw_mb = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--context")) context = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--kv-dtype"))
            kv_dt = !strcmp(argv[i + 1], "f16") ? PS_DT_F16 : !strcmp(argv[i + 1], "bf16") ? PS_DT_BF16 : PS_DT_F32;
        else if (!strcmp(argv[i], "--prefill")) {
            n_prefill = 0;
            for (char *s = argv[i + 1]; *s && n_prefill < 8; s += strcspn(s, ",") + (s[strcspn(s, ",")] != 0))
                prefill[n_prefill++] = atoi(s);
        } else {
            fprintf(stderr, "unknown option %s (see the header of bench_llama.c)\n", argv[i]);
            return 2;
        }
    }
    if (threads < 1 || threads > 64 || steps < 1 || layers < 1 || context < 1) {
        fprintf(stderr, "bad --threads/--steps/--layers/--context\n");
        return 2;
    }
    ps_err err = {0};
    ps_backend *be = NULL;
    bench_seq s = {0};
    int rc = 1;
    if (ps_backend_cpu_create(threads, &be, &err)) goto fail;
    /* TinyLlama-1.1B's shape: vocab hidden ffn layers heads kv head_dim max_pos eps theta tie bos eos */
    llama_config cfg = {32000, 2048, 5632, layers, 32, 4, 64, 2048, 1e-5f, 10000.0f, false, 1, 2};
    double t0 = now();
    if (model_dir ? llama_load(model_dir, quant, be, &s.m, &err)
                  : llama_init_random(&cfg, 1234, quant, be, &s.m, &err))
        goto fail;
    double t_load = now() - t0;
    cfg = *llama_get_config(s.m);
    int max_len = 0;
    for (int i = 0; i < n_prefill; i++) max_len = prefill[i] > max_len ? prefill[i] : max_len;
    max_len = (max_len > context ? max_len : context) + steps + 16;
    if (max_len > 4096 || kv_cache_init(&s.kv, be, &cfg, 16, max_len / 16 + 2, kv_dt, &err)) {
        if (max_len > 4096) ps_errf(&err, PS_EINVAL, "at most 4096 tokens");
        goto fail;
    }
    s.logits = malloc(sizeof(float) * (size_t)cfg.vocab);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)max_len);
    prompt_ids(ids, max_len, cfg.vocab);

    printf("model: %s, %d layers, hidden %d, ffn %d, heads %d/%d, vocab %d, %s, %s KV cache; %d threads\n",
           model_dir ? model_dir : "random TinyLlama-1.1B shape", cfg.n_layers, cfg.hidden, cfg.ffn,
           cfg.n_heads, cfg.n_kv_heads, cfg.vocab, quant == LLAMA_QUANT_NF4 ? "NF4+DQ" : "16-bit",
           ps_dtype_name(kv_dt), threads);
    printf("%s in %.1f s, %.1f MB of weights resident\n", model_dir ? "loaded" : "built", t_load,
           (double)llama_weight_bytes(s.m) / 1e6);
    double pf_tps[8], pf_share[8], c0;
    for (int i = 0; i < n_prefill; i++) {
        seq_reset(&s);
        t0 = now();
        c0 = cpu_now();
        if (seq_step(&s, ids, prefill[i], &err)) goto fail;
        pf_tps[i] = prefill[i] / (now() - t0);
        pf_share[i] = (cpu_now() - c0) * pf_tps[i] / prefill[i] / threads;
    }
    /* decode: a --context-token prompt, then batch-1 greedy steps */
    seq_reset(&s);
    if (seq_step(&s, ids, context, &err)) goto fail;
    t0 = now();
    c0 = cpu_now();
    for (int k = 0; k < steps; k++) {
        int32_t tok = argmax(s.logits, cfg.vocab);
        if (seq_step(&s, &tok, 1, &err)) goto fail;
    }
    double dec_tps = steps / (now() - t0);
    double dec_share = (cpu_now() - c0) / (now() - t0) / threads;
    double bw = bandwidth((size_t)bw_mb, threads);
    double bpt = (double)llama_decode_bytes_per_token(s.m);
    double floor_tps = bw * 1e9 / bpt;

    printf("\n| measure | value | CPU share |\n| --- | --- | --- |\n");
    for (int i = 0; i < n_prefill; i++)
        printf("| prefill %d tokens | %.1f tok/s | %.0f %% |\n", prefill[i], pf_tps[i], 100 * pf_share[i]);
    printf("| decode, batch 1, %d steps after %d | %.2f tok/s (%.1f ms/token) | %.0f %% |\n", steps, context,
           dec_tps, 1e3 / dec_tps, 100 * dec_share);
    printf("| weights read per decoded token | %.1f MB | |\n", bpt / 1e6);
    printf("| read bandwidth (%d MB buffer, %d threads, best of 5) | %.1f GB/s | |\n", bw_mb, threads, bw);
    printf("| decode floor (bandwidth / bytes per token) | %.2f tok/s | |\n", floor_tps);
    printf("| decode as %% of the floor | %.0f %% | |\n", 100.0 * dec_tps / floor_tps);
    printf("(CPU share: CPU time / (wall time x %d threads); below 100 %% the machine was shared)\n",
           threads);
    rc = 0;
    free(ids);
fail:
    if (rc) fprintf(stderr, "bench_llama: %s\n", err.msg);
    free(s.logits);
    kv_cache_free(&s.kv);
    llama_free(s.m);
    ps_backend_destroy(be);
    return rc;
}
