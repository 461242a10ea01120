/* Prompt-learning tensors -> load plan and fill.
 *
 * PROMPT_TUNING: `prompt_embeddings` [n_virtual, hidden], used as input
 * embeddings placed before BOS (peft_model.py PeftModelForCausalLM.forward).
 *
 * PREFIX_TUNING: `prompt_embeddings` [P, L*2*token_dim] with, for GQA models,
 * token_dim = n_kv * head_dim (peft utils/other.py _prepare_prompt_learning_config
 * sizes the prefix for the KV heads). peft_model.py get_prompt views row t as
 * [L*2, n_kv, D]: index 2l is layer l's key, 2l+1 its value; they enter the
 * cache as they are (HF layout, not rotated). We store (L, 2, P, n_kv, D) so a
 * layer's P keys are one contiguous (P, n_kv, D) block for op_kv_store.
 *
 * prefix_projection: PEFT saves the projected prefix (get_prompt_embedding_to_save
 * runs the MLP), so a saved file has the same [P, L*2*token_dim] tensor and is
 * used as is. A file that instead carries the encoder itself
 * (prompt_embeddings [P, token_dim] + transform.0/2.{weight,bias} of
 * PrefixEncoder) is projected once here, in double precision. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "adapter_impl.h"

#define NM "'%.200s'"

static ps_status find_mlp(adapter_plan *p, ps_err *err) {
    static const char *const names[4] = {"transform.0.weight", "transform.0.bias", "transform.2.weight",
                                         "transform.2.bias"};
    const st_tensor **slots[4] = {&p->mlp.w1, &p->mlp.b1, &p->mlp.w2, &p->mlp.b2};
    int64_t td = p->cfg->token_dim, eh = p->cfg->encoder_hidden_size;
    int64_t out = (int64_t)p->base->n_layers * 2 * td;
    int64_t rows[4] = {eh, 1, out, 1}, cols[4] = {td, eh, eh, out};
    if (eh < 1)
        return ps_errf(err, PS_EFORMAT, "adapter_config.json: prefix_projection needs encoder_hidden_size");
    for (int i = 0; i < 4; i++) {
        const st_tensor *t = st_find(p->set, names[i]);
        if (!t)
            return ps_errf(err, PS_EFORMAT,
                           "tensor '%s' is missing (prompt_embeddings [%d, %d] is the unprojected "
                           "prefix, so the PrefixEncoder MLP must be present)",
                           names[i], p->cfg->num_virtual_tokens, p->cfg->token_dim);
        /* biases are 1-d: view them as one row */
        st_tensor v = *t;
        if (v.ndim == 1) v.ndim = 2, v.shape[1] = v.shape[0], v.shape[0] = 1;
        ps_status s = adapter_check_tensor(&v, rows[i], cols[i], "PrefixEncoder transform", err);
        if (s) return ps_err_wrap(err, "prefix projection");
        *slots[i] = t;
    }
    return PS_OK;
}

static bool is_mlp_name(const char *n) { return !strncmp(n, "transform.", 10); }

/* Config agrees with the base (checked before any tensor so the message says why). */
static ps_status check_prefix_config(const adapter_plan *p, ps_err *err) {
    const adapter_config *c = p->cfg;
    const adapter_base_shape *b = p->base;
    int kv_dim = b->n_kv_heads * b->head_dim;
    if (c->num_layers && c->num_layers != b->n_layers)
        return ps_errf(err, PS_EINVAL, "adapter_config.json: num_layers %d, the base has %d layers",
                       c->num_layers, b->n_layers);
    if (c->token_dim != kv_dim)
        return ps_errf(err, PS_EINVAL,
                       "adapter_config.json: token_dim %d, expected n_kv_heads*head_dim = %d%s",
                       c->token_dim, kv_dim,
                       c->token_dim == b->n_heads * b->head_dim
                           ? " (prefix sized for the query heads: PEFT sizes it for the KV heads of a GQA model)"
                           : " (adapter for another base?)");
    if (c->num_attention_heads && c->num_attention_heads != b->n_kv_heads)
        return ps_errf(err, PS_EINVAL, "adapter_config.json: num_attention_heads %d, expected n_kv_heads %d",
                       c->num_attention_heads, b->n_kv_heads);
    return PS_OK;
}

static ps_status plan_embeddings(adapter_plan *p, const st_tensor *t, ps_err *err) {
    const adapter_config *c = p->cfg;
    const adapter_base_shape *b = p->base;
    int n = c->num_virtual_tokens;
    if (n > p->lim->max_virtual)
        return ps_errf(err, PS_ETOOLARGE, "adapter_config.json: num_virtual_tokens %d over the limit %d", n,
                       p->lim->max_virtual);
    ps_status s;
    if (p->a->kind == ADAPTER_PROMPT) {
        if (c->token_dim != b->hidden)
            return ps_errf(err, PS_EINVAL, "adapter_config.json: token_dim %d, the base's hidden size is %d",
                           c->token_dim, b->hidden);
        if ((s = adapter_check_tensor(t, n, b->hidden, "num_virtual_tokens x hidden_size", err))) return s;
        p->a->n_virtual = n;
        return adapter_plan_add(p, t, PIECE_PROMPT, 0, 0, (int64_t)n * b->hidden, err);
    }
    if ((s = check_prefix_config(p, err))) return s;
    int64_t width = (int64_t)b->n_layers * 2 * c->token_dim;
    bool project = c->prefix_projection && t->ndim == 2 && t->shape[1] == c->token_dim && t->shape[1] != width;
    if (project && (s = find_mlp(p, err))) return s;
    if ((s = adapter_check_tensor(t, n, project ? c->token_dim : width,
                                  project ? "num_virtual_tokens x token_dim (PrefixEncoder input)"
                                          : "num_virtual_tokens x num_layers*2*n_kv_heads*head_dim",
                                  err)))
        return s;
    p->a->n_prefix = n;
    return adapter_plan_add(p, t, PIECE_PREFIX, 0, 0, (int64_t)n * width, err);
}

ps_status adapter_plan_prompt(adapter_plan *p, ps_err *err) {
    const st_tensor *emb = NULL, *mlp = NULL;
    for (int i = 0; i < st_count(p->set); i++) {
        const st_tensor *t = st_at(p->set, i);
        int saved = adapter_plan_saved_module(p, t, err);
        if (saved < 0) return (ps_status)-saved;
        if (saved) continue;
        if (!strcmp(t->name, "prompt_embeddings")) emb = t;
        else if (p->a->kind == ADAPTER_PREFIX && is_mlp_name(t->name)) mlp = mlp ? mlp : t;
        else
            return ps_errf(err, PS_EFORMAT, "tensor " NM ": unexpected in a %s adapter (expected 'prompt_embeddings')",
                           t->name, p->a->kind == ADAPTER_PREFIX ? "PREFIX_TUNING" : "PROMPT_TUNING");
    }
    if (!emb) return ps_errf(err, PS_EFORMAT, "tensor 'prompt_embeddings' is missing");
    ps_status s = plan_embeddings(p, emb, err);
    if (!s && mlp && !p->mlp.w1)
        s = ps_errf(err, PS_EFORMAT, "tensor " NM ": unexpected: prompt_embeddings already is the "
                    "projected prefix (or prefix_projection is false)", mlp->name);
    return s;
}

/* out (rows) = W (rows, cols) x + bias, double accumulation. */
static void affine(const float *W, const float *bias, const double *x, int64_t rows, int64_t cols,
                   double *out) {
    for (int64_t r = 0; r < rows; r++) {
        double s = bias[r];
        for (int64_t c = 0; c < cols; c++) s += (double)W[r * cols + c] * x[c];
        out[r] = s;
    }
}

/* prompt_embeddings through PrefixEncoder.transform: Linear, Tanh, Linear. */
static ps_status project(adapter_plan *p, const float *e, float *E, ps_err *err) {
    const adapter_prefix_mlp *m = &p->mlp;
    int64_t P = p->a->n_prefix, td = p->cfg->token_dim, eh = p->cfg->encoder_hidden_size;
    int64_t out = m->w2->shape[0];
    float *w1 = malloc(sizeof(float) * (size_t)(eh * td)), *b1 = malloc(sizeof(float) * (size_t)eh);
    float *w2 = malloc(sizeof(float) * (size_t)(out * eh)), *b2 = malloc(sizeof(float) * (size_t)out);
    double *x = malloc(sizeof(double) * (size_t)td), *h = malloc(sizeof(double) * (size_t)eh);
    double *y = malloc(sizeof(double) * (size_t)out);
    ps_status s = PS_OK;
    if (!w1 || !b1 || !w2 || !b2 || !x || !h || !y) {
        s = ps_errf(err, PS_ENOMEM, "prefix projection: out of memory");
        goto done;
    }
    if ((s = adapter_read_f32(m->w1, w1, eh * td, err)) || (s = adapter_read_f32(m->b1, b1, eh, err)) ||
        (s = adapter_read_f32(m->w2, w2, out * eh, err)) || (s = adapter_read_f32(m->b2, b2, out, err)))
        goto done;
    for (int64_t t = 0; t < P; t++) {
        for (int64_t i = 0; i < td; i++) x[i] = e[t * td + i];
        affine(w1, b1, x, eh, td, h);
        for (int64_t i = 0; i < eh; i++) h[i] = tanh(h[i]);
        affine(w2, b2, h, out, eh, y);
        for (int64_t i = 0; i < out; i++) E[t * out + i] = (float)y[i];
    }
done:
    free(w1), free(b1), free(w2), free(b2), free(x), free(h), free(y);
    return s;
}

ps_status adapter_fill_prefix(adapter_plan *p, const adapter_piece *pc, float *dst, ps_err *err) {
    const adapter_base_shape *b = p->base;
    int64_t P = p->a->n_prefix, L = b->n_layers, kvd = (int64_t)b->n_kv_heads * b->head_dim;
    int64_t width = L * 2 * kvd, in_numel = st_numel(pc->t);
    float *E = malloc(sizeof(float) * (size_t)(P * width));
    float *e = p->mlp.w1 ? malloc(sizeof(float) * (size_t)in_numel) : NULL;
    ps_status s = PS_OK;
    if (!E || (p->mlp.w1 && !e)) {
        s = ps_errf(err, PS_ENOMEM, "prefix: out of memory");
        goto done;
    }
    if (p->mlp.w1) {
        if ((s = adapter_read_f32(pc->t, e, in_numel, err)) || (s = project(p, e, E, err))) goto done;
    } else if ((s = adapter_read_f32(pc->t, E, P * width, err))) {
        goto done;
    }
    /* E[t] viewed as [L*2, n_kv*D]: row 2l+kv -> dst[l][kv][t] */
    for (int64_t l = 0; l < L; l++)
        for (int64_t kv = 0; kv < 2; kv++)
            for (int64_t t = 0; t < P; t++)
                memcpy(dst + ((l * 2 + kv) * P + t) * kvd, E + t * width + (2 * l + kv) * kvd,
                       sizeof(float) * (size_t)kvd);
done:
    free(E);
    free(e);
    return s;
}
