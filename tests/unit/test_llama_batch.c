/* Batch invariance of llama_forward: the 6 llama-tiny prompts decoded together
 * the way the scheduler will do it (one shared page pool, pages handed out
 * interleaved; prompts cut into prefill chunks of different sizes over several
 * steps; short prompts start decoding while long ones still prefill; tokens of
 * different sequences interleaved inside a step; every row's logits asked for)
 * give the same logits at every position, and the same greedy tokens, as each
 * prompt run alone in its own cache.
 *
 * Tolerance: per position rel L2 <= 1e-6 with equal argmax. The CPU backend's
 * per-token arithmetic does not depend on the batch, so we measure 0 (every
 * row bit-identical, reported); the bound leaves room for backends whose
 * GEMM blocking depends on the number of rows (1e-6 is ~10 float32 ulps of
 * accumulated rounding, far below the 2e-5 reference tolerance). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/llama.h"
#include "testutil.h"

#define TOL 1e-6
#define N_GEN 5   /* greedy tokens per sequence */
#define MAX_SEQ 8
#define MAX_LEN 64
#define PAGE 4

static ps_backend *be;
static ps_err err;

typedef struct {
    int n_prompt, len; /* prompt length; tokens known so far (prompt + generated) */
    int done;          /* tokens already run through the model */
    int32_t ids[MAX_LEN];
    int32_t pages[MAX_LEN / PAGE + 1];
    int n_pages;
    float *logits;     /* (MAX_LEN, V): logits at every processed position */
} seqstate;

static seqstate seqs[MAX_SEQ];
static int n_seqs;

static void load_prompts(void) {
    json_t *root = tu_load_json("llama-tiny/ref/cases.json");
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(root, "prompts"), i, p) {
        seqstate *s = &seqs[n_seqs++];
        s->n_prompt = tu_json_ids(json_object_get(p, "input_ids"), s->ids, MAX_LEN);
    }
    json_decref(root);
}

static int argmax(const float *x, int n) {
    int a = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[a]) a = i;
    return a;
}

/* How many tokens sequence i feeds at `step`: prefill chunks of different
 * sizes per sequence, then one token per step while decoding. */
static int take(const seqstate *s, int i, int step) {
    if (s->done < s->n_prompt) {
        int chunk = 3 + 5 * i + 2 * step;
        return s->n_prompt - s->done < chunk ? s->n_prompt - s->done : chunk;
    }
    return s->done < s->len && s->len < s->n_prompt + N_GEN ? 1 : 0;
}

/* Runs every sequence in `order` to completion, `together` = one batch per step
 * (else each sequence alone in the batch). Fills seqs[i].logits. */
static void run(llama_model *m, kv_cache *kv, bool together) {
    int V = llama_get_config(m)->vocab;
    int32_t ids[512], pos[512], tseq[512], kvp[512], rows[512], bt[MAX_SEQ * (MAX_LEN / PAGE + 1)];
    int who[512], max_pages = MAX_LEN / PAGE + 1;
    float *lg = malloc(sizeof(float) * 512 * (size_t)V);
    int n_steps = 0, max_T = 0, mixed_steps = 0;
    for (int step = 0;; step++) {
        int T = 0, n[MAX_SEQ], first = together ? 0 : -1;
        for (int i = 0; i < n_seqs; i++) {
            n[i] = take(&seqs[i], i, step);
            if (!together && first < 0 && n[i]) first = i;
        }
        if (!together)
            for (int i = 0; i < n_seqs; i++)
                if (i != first) n[i] = 0;
        /* interleave: one token of each sequence in turn, newest sequence first */
        for (int r = 0, more = 1; more; r++) {
            more = 0;
            for (int i = n_seqs - 1; i >= 0; i--) {
                seqstate *s = &seqs[i];
                if (r >= n[i]) continue;
                more = 1;
                int p = s->done + r;
                while (s->n_pages * PAGE <= p) s->pages[s->n_pages++] = kv_cache_alloc_page(kv);
                ids[T] = s->ids[p];
                pos[T] = kvp[T] = p;
                tseq[T] = i;
                rows[T] = T;
                who[T++] = i;
            }
        }
        if (T == 0) break;
        int prefill = 0, decode = 0;
        for (int i = 0; i < n_seqs; i++) {
            prefill += n[i] && seqs[i].done < seqs[i].n_prompt;
            decode += n[i] && seqs[i].done >= seqs[i].n_prompt;
        }
        n_steps++;
        max_T = T > max_T ? T : max_T;
        mixed_steps += prefill && decode;
        for (int i = 0; i < n_seqs; i++)
            for (int p = 0; p < max_pages; p++) bt[i * max_pages + p] = p < seqs[i].n_pages ? seqs[i].pages[p] : -1;
        llama_batch b = {T, ids, pos, tseq, kvp, n_seqs, max_pages, bt, T, rows};
        if (llama_forward(m, kv, &b, lg, &err) != PS_OK) {
            TU_CHECK(0, "step %d: %s", step, err.msg);
            break;
        }
        for (int t = 0; t < T; t++) {
            seqstate *s = &seqs[who[t]];
            memcpy(s->logits + (size_t)pos[t] * V, lg + (size_t)t * V, sizeof(float) * (size_t)V);
            if (pos[t] == s->len - 1 && s->len < s->n_prompt + N_GEN) s->ids[s->len++] = argmax(lg + (size_t)t * V, V);
        }
        for (int i = 0; i < n_seqs; i++) seqs[i].done += n[i];
    }
    printf("  %s: %d steps, up to %d tokens per step, %d steps mixing prefill and decode\n",
           together ? "batched" : "alone", n_steps, max_T, mixed_steps);
    free(lg);
}

static void reset(kv_cache *kv) {
    for (int i = 0; i < n_seqs; i++) {
        for (int p = 0; p < seqs[i].n_pages; p++) kv_cache_release_page(kv, seqs[i].pages[p]);
        seqs[i].n_pages = 0;
        seqs[i].done = 0;
        seqs[i].len = seqs[i].n_prompt;
    }
    TU_CHECK(kv->n_free == kv->n_pages, "pages leaked: %d of %d free", kv->n_free, kv->n_pages);
}

static void check_invariance(const char *what, llama_quant q) {
    llama_model *m = NULL;
    kv_cache kv = {0};
    if (llama_load(tu_path("llama-tiny"), q, be, &m, &err) ||
        kv_cache_init(&kv, be, llama_get_config(m), PAGE, 256, PS_DT_F32, &err)) {
        TU_CHECK(0, "%s: %s", what, err.msg);
        llama_free(m);
        return;
    }
    int V = llama_get_config(m)->vocab;
    float *alone[MAX_SEQ];
    int32_t alone_ids[MAX_SEQ][MAX_LEN];
    reset(&kv);
    run(m, &kv, false);
    for (int i = 0; i < n_seqs; i++) {
        alone[i] = seqs[i].logits;
        seqs[i].logits = malloc(sizeof(float) * MAX_LEN * (size_t)V);
        memcpy(alone_ids[i], seqs[i].ids, sizeof alone_ids[i]);
    }
    reset(&kv);
    run(m, &kv, true);
    double worst = 0;
    int rows = 0, identical = 0;
    for (int i = 0; i < n_seqs; i++) {
        seqstate *s = &seqs[i];
        TU_CHECK(s->len == s->n_prompt + N_GEN, "%s seq %d: %d tokens, expected %d", what, i, s->len,
                 s->n_prompt + N_GEN);
        TU_CHECK(!memcmp(alone_ids[i], s->ids, sizeof(int32_t) * (size_t)s->len),
                 "%s seq %d: greedy tokens differ alone vs batched", what, i);
        for (int p = 0; p < s->len - 1; p++) {
            const float *a = s->logits + (size_t)p * V, *b = alone[i] + (size_t)p * V;
            tu_cmp c = tu_compare(a, b, V);
            if (c.rel_l2 > worst) worst = c.rel_l2;
            rows++;
            identical += !memcmp(a, b, sizeof(float) * (size_t)V);
            TU_CHECK(c.rel_l2 <= TOL && c.argmax_a == c.argmax_b,
                     "%s seq %d pos %d: rel_l2 %.3g, argmax %lld vs %lld", what, i, p, c.rel_l2,
                     (long long)c.argmax_a, (long long)c.argmax_b);
        }
    }
    printf("%s: %d positions, max rel L2 batched vs alone %.3g, %d bit-identical\n", what, rows,
           worst, identical);
    reset(&kv);
    for (int i = 0; i < n_seqs; i++) free(alone[i]);
    kv_cache_free(&kv);
    llama_free(m);
}

int main(void) {
    tu_fixtures_or_skip("llama-tiny");
    be = tu_backend_create();
    load_prompts();
    llama_config cfg;
    if (llama_config_load(tu_path("llama-tiny"), &cfg, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    for (int i = 0; i < n_seqs; i++) seqs[i].logits = malloc(sizeof(float) * MAX_LEN * (size_t)cfg.vocab);
    check_invariance("fp", LLAMA_QUANT_NONE);
    check_invariance("nf4", LLAMA_QUANT_NF4);
    for (int i = 0; i < n_seqs; i++) free(seqs[i].logits);
    ps_backend_destroy(be);
    return tu_finish("llama batch invariance");
}
