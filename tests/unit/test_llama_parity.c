/* LLaMA forward parity against llama-tiny's references (Meta's llama/model.py
 * run in float64 on the F16 weights, stored as F32; README sections 4-6):
 *   - fp weights (--quant none): logits.last for all 6 prompts, logits.all.mixed
 *     (every position of one prompt), greedy_fp (16 tokens with the KV cache);
 *   - NF4 + double quant quantised on load: logits.nf4, greedy_nf4;
 *   - NF4 without double quant: logits.nf4_nodq;
 *   - llama-tiny-bnb4 (bitsandbytes checkpoint, no requantisation): logits.nf4
 *     of its ref/expected.safetensors, and greedy_nf4 of its expected.json.
 *
 * Tolerances (fixture README section 9: float32 compute <= 2e-5, about 10x the
 * error of an independent float32 implementation, 8.2e-07). Measured here on
 * the CPU backend (fast AVX-512 linear of kernels/cpu, 2 threads), max over
 * the 6 prompts (last position) or over the 43 positions of `mixed`:
 *   | case                         | max rel L2 | max abs  | argmax |
 *   | fp logits.last               | 5.75e-07   | 4.53e-06 | 6/6    |
 *   | fp logits.all.mixed          | 8.38e-07   | 7.45e-06 | 43/43  |
 *   | NF4+DQ logits.nf4            | 5.95e-07   | 4.56e-06 | 6/6    |
 *   | NF4 no DQ logits.nf4_nodq    | 6.10e-07   | 4.41e-06 | 6/6    |
 *   | bnb-4bit logits.nf4          | 5.95e-07   | 4.56e-06 | 6/6    |
 * (with the naive oracle linear: 8.2e-07, 1.3e-06, 8.1e-07, 1.2e-06, 8.1e-07).
 * A 16-bit KV cache (--kv-dtype; fp weights, logits.last, same reference):
 *   | KV cache F16                 | 4.1e-04    | 3.1e-03  | 6/6    |
 *   | KV cache BF16                | 2.9e-03    | 2.4e-02  | 6/6    |
 * tolerances 1.5e-3 and 1e-2; greedy 16/16 identical for every prompt with either.
 * NF4 quantised on load and the bnb checkpoint give bit-identical logits.
 * Greedy: 16/16 tokens identical for every prompt (fp, NF4, bnb); a step may
 * only differ where the reference top-2 margin is below 2x our measured max
 * abs logit error (~1e-5; the smallest reference margin is 9.7e-4). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/safetensors.h"
#include "models/llama.h"
#include "testutil.h"

#define REL_TOL 2e-5
#define REL_TOL_KV_F16 1.5e-3 /* 16-bit KV caches: ~3.5x the measured error (table above) */
#define REL_TOL_KV_BF16 1e-2
#define N_GREEDY 16
#define PAGE 16

static ps_backend *be;
static ps_err err;
static ps_dtype kv_dt = PS_DT_F32; /* of the caches seq_init makes */
static double rel_tol = REL_TOL;   /* of check_row */

typedef struct {
    const char *id;
    int row, n;
    int32_t ids[128];
    int32_t greedy_fp[N_GREEDY], greedy_nf4[N_GREEDY];
    double margin_fp[N_GREEDY], margin_nf4[N_GREEDY];
} prompt;

static prompt prompts[8];
static int n_prompts;

static void read_greedy(json_t *g, int32_t *ids, double *margins) {
    for (int k = 0; k < N_GREEDY; k++) {
        ids[k] = (int32_t)json_integer_value(json_array_get(json_object_get(g, "ids"), (size_t)k));
        margins[k] = json_number_value(json_array_get(json_object_get(g, "top2_margins"), (size_t)k));
    }
}

static void load_cases(void) {
    json_t *root = tu_load_json("llama-tiny/ref/cases.json");
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(root, "prompts"), i, p) {
        prompt *q = &prompts[n_prompts++];
        q->id = strdup(json_string_value(json_object_get(p, "id")));
        q->row = (int)json_integer_value(json_object_get(p, "row"));
        q->n = tu_json_ids(json_object_get(p, "input_ids"), q->ids, (int)(sizeof q->ids / sizeof q->ids[0]));
        read_greedy(json_object_get(p, "greedy_fp"), q->greedy_fp, q->margin_fp);
        read_greedy(json_object_get(p, "greedy_nf4"), q->greedy_nf4, q->margin_nf4);
    }
    json_decref(root);
}

/* One sequence in a fresh KV cache; pages handed out in reverse order so the
 * block table is not the identity. */
typedef struct {
    kv_cache kv;
    int32_t pages[64];
    int n_pages, len;
} seq;

static void seq_init(seq *s, llama_model *m) {
    memset(s, 0, sizeof *s);
    TU_CHECK(kv_cache_init(&s->kv, be, llama_get_config(m), PAGE, 64, kv_dt, &err) == PS_OK, "kv: %s", err.msg);
    for (int i = 0; i < 63; i++) kv_cache_alloc_page(&s->kv); /* leave only high pages... */
    for (int i = 0; i < 63; i++) kv_cache_release_page(&s->kv, (int32_t)i); /* ...then low ones on top */
}

/* Appends n tokens; logits of the last token (all_rows false) or of every one. */
static ps_status seq_run(llama_model *m, seq *s, const int32_t *ids, int n, bool all_rows,
                         float *logits) {
    int32_t pos[256], tseq[256], kvp[256], rows[256];
    while (s->n_pages * PAGE < s->len + n) s->pages[s->n_pages++] = kv_cache_alloc_page(&s->kv);
    for (int t = 0; t < n; t++) {
        pos[t] = kvp[t] = s->len + t;
        tseq[t] = 0;
        rows[t] = t;
    }
    llama_batch b = {n, ids, pos, tseq, kvp, 1, s->n_pages, s->pages, all_rows ? n : 1,
                     all_rows ? rows : &rows[n - 1]};
    ps_status st = llama_forward(m, &s->kv, &b, logits, &err);
    s->len += n;
    return st;
}

static int argmax(const float *x, int n) {
    int a = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[a]) a = i;
    return a;
}

/* Compares one row; returns its max abs error (for the greedy rule). */
static double worst_abs; /* max abs error of the current check (reset by the caller) */

static double check_row(const char *what, const char *id, const float *got, const float *want, int V,
                        double *worst_rel) {
    tu_cmp c = tu_compare(got, want, V);
    if (c.rel_l2 > *worst_rel) *worst_rel = c.rel_l2;
    if (c.max_abs > worst_abs) worst_abs = c.max_abs;
    TU_CHECK(c.rel_l2 <= rel_tol, "%s %s: rel_l2 %.3g > %.1g (max abs %.3g at %lld)", what, id,
             c.rel_l2, rel_tol, c.max_abs, (long long)c.max_index);
    TU_CHECK(c.argmax_a == c.argmax_b, "%s %s: argmax %lld, expected %lld", what, id,
             (long long)c.argmax_a, (long long)c.argmax_b);
    if (c.rel_l2 > rel_tol) tu_print_diff(what, got, want, V);
    return c.max_abs;
}

/* A greedy step may differ from the reference only where its top-2 margin is
 * below our logit error (README 10): 2x the max abs error measured on the
 * model's last-position logits (top-1 and top-2 can move in opposite ways). */
static void check_greedy(const char *what, llama_model *m, const prompt *p, const int32_t *want,
                         const double *margins, double logit_err) {
    int V = llama_get_config(m)->vocab;
    float *lg = malloc(sizeof(float) * (size_t)V);
    seq s;
    seq_init(&s, m);
    TU_CHECK(seq_run(m, &s, p->ids, p->n, false, lg) == PS_OK, "%s: %s", what, err.msg);
    int same = 0;
    for (int k = 0; k < N_GREEDY; k++) {
        int32_t tok = argmax(lg, V);
        if (tok != want[k]) {
            TU_CHECK(margins[k] <= 2 * logit_err,
                     "%s %s: step %d token %d, expected %d (margin %.3g, our logit error %.3g)", what,
                     p->id, k, tok, want[k], margins[k], logit_err);
            printf("  %s %s: diverged at step %d where the reference margin is %.3g\n", what, p->id,
                   k, margins[k]);
            break;
        }
        same++;
        if (k + 1 < N_GREEDY && seq_run(m, &s, &tok, 1, false, lg) != PS_OK) {
            TU_CHECK(0, "%s: %s", what, err.msg);
            break;
        }
    }
    printf("  %s %s: %d/%d greedy tokens identical\n", what, p->id, same, N_GREEDY);
    kv_cache_free(&s.kv);
    free(lg);
}

/* logits.last of every prompt (and greedy) for one model against one reference tensor. */
static float *last_logits; /* when set: check_model stores each prompt's last logits here */

static void check_model(const char *what, llama_model *m, st_set *ref, const char *tensor,
                        bool greedy_nf4) {
    int V = llama_get_config(m)->vocab;
    const float *want = tu_ref_f32(ref, tensor, (int64_t)6 * V);
    float *lg = malloc(sizeof(float) * (size_t)V);
    double worst = 0;
    worst_abs = 0;
    for (int i = 0; i < n_prompts; i++) {
        seq s;
        seq_init(&s, m);
        TU_CHECK(seq_run(m, &s, prompts[i].ids, prompts[i].n, false, lg) == PS_OK, "%s: %s", what, err.msg);
        check_row(what, prompts[i].id, lg, want + (size_t)prompts[i].row * V, V, &worst);
        if (last_logits) memcpy(last_logits + (size_t)i * V, lg, sizeof(float) * (size_t)V);
        kv_cache_free(&s.kv);
    }
    printf("%s: max rel L2 over %d prompts %.3g, max abs %.3g\n", what, n_prompts, worst, worst_abs);
    double logit_err = worst_abs;
    for (int i = 0; i < n_prompts; i++)
        check_greedy(what, m, &prompts[i], greedy_nf4 ? prompts[i].greedy_nf4 : prompts[i].greedy_fp,
                     greedy_nf4 ? prompts[i].margin_nf4 : prompts[i].margin_fp, logit_err);
    free(lg);
}

static void check_all_positions(llama_model *m, st_set *ref) {
    int V = llama_get_config(m)->vocab;
    const prompt *p = NULL;
    for (int i = 0; i < n_prompts; i++)
        if (!strcmp(prompts[i].id, "mixed")) p = &prompts[i];
    TU_CHECK(p != NULL, "prompt 'mixed' not in cases.json");
    if (!p) return;
    const float *want = tu_ref_f32(ref, "logits.all.mixed", (int64_t)p->n * V);
    float *lg = malloc(sizeof(float) * (size_t)p->n * V);
    seq s;
    seq_init(&s, m);
    TU_CHECK(seq_run(m, &s, p->ids, p->n, true, lg) == PS_OK, "all positions: %s", err.msg);
    double worst = 0;
    char id[32];
    worst_abs = 0;
    for (int t = 0; t < p->n; t++) {
        snprintf(id, sizeof id, "pos %d", t);
        check_row("fp logits.all.mixed", id, lg + (size_t)t * V, want + (size_t)t * V, V, &worst);
    }
    printf("fp logits.all.mixed: max rel L2 over %d positions %.3g, max abs %.3g\n", p->n, worst,
           worst_abs);
    kv_cache_free(&s.kv);
    free(lg);
}

static llama_model *load(const char *rel, llama_quant q) {
    llama_model *m = NULL;
    TU_CHECK(llama_load(tu_path(rel), q, be, &m, &err) == PS_OK, "load %s: %s", rel, err.msg);
    return m;
}

int main(void) {
    tu_fixtures_or_skip("llama-tiny");
    be = tu_backend_create();
    load_cases();
    st_set *base = NULL, *nf4 = NULL, *bnb = NULL;
    if (st_open(tu_path("llama-tiny/ref/base.safetensors"), &base, &err) ||
        st_open(tu_path("llama-tiny/ref/nf4.safetensors"), &nf4, &err)) {
        fprintf(stderr, "references: %s\n", err.msg);
        return 1;
    }
    llama_model *m = load("llama-tiny", LLAMA_QUANT_NONE);
    if (m) {
        check_model("fp logits.last", m, base, "logits.last", false);
        check_all_positions(m, base);
        /* the same model with a 16-bit KV cache (--kv-dtype): prefill and greedy decode */
        kv_dt = PS_DT_F16, rel_tol = REL_TOL_KV_F16;
        check_model("fp logits.last, f16 kv cache", m, base, "logits.last", false);
        kv_dt = PS_DT_BF16, rel_tol = REL_TOL_KV_BF16;
        check_model("fp logits.last, bf16 kv cache", m, base, "logits.last", false);
        kv_dt = PS_DT_F32, rel_tol = REL_TOL;
        llama_free(m);
    }
    /* quantised on load and read from the bnb checkpoint: the same bytes, so the
     * logits must be bit-identical (not just within tolerance) */
    int V = 2000;
    float *from_f16 = calloc((size_t)8 * V, sizeof(float)), *from_bnb = calloc((size_t)8 * V, sizeof(float));
    if ((m = load("llama-tiny", LLAMA_QUANT_NF4))) {
        V = llama_get_config(m)->vocab;
        last_logits = from_f16;
        check_model("nf4+dq logits.nf4", m, nf4, "logits.nf4", true);
        last_logits = NULL;
        llama_free(m);
    }
    if ((m = load("llama-tiny", LLAMA_QUANT_NF4_NODQ))) {
        int V = llama_get_config(m)->vocab;
        const float *want = tu_ref_f32(nf4, "logits.nf4_nodq", (int64_t)6 * V);
        float *lg = malloc(sizeof(float) * (size_t)V);
        double worst = 0;
        worst_abs = 0;
        for (int i = 0; i < n_prompts; i++) {
            seq s;
            seq_init(&s, m);
            TU_CHECK(seq_run(m, &s, prompts[i].ids, prompts[i].n, false, lg) == PS_OK, "nodq: %s", err.msg);
            check_row("nf4 nodq", prompts[i].id, lg, want + (size_t)prompts[i].row * V, V, &worst);
            kv_cache_free(&s.kv);
        }
        printf("nf4 no-DQ logits.nf4_nodq: max rel L2 %.3g, max abs %.3g\n", worst, worst_abs);
        free(lg);
        llama_free(m);
    }
    if (tu_fixtures_or_skip(NULL) && !st_open(tu_path("llama-tiny-bnb4/ref/expected.safetensors"), &bnb, &err)) {
        /* --quant none on a bnb checkpoint still gives the stored NF4 weights */
        llama_quant qs[2] = {LLAMA_QUANT_NF4, LLAMA_QUANT_NONE};
        for (int i = 0; i < 2; i++)
            if ((m = load("llama-tiny-bnb4", qs[i]))) {
                last_logits = i ? NULL : from_bnb;
                check_model(i ? "bnb4 (quant none) logits.nf4" : "bnb4 logits.nf4", m, bnb,
                            "logits.nf4", true);
                llama_free(m);
            }
        last_logits = NULL;
        TU_CHECK(!memcmp(from_f16, from_bnb, sizeof(float) * (size_t)n_prompts * V),
                 "NF4 quantised on load and the bnb-4bit checkpoint give different logits");
    } else {
        TU_CHECK(0, "llama-tiny-bnb4 references: %s", err.msg);
    }
    free(from_f16);
    free(from_bnb);
    st_close(base);
    st_close(nf4);
    st_close(bnb);
    for (int i = 0; i < n_prompts; i++) free((void *)prompts[i].id);
    ps_backend_destroy(be);
    return tu_finish("llama parity");
}
