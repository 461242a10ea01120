/* Multi-adapter decode throughput and adapter upload latency on the CPU
 * (or CUDA) backend, with a random NF4 model (llama_init_random) of
 * TinyLlama-1.1B's shape or, with --shape 7b, LLaMA-7B's (hidden 4096, ffn
 * 11008, 32 heads, 32 layers: the shape the CUDA issue's ratio is asked on).
 *
 * Decode: --batch sequences (16) each get a --prompt-token prompt (one
 * batched prefill step, not timed), then --steps decode steps run with all
 * sequences in one llama_forward per step (T = batch). Four runs:
 *   (a) no adapter
 *   (b) every sequence on the same LoRA (r = --rank, all 7 projections)
 *   (c) every sequence on its own LoRA (batch distinct adapters, same shape)
 *   (d) a mix: sequences cycle over LoRA (distinct), prefix tuning (P = 16)
 *       and prompt tuning (16 virtual tokens)
 * reported as tokens/s and the ratios (c)/(b) and (b)/(a) of this one run,
 * beside the bytes a step reads in (b) and (c): a bandwidth-bound step
 * cannot make (c)/(b) better than their ratio, so with adapters that are
 * large beside the base (r = 16 on all 7 projections of TinyLlama: 2.3 MB
 * per layer in F32 against 28 MB of NF4) no kernel reaches 0.9.
 * --modules all|qkvo|qv picks the LoRA's target projections (PEFT's default
 * for LLaMA is q_proj, v_proj).
 * The four runs are interleaved over --rounds rounds and the best round of
 * each is reported, in wall time and in process CPU time (all threads): on a
 * shared machine the CPU time is the steadier measure of the work done.
 * Adapters are random PEFT files made here and loaded through the real
 * loader (adapter_load_mem), i.e. exactly what an upload produces.
 *
 * Prefill: one sequence of --prefill tokens (512; 0: skipped) in one
 * forward, (a) without an adapter and (b) with the LoRA, best of --rounds;
 * with --device cuda (b) also with each LoRA kernel family forced: BGMV
 * (every token gathers its adapter) and SGMV (tiles of tokens of one adapter
 * share the loads of A and B), which give the same bits.
 *
 * --lora-dtype f16|bf16 writes the LoRA files in 16 bits, which the loader
 * keeps (half the bytes each step reads for distinct adapters).
 *
 * Upload: a LoRA of about 16 MB (r = 14 on q/k/v/o, F32, the PEFT file
 * format) through adapter_registry_add into a temporary --adapters-dir:
 * parse, validate, convert, write both files (fsync) and register; then the
 * first pin. Best and median of 5.
 *
 *   bench_adapters [--threads 2] [--shape tiny|7b] [--layers 22 | 32] [--batch 16]
 *                  [--steps 8] [--prompt 16] [--rank 16] [--modules all|qkvo|qv]
 *                  [--rounds 3] [--lora-dtype f32|f16|bf16] [--prefill 512]
 *                  [--device cpu|cuda]
 * Not a ctest: it measures, it does not judge. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "adapter_registry.h"
#include "base/log.h"
#include "base/safetensors.h"
#include "math/half.h"
#include "models/llama.h"
#ifdef PS_HAVE_CUDA
#include "cuda/cuda_ext.h"
#endif

#define MAX_B 64
#define MAX_PREFILL 1024 /* 64 pages of 16 per sequence (bseq) */

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
static double now(void) { return clock_s(CLOCK_MONOTONIC); }
static double cpu_now(void) { return clock_s(CLOCK_PROCESS_CPUTIME_ID); } /* all threads */

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float urand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((double)(rng >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
}

typedef struct {
    char *cfg, *st;
    size_t cfg_n, st_n;
} peft_files;

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)len);
    if (b && fread(b, 1, (size_t)len, f) != (size_t)len) free(b), b = NULL;
    fclose(f);
    *n = (size_t)len;
    return b;
}

/* Random PEFT LoRA files: A ~ U(-1,1)/sqrt(in), B ~ U(-1,1)/sqrt(r) * 0.1 so
 * the delta is a visible but small change of each projection. */
static st_dtype lora_file_dtype = ST_F32; /* --lora-dtype */

static ps_status make_lora(const llama_config *c, int r, unsigned mods, const char *tmp, peft_files *out, ps_err *err) {
    static const char *const names[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                         "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
    int HD = c->n_heads * c->head_dim, KD = c->n_kv_heads * c->head_dim;
    int in[7] = {c->hidden, c->hidden, c->hidden, HD, c->hidden, c->hidden, c->ffn};
    int outd[7] = {HD, KD, KD, c->hidden, c->ffn, c->ffn, c->hidden};
    int n = 0;
    st_write_item *items = calloc((size_t)c->n_layers * 14, sizeof *items);
    char (*tn)[96] = calloc((size_t)c->n_layers * 14, 96);
    float **data = calloc((size_t)c->n_layers * 14, sizeof *data);
    char targets[256] = "";
    for (int p = 0; p < 7; p++)
        if (mods & (1u << p))
            snprintf(targets + strlen(targets), sizeof targets - strlen(targets), "%s\"%s\"", targets[0] ? ", " : "",
                     strchr(names[p], '.') + 1);
    for (int l = 0; l < c->n_layers; l++)
        for (int p = 0; p < 7; p++)
            for (int ab = 0; ab < 2 && (mods & (1u << p)); ab++, n++) {
                int64_t rows = ab ? outd[p] : r, cols = ab ? r : in[p];
                snprintf(tn[n], 96, "base_model.model.model.layers.%d.%s.lora_%c.weight", l, names[p], ab ? 'B' : 'A');
                data[n] = malloc(sizeof(float) * (size_t)(rows * cols));
                float sc = ab ? 0.1f / sqrtf((float)r) : 1.0f / sqrtf((float)cols);
                uint16_t *h = (uint16_t *)data[n]; /* 16-bit files: converted in place, front to back */
                for (int64_t i = 0; i < rows * cols; i++) {
                    float v = urand() * sc;
                    if (lora_file_dtype == ST_F16) h[i] = ps_f32_to_f16(v);
                    else if (lora_file_dtype == ST_BF16) h[i] = ps_f32_to_bf16(v);
                    else data[n][i] = v;
                }
                items[n] = (st_write_item){tn[n], lora_file_dtype, 2, {rows, cols}, data[n]};
            }
    char path[512];
    snprintf(path, sizeof path, "%s/lora.safetensors", tmp);
    ps_status s = st_write(path, items, n, "{\"format\": \"pt\"}", err);
    for (int i = 0; i < n; i++) free(data[i]);
    free(data), free(tn), free(items);
    if (s) return s;
    out->st = slurp(path, &out->st_n);
    unlink(path);
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "{\"peft_type\": \"LORA\", \"task_type\": \"CAUSAL_LM\", \"r\": %d, \"lora_alpha\": %d, "
             "\"use_rslora\": false, \"target_modules\": [%s], \"bias\": \"none\", \"fan_in_fan_out\": false}",
             r, 2 * r, targets);
    out->cfg = strdup(cfg);
    out->cfg_n = strlen(cfg);
    return out->st ? PS_OK : ps_errf(err, PS_EIO, "cannot read back %s", path);
}

/* Random prefix (P x L*2*n_kv*D) or prompt (n x hidden) tuning files. */
static ps_status make_prompt(const llama_config *c, bool prefix, int n, const char *tmp, peft_files *out, ps_err *err) {
    int64_t width = prefix ? (int64_t)c->n_layers * 2 * c->n_kv_heads * c->head_dim : c->hidden;
    float *e = malloc(sizeof(float) * (size_t)(n * width));
    for (int64_t i = 0; i < n * width; i++) e[i] = urand() * (prefix ? 1.0f : 0.5f);
    st_write_item it = {"prompt_embeddings", ST_F32, 2, {n, width}, e};
    char path[512];
    snprintf(path, sizeof path, "%s/p.safetensors", tmp);
    ps_status s = st_write(path, &it, 1, "{\"format\": \"pt\"}", err);
    free(e);
    if (s) return s;
    out->st = slurp(path, &out->st_n);
    unlink(path);
    char cfg[512];
    snprintf(cfg, sizeof cfg,
             "{\"peft_type\": \"%s\", \"task_type\": \"CAUSAL_LM\", \"num_virtual_tokens\": %d, \"token_dim\": %lld, "
             "\"num_layers\": %d, \"num_attention_heads\": %d, \"prefix_projection\": false}",
             prefix ? "PREFIX_TUNING" : "PROMPT_TUNING", n, (long long)(prefix ? c->n_kv_heads * c->head_dim : c->hidden),
             c->n_layers, prefix ? c->n_kv_heads : c->n_heads);
    out->cfg = strdup(cfg);
    out->cfg_n = strlen(cfg);
    return PS_OK;
}

static ps_status load(const llama_config *c, ps_backend *be, const peft_files *f, const char *name, adapter **a,
                      ps_err *err) {
    adapter_base_shape shape = {c->n_layers, c->hidden, c->ffn, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab};
    return adapter_load_mem(name, f->cfg, f->cfg_n, f->st, f->st_n, &shape, NULL, be, a, err);
}

/* ---- decode runs ---- */

typedef struct {
    const adapter *a;
    int32_t pages[64];
    int n_pages, len;
    int32_t last;
} bseq;

/* One forward over all sequences: n tokens each (virtual tokens first when
 * `first` and the adapter is prompt tuning). */
static ps_status run_step(llama_model *m, kv_cache *kv, bseq *sq, int B, const int32_t *ids, int n, bool first,
                          float *logits, ps_err *err) {
    static int32_t tid[MAX_B * 64], pos[MAX_B * 64], tseq[MAX_B * 64], tad[MAX_B * 64], tvirt[MAX_B * 64];
    static int32_t out[MAX_B], bt[MAX_B * 64];
    const adapter *ads[MAX_B];
    int T = 0, n_ads = 0;
    for (int i = 0; i < B; i++) {
        bseq *s = &sq[i];
        int ai = -1;
        for (int j = 0; s->a && j < n_ads; j++)
            if (ads[j] == s->a) ai = j;
        if (s->a && ai < 0) ads[ai = n_ads++] = s->a;
        int nv = first && s->a && s->a->kind == ADAPTER_PROMPT ? s->a->n_virtual : 0;
        for (int j = 0; j < nv + n; j++, T++) {
            tid[T] = j < nv ? 0 : (first ? ids[j - nv] : s->last);
            tvirt[T] = j < nv ? j : -1;
            pos[T] = s->len + j;
            tseq[T] = i;
            tad[T] = ai;
        }
        s->len += nv + n;
        while (s->n_pages * kv->page_size < s->len) {
            int32_t p = kv_cache_alloc_page(kv);
            if (p < 0) return ps_errf(err, PS_ENOMEM, "bench: KV pages exhausted");
            s->pages[s->n_pages++] = p;
        }
        for (int p = 0; p < 64; p++) bt[i * 64 + p] = p < s->n_pages ? s->pages[p] : -1;
        out[i] = T - 1;
    }
    llama_batch b = {T, tid, pos, tseq, pos, B, 64, bt, B, out, n_ads, ads, tad, tvirt};
    ps_status st = llama_forward(m, kv, &b, logits, err);
    int V = llama_get_config(m)->vocab;
    for (int i = 0; i < B && !st; i++) { /* greedy next token */
        const float *lg = logits + (size_t)i * V;
        int best = 0;
        for (int v = 1; v < V; v++) best = lg[v] > lg[best] ? v : best;
        sq[i].last = best;
    }
    return st;
}

typedef struct {
    double wall, cpu; /* seconds per decode step */
} step_time;

/* Prefill (untimed) then `steps` timed decode steps; per-step wall and CPU
 * seconds in *t. Returns false on error. */
static bool decode_run(llama_model *m, kv_cache *kv, const adapter *const *per_seq, int B, int prompt, int steps,
                       float *logits, step_time *t, ps_err *err) {
    bseq sq[MAX_B];
    int32_t ids[64];
    for (int t = 0; t < prompt; t++) ids[t] = t == 0 ? 1 : 100 + 37 * t;
    memset(sq, 0, sizeof sq);
    bool ok = false;
    for (int i = 0; i < B; i++) {
        sq[i].a = per_seq[i];
        if (sq[i].a && sq[i].a->kind == ADAPTER_PREFIX) {
            while (sq[i].n_pages * kv->page_size < sq[i].a->n_prefix) sq[i].pages[sq[i].n_pages++] = kv_cache_alloc_page(kv);
            if (llama_store_prefix(m, kv, sq[i].pages, sq[i].n_pages, sq[i].a, err)) goto done;
            sq[i].len = sq[i].a->n_prefix;
        }
    }
    if (run_step(m, kv, sq, B, ids, prompt, true, logits, err)) goto done;
    double t0 = now(), c0 = cpu_now();
    for (int k = 0; k < steps; k++)
        if (run_step(m, kv, sq, B, NULL, 1, false, logits, err)) goto done;
    t->wall = (now() - t0) / steps;
    t->cpu = (cpu_now() - c0) / steps;
    ok = true;
done:
    for (int i = 0; i < B; i++)
        for (int p = 0; p < sq[i].n_pages; p++) kv_cache_release_page(kv, sq[i].pages[p]);
    return ok;
}

/* ---- prefill runs ---- */

/* One sequence of n prompt tokens in one forward on adapter a (NULL: none),
 * best of `rounds`; seconds in *t. Returns false on error. */
static bool prefill_run(llama_model *m, kv_cache *kv, const adapter *a, int n, int rounds, float *logits, double *t,
                        ps_err *err) {
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n);
    for (int i = 0; i < n; i++) ids[i] = i == 0 ? 1 : 100 + (37 * i) % 31000;
    bool ok = true;
    *t = 1e30;
    for (int round = 0; round < rounds && ok; round++) {
        bseq sq;
        memset(&sq, 0, sizeof sq);
        sq.a = a;
        double t0 = now();
        ok = !run_step(m, kv, &sq, 1, ids, n, true, logits, err);
        double dt = now() - t0;
        *t = dt < *t ? dt : *t;
        for (int p = 0; p < sq.n_pages; p++) kv_cache_release_page(kv, sq.pages[p]);
    }
    free(ids);
    return ok;
}

#ifdef PS_HAVE_CUDA
/* The LoRA kernel family of the CUDA backend (ps_cuda_lora_path); false when
 * be is no CUDA backend. */
static bool set_lora_path(ps_backend *be, int path) {
    ps_cuda_tuning t;
    ps_err e;
    if (ps_cuda_get_tuning(be, &t, &e)) return false;
    t.lora_path = path;
    return ps_cuda_set_tuning(be, &t, &e) == PS_OK;
}
#endif

/* The prefill table: no adapter, the LoRA, and on CUDA the LoRA with each kernel family. */
static bool prefill_table(llama_model *m, kv_cache *kv, ps_backend *be, const adapter *lora, int n, int rank,
                          int rounds, float *logits, ps_err *err) {
    double base, with;
    if (!prefill_run(m, kv, NULL, 32, 1, logits, &base, err)) return false; /* warm-up */
    if (!prefill_run(m, kv, NULL, n, rounds, logits, &base, err) ||
        !prefill_run(m, kv, lora, n, rounds, logits, &with, err))
        return false;
    printf("\n| prefill, one sequence of %d tokens, best of %d | tokens/s (wall) | ms | vs (a) |\n"
           "| --- | --- | --- | --- |\n", n, rounds);
    printf("| (a) no adapter | %.1f | %.2f | 1 |\n", n / base, 1e3 * base);
    printf("| (b) LoRA r=%d (as above) | %.1f | %.2f | %.3f |\n", rank, n / with, 1e3 * with, base / with);
#ifdef PS_HAVE_CUDA
    static const char *const fam[] = {"BGMV (one block per token)", "SGMV (tiles of one adapter)"};
    for (int k = 0; k < 2 && set_lora_path(be, k == 0 ? PS_CUDA_LORA_BGMV : PS_CUDA_LORA_SGMV); k++) {
        if (!prefill_run(m, kv, lora, n, rounds, logits, &with, err)) return false;
        printf("| (b) LoRA, cuda %s | %.1f | %.2f | %.3f |\n", fam[k], n / with, 1e3 * with, base / with);
    }
    set_lora_path(be, PS_CUDA_LORA_AUTO);
#else
    (void)be;
#endif
    return true;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ~16 MB LoRA through the registry: add (validate + persist + register), first pin. */
static ps_status upload_latency(const llama_config *c, ps_backend *be, const char *tmp, ps_err *err) {
    peft_files f = {0};
    st_dtype keep = lora_file_dtype;
    lora_file_dtype = ST_F32;
    ps_status s = make_lora(c, 14, 0xF, tmp, &f, err); /* q, k, v, o */
    lora_file_dtype = keep;
    if (s) return s;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/store", tmp);
    adapter_base_shape shape = {c->n_layers, c->hidden, c->ffn, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab};
    adapter_registry_opts o = {dir, 0, shape, {0}, be};
    adapter_registry *r = NULL;
    double add_t[5], pin_t[5];
    if ((s = adapter_registry_init(&r, &o, err))) goto done;
    for (int i = 0; i < 5 && !s; i++) {
        char name[32];
        snprintf(name, sizeof name, "up%d", i);
        double t0 = now();
        if ((s = adapter_registry_add(r, name, f.cfg, f.cfg_n, f.st, f.st_n, false, NULL, err))) break;
        double t1 = now();
        adapter *a = NULL;
        if ((s = adapter_registry_pin(r, name, &a, err))) break;
        adapter_registry_unpin(r, a);
        add_t[i] = t1 - t0;
        pin_t[i] = now() - t1;
        adapter_registry_remove(r, name, err);
    }
    if (!s) {
        qsort(add_t, 5, sizeof add_t[0], cmp_double);
        qsort(pin_t, 5, sizeof pin_t[0], cmp_double);
        printf("| upload-to-servable, %.1f MB LoRA file (r=14, q/k/v/o, F32) | best %.1f ms, median %.1f ms "
               "(+ first pin %.3f ms) |\n",
               (double)f.st_n / 1e6, add_t[0] * 1e3, add_t[2] * 1e3, pin_t[2] * 1e3);
    }
done:
    adapter_registry_free(r);
    rmdir(dir);
    free(f.cfg), free(f.st);
    return s;
}

int main(int argc, char **argv) {
    int threads = 2, layers = 0, B = 16, steps = 8, prompt = 16, rank = 16, rounds = 3, prefill = 512;
    bool cuda = false, shape_7b = false;
    unsigned mods = 0x7F; /* bit p: projection p of make_lora's names */
    const char *mods_name = "all 7 projections";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--shape")) {
            shape_7b = !strcmp(argv[i + 1], "7b");
            if (!shape_7b && strcmp(argv[i + 1], "tiny")) return fprintf(stderr, "--shape tiny|7b\n"), 2;
            continue;
        }
        if (!strcmp(argv[i], "--modules")) {
            const char *m = argv[i + 1];
            if (!strcmp(m, "all")) mods = 0x7F, mods_name = "all 7 projections";
            else if (!strcmp(m, "qkvo")) mods = 0x0F, mods_name = "q/k/v/o";
            else if (!strcmp(m, "qv")) mods = 0x05, mods_name = "q/v";
            else return fprintf(stderr, "--modules all|qkvo|qv\n"), 2;
            continue;
        }
        if (!strcmp(argv[i], "--device")) {
            cuda = !strcmp(argv[i + 1], "cuda");
            if (!cuda && strcmp(argv[i + 1], "cpu")) return fprintf(stderr, "--device cpu|cuda\n"), 2;
            continue;
        }
        if (!strcmp(argv[i], "--lora-dtype")) {
            const char *d = argv[i + 1];
            lora_file_dtype = !strcmp(d, "f16") ? ST_F16 : !strcmp(d, "bf16") ? ST_BF16 : ST_F32;
            if (lora_file_dtype == ST_F32 && strcmp(d, "f32")) return fprintf(stderr, "--lora-dtype f32|f16|bf16\n"), 2;
            continue;
        }
        int *v = !strcmp(argv[i], "--threads") ? &threads : !strcmp(argv[i], "--layers") ? &layers
               : !strcmp(argv[i], "--batch") ? &B : !strcmp(argv[i], "--steps") ? &steps
               : !strcmp(argv[i], "--prompt") ? &prompt : !strcmp(argv[i], "--rank") ? &rank
               : !strcmp(argv[i], "--rounds") ? &rounds : !strcmp(argv[i], "--prefill") ? &prefill : NULL;
        if (!v) {
            fprintf(stderr, "unknown option %s (see the header of bench_adapters.c)\n", argv[i]);
            return 2;
        }
        *v = atoi(argv[i + 1]);
    }
    if (!layers) layers = shape_7b ? 32 : 22;
    if (B < 1 || B > MAX_B || steps < 1 || prompt < 1 || prompt > 32 || rank < 1 || layers < 1 || rounds < 1 ||
        prefill < 0 || prefill > MAX_PREFILL) {
        fprintf(stderr, "bad option values\n");
        return 2;
    }
    ps_log_threshold = PS_LOG_LEVEL_WARN;
    ps_err err = {0};
    ps_backend *be = NULL;
    llama_model *m = NULL;
    kv_cache kv = {0};
    adapter *lora[MAX_B] = {0}, *prefix = NULL, *prompt_ad = NULL;
    float *logits = NULL;
    int rc = 1;
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%s/ps_bench_adapters_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmp)) return 1;
    if (cuda ? ps_backend_cuda_create(0, &be, &err) : ps_backend_cpu_create(threads, &be, &err)) goto fail;
    llama_config cfg = shape_7b ? (llama_config){32000, 4096, 11008, layers, 32, 32, 128, 2048, 1e-5f, 10000.0f, false, 1, 2}
                                : (llama_config){32000, 2048, 5632, layers, 32, 4, 64, 2048, 1e-5f, 10000.0f, false, 1, 2};
    double t0 = now();
    if (llama_init_random(&cfg, 1234, LLAMA_QUANT_NF4, be, &m, &err)) goto fail;
    printf("model: random %s shape, %d layers, NF4+DQ, %.1f MB of weights, built in %.1f s; %s, %d threads\n",
           shape_7b ? "LLaMA-7B" : "TinyLlama-1.1B", cfg.n_layers, (double)llama_weight_bytes(m) / 1e6, now() - t0,
           cuda ? "cuda" : "cpu", cuda ? 0 : threads);
    t0 = now();
    for (int i = 0; i < B; i++) {
        peft_files f = {0};
        char name[32];
        snprintf(name, sizeof name, "lora%d", i);
        ps_status s = make_lora(&cfg, rank, mods, tmp, &f, &err);
        if (!s) s = load(&cfg, be, &f, name, &lora[i], &err);
        if (!s && i == 0) printf("LoRA r=%d on %s, %s: %.1f MB file, %.1f MB resident each\n", rank, mods_name,
                                 st_dtype_name(lora_file_dtype), (double)f.st_n / 1e6,
                                 (double)adapter_bytes(lora[0]) / 1e6);
        free(f.cfg), free(f.st);
        if (s) goto fail;
    }
    peft_files pf = {0}, pp = {0};
    if (make_prompt(&cfg, true, 16, tmp, &pf, &err) || load(&cfg, be, &pf, "prefix", &prefix, &err) ||
        make_prompt(&cfg, false, 16, tmp, &pp, &err) || load(&cfg, be, &pp, "prompt", &prompt_ad, &err))
        goto fail;
    free(pf.cfg), free(pf.st), free(pp.cfg), free(pp.st);
    printf("adapters generated and loaded in %.1f s\n", now() - t0);
    int pages = B * 8 + 8 > MAX_PREFILL / 16 + 8 ? B * 8 + 8 : MAX_PREFILL / 16 + 8;
    if (kv_cache_init(&kv, be, &cfg, 16, pages, PS_DT_F32, &err)) goto fail;
    logits = malloc(sizeof(float) * (size_t)B * (size_t)cfg.vocab);

    const adapter *none[MAX_B] = {0}, *same[MAX_B], *distinct[MAX_B], *mix[MAX_B];
    for (int i = 0; i < B; i++) {
        same[i] = lora[0];
        distinct[i] = lora[i];
        mix[i] = i % 3 == 0 ? lora[i] : i % 3 == 1 ? prefix : prompt_ad;
    }
    /* warm-up (first touch of scratch buffers), then `rounds` rounds of the four
     * runs interleaved, so a burst of load from other processes hits every
     * configuration alike; the best round of each counts (least disturbed) */
    const adapter *const *cfgs[4] = {none, same, distinct, mix};
    step_time best[4], t;
    if (!decode_run(m, &kv, none, B, prompt, 1, logits, &t, &err)) goto fail;
    for (int k = 0; k < 4; k++) best[k] = (step_time){1e30, 1e30};
    for (int round = 0; round < rounds; round++)
        for (int k = 0; k < 4; k++) {
            if (!decode_run(m, &kv, cfgs[k], B, prompt, steps, logits, &t, &err)) goto fail;
            best[k].wall = t.wall < best[k].wall ? t.wall : best[k].wall;
            best[k].cpu = t.cpu < best[k].cpu ? t.cpu : best[k].cpu;
        }
    static const char *const label[4] = {"(a) no adapter", "(b) one LoRA, all sequences", "(c) distinct LoRA per sequence",
                                         "(d) mix: LoRA (distinct) / prefix P=16 / prompt n=16"};
    printf("\n| decode, batch %d, LoRA r=%d on %s, best of %d rounds x %d steps | tokens/s (wall) | ms/step | "
           "CPU s/step |\n| --- | --- | --- | --- |\n", B, rank, mods_name, rounds, steps);
    for (int k = 0; k < 4; k++)
        printf("| %s | %.2f | %.0f | %.3f |\n", label[k], B / best[k].wall, 1e3 * best[k].wall, best[k].cpu);
    printf("\n| ratio (throughput) | wall | CPU time |\n| --- | --- | --- |\n");
    printf("| (c)/(b) | %.3f | %.3f |\n", best[1].wall / best[2].wall, best[1].cpu / best[2].cpu);
    printf("| (b)/(a) | %.3f | %.3f |\n", best[0].wall / best[1].wall, best[0].cpu / best[1].cpu);
    printf("| (d)/(a) | %.3f | %.3f |\n", best[0].wall / best[3].wall, best[0].cpu / best[3].cpu);
    /* weights a step reads: the base once, each distinct adapter once (KV and
     * activations aside: small at these lengths) */
    double base_b = (double)llama_decode_bytes_per_token(m), ad_b = (double)adapter_bytes(lora[0]);
    printf("\nbytes read per step: base %.1f MB, + %.1f MB in (b), + %.1f MB in (c) (%d distinct); "
           "(c)/(b) if a step took its bytes' time: %.3f\n", base_b / 1e6, ad_b / 1e6, B * ad_b / 1e6, B,
           (base_b + ad_b) / (base_b + B * ad_b));
    if (prefill && !prefill_table(m, &kv, be, lora[0], prefill, rank, rounds, logits, &err)) goto fail;
    printf("\n| upload | latency |\n| --- | --- |\n");
    if (upload_latency(&cfg, be, tmp, &err)) goto fail;
    rc = 0;
fail:
    if (rc) fprintf(stderr, "bench_adapters: %s\n", err.msg);
    free(logits);
    kv_cache_free(&kv);
    for (int i = 0; i < MAX_B; i++) adapter_free(lora[i]);
    adapter_free(prefix), adapter_free(prompt_ad);
    llama_free(m);
    ps_backend_destroy(be);
    rmdir(tmp);
    return rc;
}
