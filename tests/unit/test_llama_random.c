/* The random model (llama_init_random) and its HF-folder writer:
 *   - the same seed gives bit-identical logits, another seed different ones;
 *   - loading the folder written by llama_random_write_dir (single file and
 *     sharded with an index) gives bit-identical logits to llama_init_random,
 *     for NF4 and unquantised weights (the values are F16-representable, so
 *     quantising them on load is the same computation);
 *   - llama_weight_bytes matches the NF4 / F16 sizes computed here from the
 *     shapes (packed n/2 + one DQ code per 64-block + one float per 256 codes);
 *   - the logits are non-degenerate (finite, std well away from 0 and from huge).
 * Configs cover GQA, an FFN width that is not a multiple of 64 (NF4 blocks span
 * rows), a head_dim override (heads * head_dim != hidden) and tied embeddings. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "models/llama.h"
#include "models/llama_random.h"
#include "testutil.h"

static ps_backend *be;
static ps_err err;

#define T 9

/* Logits of all T positions of a fixed token sequence. */
static float *run(llama_model *m) {
    const llama_config *c = llama_get_config(m);
    kv_cache kv = {0};
    int32_t ids[T], pos[T], seq[T] = {0}, rows[T], bt[3];
    for (int t = 0; t < T; t++) {
        ids[t] = (int32_t)((t * 7919 + 13) % c->vocab);
        pos[t] = rows[t] = t;
    }
    float *lg = malloc(sizeof(float) * T * (size_t)c->vocab);
    if (kv_cache_init(&kv, be, c, 4, 3, PS_DT_F32, &err)) {
        TU_CHECK(0, "kv: %s", err.msg);
        return lg;
    }
    for (int p = 0; p < 3; p++) bt[p] = kv_cache_alloc_page(&kv);
    llama_batch b = {T, ids, pos, seq, pos, 1, 3, bt, T, rows};
    TU_CHECK(llama_forward(m, &kv, &b, lg, &err) == PS_OK, "forward: %s", err.msg);
    kv_cache_free(&kv);
    return lg;
}

static int64_t expected_bytes(const llama_config *c, llama_quant q) {
    int64_t C = c->hidden, F = c->ffn, HD = (int64_t)c->n_heads * c->head_dim,
            KD = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t proj[7] = {HD * C, KD * C, KD * C, C * HD, F * C, F * C, C * F};
    int64_t b = (int64_t)c->vocab * C * 2 * (c->tie_embeddings ? 1 : 2) + C * 2;
    for (int l = 0; l < c->n_layers; l++) {
        b += 2 * C * 2;
        for (int p = 0; p < 7; p++) {
            int64_t n = proj[p], nb = (n + 63) / 64;
            b += q == LLAMA_QUANT_NONE ? n * 2 : (n + 1) / 2 + nb + (nb + 255) / 256 * 4;
        }
    }
    return b;
}

static bool same(const float *a, const float *b, int64_t n) {
    return !memcmp(a, b, sizeof(float) * (size_t)n);
}

static void check_config(const char *what, const llama_config *c) {
    llama_quant qs[2] = {LLAMA_QUANT_NF4, LLAMA_QUANT_NONE};
    int64_t n = (int64_t)T * c->vocab;
    for (int qi = 0; qi < 2; qi++) {
        llama_model *a = NULL, *b = NULL, *d = NULL;
        char dir[] = "/tmp/ps_llama_rand_XXXXXX";
        TU_CHECK(mkdtemp(dir) != NULL, "mkdtemp");
        if (llama_init_random(c, 42, qs[qi], be, &a, &err) ||
            llama_init_random(c, 43, qs[qi], be, &b, &err)) {
            TU_CHECK(0, "%s init_random: %s", what, err.msg);
            llama_free(a);
            tu_rm_dir(dir);
            continue;
        }
        float *la = run(a), *lb = run(b), *la2 = run(a);
        TU_CHECK(same(la, la2, n), "%s: the same model gives different logits twice", what);
        TU_CHECK(!same(la, lb, n), "%s: seeds 42 and 43 give the same logits", what);
        TU_CHECK(llama_weight_bytes(a) == expected_bytes(c, qs[qi]), "%s q%d: weight bytes %lld, expected %lld",
                 what, qi, (long long)llama_weight_bytes(a), (long long)expected_bytes(c, qs[qi]));
        double s = 0, ss = 0;
        for (int64_t i = 0; i < n; i++) s += la[i], ss += (double)la[i] * la[i];
        double sd = sqrt(ss / n - (s / n) * (s / n));
        TU_CHECK(isfinite(sd) && sd > 0.3 && sd < 10, "%s: logit std %.3g out of [0.3, 10]", what, sd);
        /* single file, then 3+ shards */
        int64_t shard_sizes[2] = {INT64_MAX, (int64_t)c->vocab * c->hidden * 2};
        for (int k = 0; k < 2; k++) {
            tu_rm_dir(dir);
            mkdir(dir, 0700);
            if (llama_random_write_dir(c, 42, dir, shard_sizes[k], &err) ||
                llama_load(dir, qs[qi], be, &d, &err)) {
                TU_CHECK(0, "%s write/load (shards %d): %s", what, k, err.msg);
                continue;
            }
            float *ld = run(d);
            TU_CHECK(same(la, ld, n), "%s q%d shards %d: loaded folder differs from init_random", what,
                     qi, k);
            TU_CHECK(llama_weight_bytes(d) == llama_weight_bytes(a), "%s: loaded weight bytes differ", what);
            free(ld);
            llama_free(d);
            d = NULL;
        }
        printf("%s %s: logit std %.3f, %lld weight bytes, folder == init_random\n", what,
               qi ? "f16" : "nf4", sd, (long long)llama_weight_bytes(a));
        free(la), free(lb), free(la2);
        llama_free(a);
        llama_free(b);
        tu_rm_dir(dir);
    }
}

int main(void) {
    be = tu_backend_create();
    /* vocab hidden ffn layers heads kv head_dim max_pos eps theta tie bos eos */
    llama_config gqa = {300, 64, 160, 2, 4, 2, 16, 128, 1e-5f, 10000.0f, false, 1, 2};
    llama_config hd = {257, 64, 96, 1, 4, 1, 24, 64, 1e-6f, 500000.0f, false, 1, 2};
    llama_config tied = {320, 48, 128, 2, 3, 3, 16, 64, 1e-5f, 10000.0f, true, 1, -1};
    check_config("gqa", &gqa);
    check_config("head_dim override", &hd);
    check_config("tied", &tied);
    ps_backend_destroy(be);
    return tu_finish("llama random");
}
