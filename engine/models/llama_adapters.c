/* PEFT adapters inside llama_forward: per-token LoRA deltas, prompt-tuning
 * virtual tokens, modules_to_save embed_tokens / lm_head, and the prefix-
 * tuning cache fill (llama_store_prefix). Semantics: huggingface/peft
 * (tuners/lora/layer.py Linear.forward, peft_model.py PeftModelForCausalLM
 * forward and get_prompt); see shared/fixtures/llama-tiny/README.md section 7.
 *
 * A step may mix adapters of every kind and tokens without any. LoRA never
 * touches the base weights: per (layer, projection) the step has one table of
 * (A, B, r, scale) per adapter, and op_lora_bgmv adds each token's delta from
 * its adapter's entry (A == NULL where that adapter leaves the projection
 * alone). Embedding and lm_head replacements run per run of consecutive tokens
 * (or output rows) that share an adapter, through the ordinary op_embed and
 * op_linear. */
#include <stdlib.h>
#include <string.h>

#include "models/llama_internal.h"

int llama_adapters_meta_ints(const llama_batch *b) {
    return b->n_adapters > 0 ? 2 * b->n_tokens : 0;
}

static bool shape_fits(const adapter_base_shape *s, const llama_config *c) {
    return s->n_layers == c->n_layers && s->hidden == c->hidden && s->ffn == c->ffn && s->n_heads == c->n_heads &&
           s->n_kv_heads == c->n_kv_heads && s->head_dim == c->head_dim && s->vocab == c->vocab;
}

ps_status llama_adapters_check(const llama_model *m, const llama_batch *b, ps_err *err) {
    if (b->n_adapters == 0) {
        if (b->tok_virtual)
            for (int t = 0; t < b->n_tokens; t++)
                if (b->tok_virtual[t] >= 0)
                    return ps_errf(err, PS_EINVAL, "llama batch: token %d is virtual but the step has no adapters", t);
        return PS_OK;
    }
    if (b->n_adapters < 0 || !b->adapters || !b->tok_adapter)
        return ps_errf(err, PS_EINVAL, "llama batch: %d adapters without the adapter arrays", b->n_adapters);
    for (int i = 0; i < b->n_adapters; i++)
        if (!b->adapters[i] || !shape_fits(&b->adapters[i]->base, &m->cfg))
            return ps_errf(err, PS_EINVAL, "llama batch: adapter %d ('%s') was not loaded for this model", i,
                           b->adapters[i] ? b->adapters[i]->name : "(null)");
    for (int t = 0; t < b->n_tokens; t++) {
        int a = b->tok_adapter[t], v = b->tok_virtual ? b->tok_virtual[t] : -1;
        if (a < -1 || a >= b->n_adapters)
            return ps_errf(err, PS_EINVAL, "llama batch: token %d has adapter %d of %d", t, a, b->n_adapters);
        if (v >= 0 && (a < 0 || v >= b->adapters[a]->n_virtual))
            return ps_errf(err, PS_EINVAL, "llama batch: token %d is virtual token %d of an adapter with %d", t, v,
                           a < 0 ? 0 : b->adapters[a]->n_virtual);
    }
    return PS_OK;
}

/* Per-step LoRA tables: (l, p, a) -> the adapter's (A, B, r, scale). */
static ps_status build_tables(llama_model *m, const llama_batch *b, llama_step_adapters *sa, ps_err *err) {
    int L = m->cfg.n_layers, n = b->n_adapters;
    int need = L * LLAMA_N_PROJ * n;
    llama_scratch *s = &m->s;
    if (need > s->lora_cap) {
        ps_lora_slot *g = realloc(s->lora_slots, sizeof *g * (size_t)need);
        if (!g) return ps_errf(err, PS_ENOMEM, "llama: cannot allocate LoRA tables");
        s->lora_slots = g;
        s->lora_cap = need;
    }
    if (!s->lora_active && !(s->lora_active = malloc(sizeof *s->lora_active * (size_t)L)))
        return ps_errf(err, PS_ENOMEM, "llama: cannot allocate LoRA tables");
    for (int l = 0; l < L; l++) {
        s->lora_active[l] = 0;
        for (int p = 0; p < LLAMA_N_PROJ; p++)
            for (int i = 0; i < n; i++) {
                const adapter *a = b->adapters[i];
                /* adapter.h's module order is llama_proj_names' order */
                const adapter_lora *e = a->lora ? &a->lora[ADAPTER_LORA_INDEX(a, l, p)] : NULL;
                ps_lora_slot *sl = &s->lora_slots[(l * LLAMA_N_PROJ + p) * n + i];
                *sl = e && e->r ? (ps_lora_slot){e->A, e->B, a->lora_dtype, e->r, e->scale} : (ps_lora_slot){0};
                if (sl->A) s->lora_active[l] |= 1u << p;
            }
    }
    sa->slots = s->lora_slots;
    sa->active = s->lora_active;
    return PS_OK;
}

ps_status llama_adapters_begin(llama_model *m, const llama_batch *b, int32_t *h, int32_t *dev,
                               llama_step_adapters *sa, ps_err *err) {
    memset(sa, 0, sizeof *sa);
    if (b->n_adapters == 0) return PS_OK;
    int T = b->n_tokens;
    sa->n = b->n_adapters;
    sa->tok = b->tok_adapter;
    for (int t = 0; t < T; t++) {
        int a = b->tok_adapter[t], v = b->tok_virtual ? b->tok_virtual[t] : -1;
        h[t] = a;
        h[T + t] = v >= 0 ? v : b->ids[t];
        if (a >= 0) {
            sa->any_embed |= v >= 0 || b->adapters[a]->embed_tokens != NULL;
            sa->any_lm_head |= b->adapters[a]->lm_head != NULL;
        }
    }
    sa->tok_dev = ps_tensor_1d(PS_DT_I32, T, dev, m->be->dev);
    sa->rows_dev = ps_tensor_1d(PS_DT_I32, T, dev + T, m->be->dev);
    return build_tables(m, b, sa, err);
}

/* The table token t's embedding comes from: prompt rows, the adapter's own
 * embed_tokens, or NULL for the base. */
static const float *embed_source(const llama_batch *b, int t, int *rows) {
    int a = b->tok_adapter[t];
    if (a < 0) return NULL;
    const adapter *ad = b->adapters[a];
    if (b->tok_virtual && b->tok_virtual[t] >= 0) return *rows = ad->n_virtual, ad->prompt;
    return *rows = ad->base.vocab, ad->embed_tokens;
}

ps_status llama_adapters_embed(llama_model *m, const llama_batch *b, const llama_step_adapters *sa,
                               ps_tensor *x, ps_err *err) {
    if (!sa->any_embed) return PS_OK;
    int T = b->n_tokens;
    for (int t0 = 0; t0 < T;) {
        int rows = 0, rows1 = 0;
        const float *src = embed_source(b, t0, &rows);
        int t1 = t0 + 1;
        while (t1 < T && embed_source(b, t1, &rows1) == src) t1++;
        if (src) {
            ps_tensor table = ps_tensor_2d(PS_DT_F32, rows, m->cfg.hidden, (void *)src, m->be->dev);
            ps_tensor out = ps_tensor_rows(x, t0, t1 - t0), ids = ps_tensor_rows(&sa->rows_dev, t0, t1 - t0);
            ps_status st = op_embed(m->be, &out, &table, &ids, err);
            if (st) return ps_err_wrap(err, "adapter embeddings");
        }
        t0 = t1;
    }
    return PS_OK;
}

ps_status llama_adapters_lora(llama_model *m, const llama_step_adapters *sa, int l, int p, ps_tensor *y,
                              const ps_tensor *x, ps_err *err) {
    if (!llama_adapters_lora_on(sa, l, p)) return PS_OK;
    ps_lora_batch lb = {sa->n, sa->slots + (size_t)(l * LLAMA_N_PROJ + p) * (size_t)sa->n, sa->tok, sa->tok_dev};
    ps_status st = op_lora_bgmv(m->be, y, x, &lb, err);
    return st ? ps_err_wrap(err, "lora %s", llama_proj_names[p]) : PS_OK;
}

ps_status llama_adapters_lora_n(llama_model *m, const llama_step_adapters *sa, int l, int n, const int *projs,
                                ps_tensor *const *ys, const ps_tensor *x, ps_err *err) {
    ps_lora_batch lb[PS_LINEAR_N_MAX];
    const ps_lora_batch *lbs[PS_LINEAR_N_MAX];
    ps_tensor *yk[PS_LINEAR_N_MAX];
    int k = 0;
    for (int i = 0; i < n && i < PS_LINEAR_N_MAX; i++) {
        int p = projs[i];
        if (!llama_adapters_lora_on(sa, l, p)) continue;
        lb[k] = (ps_lora_batch){sa->n, sa->slots + (size_t)(l * LLAMA_N_PROJ + p) * (size_t)sa->n, sa->tok,
                                sa->tok_dev};
        lbs[k] = &lb[k], yk[k] = ys[i], k++;
    }
    if (k == 0) return PS_OK;
    ps_status st = op_lora_bgmv_n(m->be, k, yk, x, lbs, err);
    return st ? ps_err_wrap(err, "lora %s..%s", llama_proj_names[projs[0]], llama_proj_names[projs[n - 1]]) : PS_OK;
}

static const float *lm_head_of(const llama_batch *b, int r) {
    int a = b->tok_adapter[b->out_rows[r]];
    return a >= 0 ? b->adapters[a]->lm_head : NULL;
}

ps_status llama_adapters_lm_head(llama_model *m, const llama_batch *b, const llama_step_adapters *sa,
                                 ps_tensor *logits, const ps_tensor *ho, ps_err *err) {
    if (!sa->any_lm_head) return PS_OK;
    for (int r0 = 0; r0 < b->n_out;) {
        const float *w = lm_head_of(b, r0);
        int r1 = r0 + 1;
        while (r1 < b->n_out && lm_head_of(b, r1) == w) r1++;
        if (w) {
            ps_weight lm = {PS_WEIGHT_DENSE};
            lm.dense = ps_tensor_2d(PS_DT_F32, m->cfg.vocab, m->cfg.hidden, (void *)w, m->be->dev);
            ps_tensor y = ps_tensor_rows(logits, r0, r1 - r0), x = ps_tensor_rows(ho, r0, r1 - r0);
            ps_status st = op_linear(m->be, &y, &x, &lm, err);
            if (st) return ps_err_wrap(err, "adapter lm_head");
        }
        r0 = r1;
    }
    return PS_OK;
}

ps_status llama_store_prefix(llama_model *m, kv_cache *kv, const int32_t *block_table, int max_pages,
                             const adapter *a, ps_err *err) {
    const llama_config *c = &m->cfg;
    if (!a || a->kind != ADAPTER_PREFIX || !shape_fits(&a->base, c))
        return ps_errf(err, PS_EINVAL, "llama_store_prefix: '%s' is not a prefix adapter for this model",
                       a ? a->name : "(null)");
    int P = a->n_prefix;
    if (!kv || kv->n_layers != c->n_layers || (P + kv->page_size - 1) / kv->page_size > max_pages)
        return ps_errf(err, PS_EINVAL, "llama_store_prefix: %d prefix entries need %d pages, the table has %d", P,
                       (P + kv->page_size - 1) / kv->page_size, max_pages);
    int32_t *slots = malloc(sizeof(int32_t) * (size_t)P);
    void *dslots = NULL;
    if (!slots) return ps_errf(err, PS_ENOMEM, "llama_store_prefix: out of memory");
    ps_status st = PS_OK;
    for (int i = 0; i < P && !st; i++) {
        int32_t page = block_table[i / kv->page_size];
        if (page < 0 || page >= kv->n_pages)
            st = ps_errf(err, PS_EINVAL, "llama_store_prefix: page %d of entry %d outside the pool of %d", page, i,
                         kv->n_pages);
        slots[i] = page * kv->page_size + i % kv->page_size;
    }
    if (!st) st = ps_buf_alloc(m->be, sizeof(int32_t) * (size_t)P, &dslots, err);
    if (!st) st = ps_buf_upload(m->be, dslots, slots, sizeof(int32_t) * (size_t)P, err);
    ps_tensor ts = ps_tensor_1d(PS_DT_I32, P, dslots, m->be->dev);
    int64_t kvd = (int64_t)c->n_kv_heads * c->head_dim;
    for (int l = 0; l < c->n_layers && !st; l++) {
        /* prefix_kv (L, 2, P, n_kv, D): keys then values of layer l */
        const float *k = a->prefix_kv + (size_t)l * 2 * (size_t)P * (size_t)kvd;
        ps_tensor tk = ps_tensor_3d(PS_DT_F32, P, c->n_kv_heads, c->head_dim, (void *)k, m->be->dev);
        ps_tensor tv = ps_tensor_3d(PS_DT_F32, P, c->n_kv_heads, c->head_dim, (void *)(k + (size_t)P * kvd), m->be->dev);
        st = op_kv_store(m->be, &kv->layers[l], &tk, &tv, &ts, err);
    }
    if (!st) st = ps_backend_sync(m->be, err); /* the slot buffer is freed right after */
    ps_buf_free(m->be, dslots);
    free(slots);
    return st;
}
