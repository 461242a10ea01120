/* PEFT adapters in llama_forward against llama-tiny's references (PEFT
 * semantics run through Meta's llama/model.py in float64; README section 7):
 *   - every fixture adapter (lora-qv, lora-all, lora-rs, prefix, prompt) on the
 *     fp base (--quant none) and on the NF4+DQ base: last-position logits of
 *     the 6 prompts vs `<adapter>.<fp|nf4>.logits.last`, and the 16-token
 *     greedy continuation of `en` (KV cache, positions continuing) vs
 *     cases.json adapters.<name>.<fp|nf4>.greedy;
 *   - the three LoRA fixtures (F32 files) stored as F16 and as BF16
 *     (adapter_limits.lora_dtype, --adapter-dtype), with their own tolerances;
 *   - modules_to_save (lm_head, embed_tokens; no fixture): identities, see
 *     check_saved_modules;
 *   - the two mixed batches of cases.json: the three rows (different adapters,
 *     or none; different lengths; prefix and prompt rows with their own
 *     positions) run in ONE llama_forward step, each row vs
 *     `mixed.<batch>.<fp|nf4>.logits` and vs the same row run alone.
 *
 * Prefix rows: llama_store_prefix fills cache entries 0..P-1, the prompt runs
 * at kv_pos/pos P.. . Prompt-tuning rows: n_virtual virtual tokens (ids 0,
 * tok_virtual 0..n-1) at positions 0..n-1 precede BOS.
 *
 * Tolerances (README 9: float32 <= 2e-5 rel L2, argmax equal). Measured on
 * the CPU backend (2 threads, fast AVX-512 linear + SGMV LoRA), max over the
 * 6 prompts, printed per adapter when the test runs: fp 4.9e-07..8.6e-07,
 * NF4 5.7e-07..9.6e-07 (max abs 7.4e-06); mixed rows 3.4e-07..6.3e-07.
 * Batched vs alone: rel L2 <= 1e-6 allowed (see test_llama_batch.c); every
 * row was bit-identical on the CPU backend. Greedy: a step may differ only
 * where the reference top-2 margin is below 2x our max abs logit error. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "adapter.h"
#include "base/safetensors.h"
#include "models/llama.h"
#include "testutil.h"

#define REL_TOL 2e-5
/* LoRA stored as F16 / BF16 (check_narrowed_lora), measured worst on the CPU
 * backend: F16 1.6e-4 rel L2 (max abs 1.3e-3), BF16 1.3e-3 (1.0e-2), greedy
 * 16/16 everywhere; the tolerances leave 3x */
#define NARROW_TOL_F16 5e-4
#define NARROW_TOL_BF16 4e-3
#define BATCH_TOL 1e-6
#define N_GREEDY 16
#define PAGE 16
#define N_PAGES 128
#define MAX_TOK 256

static ps_backend *be;
static ps_err err;

typedef struct {
    char id[16];
    int row, n;
    int32_t ids[128];
} prompt;
static prompt prompts[8];
static int n_prompts;

typedef struct {
    const char *name;
    adapter *a;
    int32_t greedy[2][N_GREEDY]; /* [fp, nf4] */
    double margin[2][N_GREEDY];
} fixture_adapter;
static fixture_adapter fxa[] = {{"lora-qv"}, {"lora-all"}, {"lora-rs"}, {"prefix"}, {"prompt"}};
#define N_FXA ((int)(sizeof fxa / sizeof fxa[0]))

typedef struct {
    char name[32];
    int prompt[3];      /* index into prompts */
    int adapter[3];     /* index into fxa, -1 = base */
    char tensor[2][96]; /* fp, nf4 reference names (without the file prefix) */
} mixed_batch;
static mixed_batch mixed[4];
static int n_mixed;

static int find_prompt(const char *id) {
    for (int i = 0; i < n_prompts; i++)
        if (!strcmp(prompts[i].id, id)) return i;
    fprintf(stderr, "prompt %s not in cases.json\n", id);
    exit(1);
}

static int find_adapter(const char *name) {
    for (int i = 0; i < N_FXA; i++)
        if (!strcmp(fxa[i].name, name)) return i;
    fprintf(stderr, "adapter %s not a fixture\n", name);
    exit(1);
}

static const char *after_colon(const char *s) {
    const char *c = strchr(s, ':');
    return c ? c + 1 : s;
}

static void load_cases(void) {
    json_t *root = tu_load_json("llama-tiny/ref/cases.json");
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(root, "prompts"), i, p) {
        prompt *q = &prompts[n_prompts++];
        snprintf(q->id, sizeof q->id, "%s", json_string_value(json_object_get(p, "id")));
        q->row = (int)json_integer_value(json_object_get(p, "row"));
        q->n = tu_json_ids(json_object_get(p, "input_ids"), q->ids, (int)(sizeof q->ids / sizeof q->ids[0]));
    }
    for (int a = 0; a < N_FXA; a++) {
        json_t *ad = json_object_get(json_object_get(root, "adapters"), fxa[a].name);
        for (int q = 0; q < 2; q++) {
            json_t *g = json_object_get(json_object_get(ad, q ? "nf4" : "fp"), "greedy");
            if (strcmp(json_string_value(json_object_get(g, "prompt")), "en")) exit(1);
            for (int k = 0; k < N_GREEDY; k++) {
                fxa[a].greedy[q][k] = (int32_t)json_integer_value(json_array_get(json_object_get(g, "ids"), (size_t)k));
                fxa[a].margin[q][k] = json_number_value(json_array_get(json_object_get(g, "top2_margins"), (size_t)k));
            }
        }
    }
    json_array_foreach(json_object_get(root, "mixed_batches"), i, p) {
        mixed_batch *mb = &mixed[n_mixed++];
        snprintf(mb->name, sizeof mb->name, "%s", json_string_value(json_object_get(p, "name")));
        snprintf(mb->tensor[0], sizeof mb->tensor[0], "%s", after_colon(json_string_value(json_object_get(p, "fp"))));
        snprintf(mb->tensor[1], sizeof mb->tensor[1], "%s", after_colon(json_string_value(json_object_get(p, "nf4"))));
        for (int r = 0; r < 3; r++) {
            json_t *row = json_array_get(json_object_get(p, "rows"), (size_t)r);
            mb->prompt[r] = find_prompt(json_string_value(json_object_get(row, "prompt")));
            json_t *an = json_object_get(row, "adapter");
            mb->adapter[r] = json_is_string(an) ? find_adapter(json_string_value(an)) : -1;
        }
    }
    json_decref(root);
}

/* ---- sequences sharing one paged cache ---- */

typedef struct {
    const adapter *a;
    int32_t pages[MAX_TOK / PAGE + 1];
    int n_pages;
    int len;      /* cache entries used (prefix and virtual tokens included) */
    bool started; /* virtual tokens already run */
} seq;

static void seq_start(seq *s, llama_model *m, kv_cache *kv, const adapter *a) {
    memset(s, 0, sizeof *s);
    s->a = a;
    if (a && a->kind == ADAPTER_PREFIX) {
        while (s->n_pages * PAGE < a->n_prefix) s->pages[s->n_pages++] = kv_cache_alloc_page(kv);
        TU_CHECK(llama_store_prefix(m, kv, s->pages, s->n_pages, a, &err) == PS_OK, "prefix: %s", err.msg);
        s->len = a->n_prefix;
    }
}

static void seq_end(seq *s, kv_cache *kv) {
    for (int i = 0; i < s->n_pages; i++) kv_cache_release_page(kv, s->pages[i]);
}

/* One step: sequence i appends n[i] tokens (plus its virtual tokens first,
 * on its first step); logits of each sequence's last token go to row i. */
static ps_status step(llama_model *m, kv_cache *kv, seq **seqs, int S, const int32_t *const *ids, const int *n,
                      float *logits) {
    static int32_t tid[MAX_TOK], pos[MAX_TOK], tseq[MAX_TOK], kvp[MAX_TOK], tad[MAX_TOK], tvirt[MAX_TOK];
    static int32_t out[8], bt[8 * (MAX_TOK / PAGE + 1)];
    const adapter *ads[8];
    int T = 0, n_ads = 0, max_pages = MAX_TOK / PAGE + 1;
    for (int i = 0; i < S; i++) {
        seq *s = seqs[i];
        int ai = -1;
        for (int j = 0; s->a && j < n_ads; j++)
            if (ads[j] == s->a) ai = j;
        if (s->a && ai < 0) ads[ai = n_ads++] = s->a;
        int nv = s->a && s->a->kind == ADAPTER_PROMPT && !s->started ? s->a->n_virtual : 0;
        for (int j = 0; j < nv + n[i]; j++, T++) {
            tid[T] = j < nv ? 0 : ids[i][j - nv];
            tvirt[T] = j < nv ? j : -1;
            pos[T] = kvp[T] = s->len + j;
            tseq[T] = i;
            tad[T] = ai;
        }
        s->started = true;
        s->len += nv + n[i];
        while (s->n_pages * PAGE < s->len) s->pages[s->n_pages++] = kv_cache_alloc_page(kv);
        for (int p = 0; p < max_pages; p++) bt[i * max_pages + p] = p < s->n_pages ? s->pages[p] : -1;
        out[i] = T - 1;
    }
    llama_batch b = {T, tid, pos, tseq, kvp, S, max_pages, bt, S, out, n_ads, ads, tad, tvirt};
    return llama_forward(m, kv, &b, logits, &err);
}

/* One prompt alone with adapter a (NULL = base): last-position logits. */
static void run_alone(llama_model *m, kv_cache *kv, const adapter *a, const prompt *p, float *logits) {
    seq s, *sp = &s;
    seq_start(&s, m, kv, a);
    const int32_t *ids = p->ids;
    TU_CHECK(step(m, kv, &sp, 1, &ids, &p->n, logits) == PS_OK, "%s: %s", p->id, err.msg);
    seq_end(&s, kv);
}

static int argmax(const float *x, int n) {
    int a = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[a]) a = i;
    return a;
}

static double worst_rel_all;

/* Logits of all prompts vs the reference (rel L2 <= tol, argmax equal);
 * greedy of `en`. */
static void check_adapter(llama_model *m, kv_cache *kv, st_set *r, int q, fixture_adapter *fa, double tol,
                          const char *qn) {
    int V = llama_get_config(m)->vocab;
    char tn[128];
    snprintf(tn, sizeof tn, "%s.%s.logits.last", fa->name, q ? "nf4" : "fp");
    const float *want = tu_ref_f32(r, tn, (int64_t)6 * V);
    float *lg = malloc(sizeof(float) * (size_t)V);
    double worst = 0, worst_abs = 0;
    for (int i = 0; i < n_prompts; i++) {
        run_alone(m, kv, fa->a, &prompts[i], lg);
        tu_cmp c = tu_compare(lg, want + (size_t)prompts[i].row * V, V);
        worst = c.rel_l2 > worst ? c.rel_l2 : worst;
        worst_abs = c.max_abs > worst_abs ? c.max_abs : worst_abs;
        TU_CHECK(c.rel_l2 <= tol && c.argmax_a == c.argmax_b, "%s %s %s: rel_l2 %.3g argmax %lld/%lld", fa->name,
                 qn, prompts[i].id, c.rel_l2, (long long)c.argmax_a, (long long)c.argmax_b);
        if (c.rel_l2 > tol) tu_print_diff(tn, lg, want + (size_t)prompts[i].row * V, V);
    }
    if (tol == REL_TOL) worst_rel_all = worst > worst_rel_all ? worst : worst_rel_all;
    /* greedy on `en`, incremental decoding */
    const prompt *en = &prompts[find_prompt("en")];
    seq s, *sp = &s;
    seq_start(&s, m, kv, fa->a);
    const int32_t *ids = en->ids;
    int same = 0;
    ps_status st = step(m, kv, &sp, 1, &ids, &en->n, lg);
    for (int k = 0; k < N_GREEDY && st == PS_OK; k++) {
        int32_t tok = argmax(lg, V);
        if (tok != fa->greedy[q][k]) {
            TU_CHECK(fa->margin[q][k] <= 2 * worst_abs, "%s %s greedy step %d: %d, expected %d (margin %.3g)", fa->name,
                     qn, k, tok, fa->greedy[q][k], fa->margin[q][k]);
            break;
        }
        same++;
        int one = 1;
        const int32_t *tp = &tok;
        if (k + 1 < N_GREEDY) st = step(m, kv, &sp, 1, &tp, &one, lg);
    }
    TU_CHECK(st == PS_OK, "%s greedy: %s", fa->name, err.msg);
    seq_end(&s, kv);
    printf("%-8s %-9s: max rel L2 %.3g, max abs %.3g over %d prompts; greedy %d/%d identical\n", fa->name, qn,
           worst, worst_abs, n_prompts, same, N_GREEDY);
    free(lg);
}

/* The three rows in one step vs the reference and vs each row alone. */
static void check_mixed(llama_model *m, kv_cache *kv, st_set *r, int q, const mixed_batch *mb) {
    const char *qn = q ? "nf4" : "fp";
    int V = llama_get_config(m)->vocab;
    const float *want = tu_ref_f32(r, mb->tensor[q], (int64_t)3 * V);
    float *lg = malloc(sizeof(float) * 3 * (size_t)V), *alone = malloc(sizeof(float) * (size_t)V);
    seq s[3], *sp[3];
    const int32_t *ids[3];
    int n[3];
    for (int i = 0; i < 3; i++) {
        seq_start(&s[i], m, kv, mb->adapter[i] >= 0 ? fxa[mb->adapter[i]].a : NULL);
        sp[i] = &s[i];
        ids[i] = prompts[mb->prompt[i]].ids;
        n[i] = prompts[mb->prompt[i]].n;
    }
    TU_CHECK(step(m, kv, sp, 3, ids, n, lg) == PS_OK, "%s: %s", mb->name, err.msg);
    for (int i = 0; i < 3; i++) seq_end(&s[i], kv);
    for (int i = 0; i < 3; i++) {
        const char *an = mb->adapter[i] >= 0 ? fxa[mb->adapter[i]].name : "base";
        tu_cmp c = tu_compare(lg + (size_t)i * V, want + (size_t)i * V, V);
        TU_CHECK(c.rel_l2 <= REL_TOL && c.argmax_a == c.argmax_b, "%s %s row %d (%s): rel_l2 %.3g", mb->name, qn, i,
                 an, c.rel_l2);
        run_alone(m, kv, mb->adapter[i] >= 0 ? fxa[mb->adapter[i]].a : NULL, &prompts[mb->prompt[i]], alone);
        tu_cmp ca = tu_compare(lg + (size_t)i * V, alone, V);
        bool bits = !memcmp(lg + (size_t)i * V, alone, sizeof(float) * (size_t)V);
        TU_CHECK(ca.rel_l2 <= BATCH_TOL, "%s %s row %d: batched vs alone rel_l2 %.3g", mb->name, qn, i, ca.rel_l2);
        printf("%s %-3s row %d (%-8s %-6s): vs reference rel L2 %.3g; vs alone %s\n", mb->name, qn, i, an,
               prompts[mb->prompt[i]].id, c.rel_l2, bits ? "bit-identical" : "differs");
    }
    free(lg);
    free(alone);
}

/* ---- modules_to_save (no fixture: identities instead) ----
 * An adapter = lora-qv + lm_head' = 2 x the base lm_head + embed_tokens' = the
 * base table with rows X and Y swapped (X in the prompt, Y not). On prompt P
 * it must give exactly twice the logits lora-qv gives on P with X replaced by
 * Y, alone and inside a batch next to rows without modules_to_save. */

static adapter *make_saved_modules_adapter(const adapter_base_shape *shape, int32_t X, int32_t Y) {
    st_set *model = NULL, *qv = NULL;
    st_open(tu_path("llama-tiny/model.safetensors"), &model, &err);
    st_open(tu_path("llama-tiny/adapters/lora-qv/adapter_model.safetensors"), &qv, &err);
    int64_t n = (int64_t)shape->vocab * shape->hidden, C = shape->hidden;
    float *lm = malloc(sizeof(float) * (size_t)n), *emb = malloc(sizeof(float) * (size_t)n);
    st_to_f32(st_find(model, "lm_head.weight"), lm, n, &err);
    st_to_f32(st_find(model, "model.embed_tokens.weight"), emb, n, &err);
    for (int64_t i = 0; i < n; i++) lm[i] *= 2.0f;
    for (int64_t c = 0; c < C; c++) {
        float t = emb[X * C + c];
        emb[X * C + c] = emb[Y * C + c];
        emb[Y * C + c] = t;
    }
    st_write_item items[40];
    int k = 0;
    for (int i = 0; i < st_count(qv); i++) {
        const st_tensor *t = st_at(qv, i);
        items[k++] = (st_write_item){t->name, t->dtype, t->ndim, {t->shape[0], t->shape[1]}, t->data};
    }
    items[k++] = (st_write_item){"base_model.model.lm_head.weight", ST_F32, 2, {shape->vocab, C}, lm};
    items[k++] = (st_write_item){"base_model.model.model.embed_tokens.weight", ST_F32, 2, {shape->vocab, C}, emb};
    char path[256];
    snprintf(path, sizeof path, "%s/ps_saved_modules_%d.safetensors", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
             (int)getpid());
    adapter *a = NULL;
    size_t cfg_n = 0, st_n = 0;
    char *cfg = tu_read_file(tu_path("llama-tiny/adapters/lora-qv/adapter_config.json"), &cfg_n), *st = NULL;
    json_t *j = json_loadb(cfg, cfg_n, 0, NULL);
    json_object_set_new(j, "modules_to_save", json_pack("[s, s]", "lm_head", "embed_tokens"));
    char *cfg2 = json_dumps(j, 0);
    if (st_write(path, items, k, NULL, &err) == PS_OK && (st = tu_read_file(path, &st_n)))
        TU_CHECK(adapter_load_mem("saved", cfg2, strlen(cfg2), st, st_n, shape, NULL, be, &a, &err) == PS_OK,
                 "modules_to_save adapter: %s", err.msg);
    unlink(path);
    free(cfg), free(cfg2), free(st), free(lm), free(emb);
    json_decref(j);
    st_close(model), st_close(qv);
    return a;
}

static void check_saved_modules(llama_model *m, kv_cache *kv, int q, const adapter_base_shape *shape) {
    const prompt *en = &prompts[find_prompt("en")];
    int32_t X = en->ids[3], Y = 1000;
    for (int t = 0; t < en->n; t++) TU_CHECK(en->ids[t] != Y, "token %d is in the prompt", Y);
    adapter *sm = make_saved_modules_adapter(shape, X, Y);
    if (!sm) return;
    TU_CHECK(sm->lm_head && sm->embed_tokens && sm->kind == ADAPTER_LORA, "saved modules present");
    prompt swapped = *en;
    for (int t = 0; t < en->n; t++) swapped.ids[t] = en->ids[t] == X ? Y : en->ids[t];
    int V = llama_get_config(m)->vocab;
    float *want = malloc(sizeof(float) * (size_t)V), *got = malloc(sizeof(float) * (size_t)V);
    float *batch = malloc(sizeof(float) * 3 * (size_t)V), *base = malloc(sizeof(float) * (size_t)V);
    run_alone(m, kv, fxa[find_adapter("lora-qv")].a, &swapped, want);
    for (int v = 0; v < V; v++) want[v] *= 2.0f; /* exact in float */
    run_alone(m, kv, sm, en, got);
    tu_cmp c = tu_compare(got, want, V);
    TU_CHECK(c.rel_l2 <= BATCH_TOL && c.argmax_a == c.argmax_b, "modules_to_save %s: rel_l2 %.3g", q ? "nf4" : "fp",
             c.rel_l2);
    /* in one step with the base and with lora-qv on the swapped prompt */
    run_alone(m, kv, NULL, en, base);
    seq s[3], *sp[3] = {&s[0], &s[1], &s[2]};
    const adapter *ads[3] = {sm, NULL, fxa[find_adapter("lora-qv")].a};
    const int32_t *ids[3] = {en->ids, en->ids, swapped.ids};
    int n[3] = {en->n, en->n, swapped.n};
    for (int i = 0; i < 3; i++) seq_start(&s[i], m, kv, ads[i]);
    TU_CHECK(step(m, kv, sp, 3, ids, n, batch) == PS_OK, "saved modules batch: %s", err.msg);
    for (int i = 0; i < 3; i++) seq_end(&s[i], kv);
    tu_cmp c0 = tu_compare(batch, want, V), c1 = tu_compare(batch + V, base, V);
    for (int v = 0; v < V; v++) batch[2 * V + v] *= 2.0f;
    tu_cmp c2 = tu_compare(batch + 2 * V, want, V);
    TU_CHECK(c0.rel_l2 <= BATCH_TOL && c1.rel_l2 <= BATCH_TOL && c2.rel_l2 <= BATCH_TOL,
             "saved modules in a batch: %.3g %.3g %.3g", c0.rel_l2, c1.rel_l2, c2.rel_l2);
    printf("modules_to_save %-3s: 2 x lora-qv(swapped prompt) rel L2 %.3g alone, %.3g in a batch (base row %.3g)\n",
           q ? "nf4" : "fp", c.rel_l2, c0.rel_l2, c1.rel_l2);
    free(want), free(got), free(batch), free(base);
    adapter_free(sm);
}

/* The F32 LoRA fixtures stored as F16 and as BF16 (--adapter-dtype): against
 * the same float64 references, with the tolerances that rounding A and B to
 * 11 / 8 significant bits allows (measured worst printed; see the header). */
static void check_narrowed_lora(llama_model *m, kv_cache *kv, st_set *r, int q, const adapter_base_shape *shape) {
    static const ps_dtype dts[2] = {PS_DT_F16, PS_DT_BF16};
    static const double tols[2] = {NARROW_TOL_F16, NARROW_TOL_BF16};
    for (int d = 0; d < 2; d++)
        for (int a = 0; a < N_FXA; a++) {
            if (strncmp(fxa[a].name, "lora", 4)) continue;
            adapter_limits lim = adapter_limits_default();
            lim.lora_dtype = dts[d];
            char rel[128], qn[16];
            snprintf(rel, sizeof rel, "llama-tiny/adapters/%s", fxa[a].name);
            fixture_adapter fa = fxa[a];
            if (adapter_load_dir(tu_path(rel), fa.name, shape, &lim, be, &fa.a, &err)) {
                TU_CHECK(0, "adapter %s as %s: %s", fa.name, ps_dtype_name(dts[d]), err.msg);
                continue;
            }
            TU_CHECK(fa.a->lora_dtype == dts[d], "%s: stored as %s, asked for %s", fa.name,
                     ps_dtype_name(fa.a->lora_dtype), ps_dtype_name(dts[d]));
            snprintf(qn, sizeof qn, "%s %s", q ? "nf4" : "fp", d ? "bf16" : "f16");
            check_adapter(m, kv, r, q, &fa, tols[d], qn);
            adapter_free(fa.a);
        }
}

int main(void) {
    tu_fixtures_or_skip("llama-tiny/adapters");
    be = tu_backend_create();
    load_cases();
    st_set *r = NULL;
    if (st_open(tu_path("llama-tiny/ref/adapters.safetensors"), &r, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    for (int q = 0; q < 2; q++) {
        llama_model *m = NULL;
        if (llama_load(tu_path("llama-tiny"), q ? LLAMA_QUANT_NF4 : LLAMA_QUANT_NONE, be, &m, &err)) {
            TU_CHECK(0, "load: %s", err.msg);
            continue;
        }
        const llama_config *c = llama_get_config(m);
        adapter_base_shape shape = {c->n_layers, c->hidden, c->ffn, c->n_heads, c->n_kv_heads, c->head_dim, c->vocab};
        for (int a = 0; a < N_FXA; a++) {
            char rel[128];
            snprintf(rel, sizeof rel, "llama-tiny/adapters/%s", fxa[a].name);
            if (adapter_load_dir(tu_path(rel), fxa[a].name, &shape, NULL, be, &fxa[a].a, &err)) {
                fprintf(stderr, "adapter %s: %s\n", fxa[a].name, err.msg);
                return 1;
            }
        }
        kv_cache kv = {0};
        TU_CHECK(kv_cache_init(&kv, be, c, PAGE, N_PAGES, PS_DT_F32, &err) == PS_OK, "kv: %s", err.msg);
        for (int i = 0; i < N_PAGES; i++) kv_cache_alloc_page(&kv); /* scramble the free list */
        for (int i = 0; i < N_PAGES; i += 2) kv_cache_release_page(&kv, i);
        for (int i = N_PAGES - 1; i > 0; i -= 2) kv_cache_release_page(&kv, i);
        for (int a = 0; a < N_FXA; a++) check_adapter(m, &kv, r, q, &fxa[a], REL_TOL, q ? "nf4" : "fp");
        check_narrowed_lora(m, &kv, r, q, &shape);
        for (int i = 0; i < n_mixed; i++) check_mixed(m, &kv, r, q, &mixed[i]);
        check_saved_modules(m, &kv, q, &shape);
        TU_CHECK(kv.n_free == N_PAGES, "pages leaked: %d of %d free", kv.n_free, N_PAGES);
        kv_cache_free(&kv);
        for (int a = 0; a < N_FXA; a++) adapter_free(fxa[a].a), fxa[a].a = NULL;
        llama_free(m);
    }
    printf("worst rel L2 over all adapters and bases: %.3g (tolerance %.0e)\n", worst_rel_all, REL_TOL);
    st_close(r);
    ps_backend_destroy(be);
    return tu_finish("adapter parity");
}
