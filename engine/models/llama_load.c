/* llama_load: a Hugging Face LLaMA folder (config.json + safetensors, sharded
 * or not) onto a backend.
 *
 * Every tensor is looked up by its HF name and checked for presence, dtype and
 * shape before use. The seven projections of each layer are quantised to NF4
 * one at a time (converted to float32 into one reusable buffer, so the peak
 * host memory is one float32 matrix plus its NF4 form), or uploaded as stored
 * when no quantisation is asked; weights already quantised by bitsandbytes are
 * taken as they are (llama_bnb.c). Embeddings, norms and lm_head are uploaded
 * in their own 16-bit (or 32-bit) dtype, as transformers + bitsandbytes keep
 * them. Tensors the model does not use (rotary inv_freq, ...) are ignored. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/safetensors.h"
#include "models/llama_internal.h"

typedef struct {
    llama_model *m;
    const st_set *set;
    float *buf; /* reusable float32 conversion buffer */
    int64_t buf_cap;
    int n_bnb;  /* projections taken pre-quantised from a bnb-4bit checkpoint */
} loader;

static void fmt_shape(char *b, size_t cap, int ndim, const int64_t *shape) {
    size_t n = (size_t)snprintf(b, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(b + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap) snprintf(b + n, cap - n, "]");
}

ps_status llama_check_shape(const st_tensor *t, int ndim, const int64_t *shape, ps_err *err) {
    bool ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (ok) return PS_OK;
    char got[128], want[128];
    fmt_shape(got, sizeof got, t->ndim, t->shape);
    fmt_shape(want, sizeof want, ndim, shape);
    return ps_errf(err, PS_EFORMAT, "tensor '%s': shape %s, expected %s", t->name, got, want);
}

static ps_status find_tensor(const st_set *s, const char *name, const st_tensor **out,
                             ps_err *err) {
    *out = st_find(s, name);
    if (!*out) return ps_errf(err, PS_EFORMAT, "tensor '%s' is missing", name);
    return PS_OK;
}

static ps_status float_dtype(const st_tensor *t, ps_dtype *dt, ps_err *err) {
    switch (t->dtype) {
    case ST_F32: *dt = PS_DT_F32; return PS_OK;
    case ST_F16: *dt = PS_DT_F16; return PS_OK;
    case ST_BF16: *dt = PS_DT_BF16; return PS_OK;
    default:
        return ps_errf(err, PS_EFORMAT, "tensor '%s': dtype %s, expected F16, BF16 or F32", t->name,
                       st_dtype_name(t->dtype));
    }
}

/* A tensor kept as stored (embeddings, norms, lm_head; projections without quantisation). */
static ps_status load_dense(loader *ld, const char *name, int ndim, const int64_t *shape,
                            ps_tensor *out, ps_err *err) {
    const st_tensor *t;
    ps_dtype dt;
    ps_status st;
    if ((st = find_tensor(ld->set, name, &t, err)) || (st = float_dtype(t, &dt, err)) ||
        (st = llama_check_shape(t, ndim, shape, err)))
        return st;
    return llama_upload_tensor(ld->m, dt, ndim, shape, t->data, out, err);
}

static ps_status load_proj(loader *ld, const char *name, int64_t out, int64_t in, ps_weight *w,
                           ps_err *err) {
    if (llama_bnb_present(ld->set, name)) {
        ld->n_bnb++;
        return llama_bnb_load(ld->m, ld->set, name, out, in, w, err);
    }
    int64_t shape[2] = {out, in};
    memset(w, 0, sizeof *w);
    if (ld->m->quant == LLAMA_QUANT_NONE) {
        w->kind = PS_WEIGHT_DENSE;
        return load_dense(ld, name, 2, shape, &w->dense, err);
    }
    const st_tensor *t;
    ps_dtype dt;
    ps_status st;
    if ((st = find_tensor(ld->set, name, &t, err)) || (st = float_dtype(t, &dt, err)) ||
        (st = llama_check_shape(t, 2, shape, err)))
        return st;
    if (out * in > ld->buf_cap) {
        float *nb = realloc(ld->buf, sizeof(float) * (size_t)(out * in));
        if (!nb) return ps_errf(err, PS_ENOMEM, "tensor '%s': cannot allocate %lld floats", name,
                                (long long)(out * in));
        ld->buf = nb;
        ld->buf_cap = out * in;
    }
    if ((st = st_to_f32(t, ld->buf, out * in, err))) return st;
    return llama_quantize_upload(ld->m, ld->buf, out, in, w, err);
}

static ps_status load_layer(loader *ld, int l, ps_err *err) {
    const llama_config *c = &ld->m->cfg;
    llama_layer *L = &ld->m->layers[l];
    char name[256];
    int64_t C = c->hidden;
    ps_status st;
    snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
    if ((st = load_dense(ld, name, 1, &C, &L->attn_norm, err))) return st;
    snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
    if ((st = load_dense(ld, name, 1, &C, &L->ffn_norm, err))) return st;
    for (int p = 0; p < LLAMA_N_PROJ; p++) {
        int64_t out, in;
        llama_proj_shape(c, p, &out, &in);
        snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, llama_proj_names[p]);
        if ((st = load_proj(ld, name, out, in, llama_layer_proj(L, p), err))) return st;
    }
    return PS_OK;
}

static ps_status load_weights(loader *ld, ps_err *err) {
    llama_model *m = ld->m;
    const llama_config *c = &m->cfg;
    int64_t vc[2] = {c->vocab, c->hidden}, C = c->hidden;
    ps_status st;
    if ((st = load_dense(ld, "model.embed_tokens.weight", 2, vc, &m->embed, err)) ||
        (st = load_dense(ld, "model.norm.weight", 1, &C, &m->norm, err)))
        return st;
    m->lm_head.kind = PS_WEIGHT_DENSE;
    if (c->tie_embeddings) {
        m->lm_head.dense = m->embed;
    } else if (!st_find(ld->set, "lm_head.weight")) {
        return ps_errf(err, PS_EFORMAT,
                       "tensor 'lm_head.weight' is missing (tie_word_embeddings is false)");
    } else if ((st = load_dense(ld, "lm_head.weight", 2, vc, &m->lm_head.dense, err))) {
        return st;
    }
    for (int l = 0; l < c->n_layers; l++)
        if ((st = load_layer(ld, l, err))) return st;
    return PS_OK;
}

ps_status llama_load(const char *dir, llama_quant q, ps_backend *be, llama_model **out,
                     ps_err *err) {
    *out = NULL;
    llama_config cfg;
    st_set *set = NULL;
    loader ld = {0};
    ps_status st;
    if ((st = llama_config_load(dir, &cfg, err)) || (st = st_open_model_dir(dir, &set, err)) ||
        (st = llama_model_alloc(&cfg, q, be, &ld.m, err)))
        goto fail;
    ld.set = set;
    if ((st = load_weights(&ld, err))) goto fail;
    if ((st = ps_backend_sync(be, err))) goto fail;
    if (ld.n_bnb && q == LLAMA_QUANT_NONE)
        PS_LOG_WARN("llama", "%s is a bitsandbytes 4-bit checkpoint: its %d projections stay NF4 "
                             "(no unquantised weights to load)", dir, ld.n_bnb);
    PS_LOG_INFO("llama", "loaded %s: %d layers, hidden %d, vocab %d, %lld bytes of weights", dir,
                cfg.n_layers, cfg.hidden, cfg.vocab, (long long)ld.m->weight_bytes);
    *out = ld.m;
    ld.m = NULL;
fail:
    if (st) ps_err_wrap(err, "model '%s'", dir);
    llama_free(ld.m);
    free(ld.buf);
    st_close(set);
    return st;
}
