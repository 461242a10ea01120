/* CLIP config and weights: config.json (transformers CLIPConfig, defaults for
 * missing keys), HF CLIPModel tensor names (convert_clip_original_pytorch_to_hf.py
 * mapping, see clip-tiny/README.md), upload to the backend, and random
 * weights of any shape for benchmarks. Both paths go through one list of the
 * expected tensors, so a file is checked tensor by tensor, name/dtype/shape. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/safetensors.h"
#include "clip_impl.h"
#include "math/half.h"

clip_config clip_config_vit_b32(void) {
    clip_config c = {{512, 12, 8, 2048, 1e-5f, PS_ACT_QUICK_GELU},
                     {768, 12, 12, 3072, 1e-5f, PS_ACT_QUICK_GELU},
                     49408, 77, 224, 32, 512};
    return c;
}

int clip_vision_tokens(const clip_config *c) {
    int g = c->image_size / c->patch_size;
    return g * g + 1;
}

/* ---- config.json ---- */

static ps_status get_int(json_t *o, const char *key, int *v, const char *where, ps_err *err) {
    json_t *j = json_object_get(o, key);
    if (!j) return PS_OK; /* keep the default */
    if (!json_is_integer(j) || json_integer_value(j) <= 0 || json_integer_value(j) > (1 << 24))
        return ps_errf(err, PS_EFORMAT, "%s: '%s' must be a positive integer", where, key);
    *v = (int)json_integer_value(j);
    return PS_OK;
}

static ps_status tower_config(json_t *o, clip_tower_config *t, const char *where, ps_err *err) {
    ps_status st;
    if ((st = get_int(o, "hidden_size", &t->hidden, where, err)) ||
        (st = get_int(o, "num_hidden_layers", &t->layers, where, err)) ||
        (st = get_int(o, "num_attention_heads", &t->heads, where, err)) ||
        (st = get_int(o, "intermediate_size", &t->ffn, where, err)))
        return st;
    json_t *eps = json_object_get(o, "layer_norm_eps");
    if (eps) {
        if (!json_is_number(eps) || json_number_value(eps) <= 0)
            return ps_errf(err, PS_EFORMAT, "%s: 'layer_norm_eps' must be a positive number", where);
        t->eps = (float)json_number_value(eps);
    }
    const char *act = json_string_value(json_object_get(o, "hidden_act"));
    if (act && strcmp(act, "quick_gelu") == 0) t->act = PS_ACT_QUICK_GELU;
    else if (act && strcmp(act, "gelu") == 0) t->act = PS_ACT_GELU;
    else if (act)
        return ps_errf(err, PS_ENOTSUP, "%s: hidden_act '%s' (quick_gelu and gelu are supported)", where, act);
    if (t->hidden % t->heads)
        return ps_errf(err, PS_EFORMAT, "%s: hidden_size %d is not a multiple of num_attention_heads %d",
                       where, t->hidden, t->heads);
    return PS_OK;
}

ps_status clip_config_load(const char *dir, clip_config *cfg, ps_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) return ps_errf(err, PS_EFORMAT, "%s:%d: %s", path, je.line, je.text);
    *cfg = clip_config_vit_b32();
    json_t *tc = json_object_get(root, "text_config"), *vc = json_object_get(root, "vision_config");
    const char *type = json_string_value(json_object_get(root, "model_type"));
    ps_status st = PS_OK;
    if (type && strcmp(type, "clip") != 0) {
        st = ps_errf(err, PS_EFORMAT, "%s: model_type '%s', expected 'clip'", path, type);
        goto done;
    }
    if ((st = get_int(root, "projection_dim", &cfg->projection_dim, path, err))) goto done;
    if (tc && ((st = tower_config(tc, &cfg->text, "text_config", err)) ||
               (st = get_int(tc, "vocab_size", &cfg->vocab, "text_config", err)) ||
               (st = get_int(tc, "max_position_embeddings", &cfg->ctx, "text_config", err))))
        goto done;
    if (vc && ((st = tower_config(vc, &cfg->vision, "vision_config", err)) ||
               (st = get_int(vc, "image_size", &cfg->image_size, "vision_config", err)) ||
               (st = get_int(vc, "patch_size", &cfg->patch_size, "vision_config", err))))
        goto done;
    if (cfg->image_size % cfg->patch_size)
        st = ps_errf(err, PS_EFORMAT, "%s: image_size %d is not a multiple of patch_size %d", path,
                     cfg->image_size, cfg->patch_size);
    else if (cfg->ctx < 2)
        st = ps_errf(err, PS_EFORMAT, "%s: max_position_embeddings %d < 2", path, cfg->ctx);
done:
    json_decref(root);
    return st;
}

/* ---- weight sources ---- */

/* Gives host data for an expected tensor, or fails naming it. */
typedef struct {
    const st_set *set;  /* file source */
    uint64_t seed;      /* random source when set == NULL */
    uint16_t *tmp;      /* random source: buffer reused per tensor */
    int64_t tmp_cap;
} clip_src;

static ps_dtype ps_dtype_of(st_dtype dt) {
    return dt == ST_F32 ? PS_DT_F32 : dt == ST_F16 ? PS_DT_F16 : PS_DT_BF16;
}

static float rand_unit(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (float)((double)(*s >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
}

/* kind: 'w' weight-like (small random), '1' LayerNorm weight, '0' bias */
static ps_status src_get(clip_src *src, const char *name, int ndim, const int64_t *shape, char kind,
                         ps_dtype *dt, const void **data, ps_err *err) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    if (src->set) {
        const st_tensor *t = st_find(src->set, name);
        if (!t) return ps_errf(err, PS_EFORMAT, "tensor '%s' is missing (not a CLIPModel checkpoint?)", name);
        bool ok = t->ndim == ndim && (t->dtype == ST_F32 || t->dtype == ST_F16 || t->dtype == ST_BF16);
        for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
        if (!ok) {
            char want[128] = "", got[128] = "";
            for (int i = 0; i < ndim; i++) snprintf(want + strlen(want), 20, i ? ", %lld" : "%lld", (long long)shape[i]);
            for (int i = 0; i < t->ndim; i++) snprintf(got + strlen(got), 20, i ? ", %lld" : "%lld", (long long)t->shape[i]);
            return ps_errf(err, PS_EFORMAT, "tensor '%s': %s [%s], expected a float tensor [%s] (config.json does not match the weights?)",
                           name, st_dtype_name(t->dtype), got, want);
        }
        if (!st_is_aligned(t))
            return ps_errf(err, PS_EFORMAT, "tensor '%s': data is not aligned to its element size", name);
        *dt = ps_dtype_of(t->dtype);
        *data = t->data;
        return PS_OK;
    }
    if (n > src->tmp_cap) {
        uint16_t *g = realloc(src->tmp, sizeof(uint16_t) * (size_t)n);
        if (!g) return ps_errf(err, PS_ENOMEM, "random weights: no memory for '%s'", name);
        src->tmp = g;
        src->tmp_cap = n;
    }
    for (int64_t i = 0; i < n; i++) {
        float v = kind == '1' ? 1.0f + 0.1f * rand_unit(&src->seed)
                : kind == '0' ? 0.02f * rand_unit(&src->seed)
                              : 0.05f * rand_unit(&src->seed);
        src->tmp[i] = ps_f32_to_f16(v);
    }
    *dt = PS_DT_F16;
    *data = src->tmp;
    return PS_OK;
}

/* ---- upload ---- */

static ps_status upload(clip_model *m, const void *data, ps_dtype dt, int64_t rows, int64_t cols,
                        ps_tensor *out, ps_err *err) {
    size_t bytes = (size_t)(rows * cols) * ps_dtype_size(dt);
    void *buf;
    if (m->n_bufs == m->cap_bufs) {
        int cap = m->cap_bufs ? 2 * m->cap_bufs : 64;
        void **g = realloc(m->bufs, sizeof(void *) * (size_t)cap);
        if (!g) return ps_errf(err, PS_ENOMEM, "clip: no memory for buffer table");
        m->bufs = g;
        m->cap_bufs = cap;
    }
    ps_status st = ps_buf_alloc(m->be, bytes, &buf, err);
    if (st) return st;
    m->bufs[m->n_bufs++] = buf;
    if ((st = ps_buf_upload(m->be, buf, data, bytes, err))) return st;
    m->weight_bytes += (int64_t)bytes;
    *out = rows == 1 ? ps_tensor_1d(dt, cols, buf, m->be->dev) : ps_tensor_2d(dt, rows, cols, buf, m->be->dev);
    return PS_OK;
}

/* Loads `name` of shape (rows, cols) (1-d when rows_1d) as is. */
static ps_status get2(clip_model *m, clip_src *src, const char *name, int64_t rows, int64_t cols,
                      char kind, ps_tensor *out, ps_err *err) {
    int64_t shape[2] = {rows, cols};
    ps_dtype dt;
    const void *data;
    bool one_d = rows == 0;
    ps_status st = one_d ? src_get(src, name, 1, &cols, kind, &dt, &data, err)
                         : src_get(src, name, 2, shape, kind, &dt, &data, err);
    if (st) return st;
    return upload(m, data, dt, one_d ? 1 : rows, cols, out, err);
}

static ps_status get_weight(clip_model *m, clip_src *src, const char *name, int64_t out_f,
                            int64_t in_f, ps_weight *w, ps_err *err) {
    w->kind = PS_WEIGHT_DENSE;
    return get2(m, src, name, out_f, in_f, 'w', &w->dense, err);
}

static ps_status load_layer(clip_model *m, clip_src *src, const char *pre, const clip_tower_config *c,
                            clip_layer *L, ps_err *err) {
    char n[256];
    int64_t W = c->hidden, F = c->ffn;
    ps_status st;
#define NAME(s) (snprintf(n, sizeof n, "%s.%s", pre, s), n)
    if ((st = get2(m, src, NAME("layer_norm1.weight"), 0, W, '1', &L->ln1_w, err)) ||
        (st = get2(m, src, NAME("layer_norm1.bias"), 0, W, '0', &L->ln1_b, err)) ||
        (st = get2(m, src, NAME("layer_norm2.weight"), 0, W, '1', &L->ln2_w, err)) ||
        (st = get2(m, src, NAME("layer_norm2.bias"), 0, W, '0', &L->ln2_b, err)) ||
        (st = get_weight(m, src, NAME("self_attn.q_proj.weight"), W, W, &L->q, err)) ||
        (st = get2(m, src, NAME("self_attn.q_proj.bias"), 0, W, '0', &L->q_b, err)) ||
        (st = get_weight(m, src, NAME("self_attn.k_proj.weight"), W, W, &L->k, err)) ||
        (st = get2(m, src, NAME("self_attn.k_proj.bias"), 0, W, '0', &L->k_b, err)) ||
        (st = get_weight(m, src, NAME("self_attn.v_proj.weight"), W, W, &L->v, err)) ||
        (st = get2(m, src, NAME("self_attn.v_proj.bias"), 0, W, '0', &L->v_b, err)) ||
        (st = get_weight(m, src, NAME("self_attn.out_proj.weight"), W, W, &L->o, err)) ||
        (st = get2(m, src, NAME("self_attn.out_proj.bias"), 0, W, '0', &L->o_b, err)) ||
        (st = get_weight(m, src, NAME("mlp.fc1.weight"), F, W, &L->fc1, err)) ||
        (st = get2(m, src, NAME("mlp.fc1.bias"), 0, F, '0', &L->fc1_b, err)) ||
        (st = get_weight(m, src, NAME("mlp.fc2.weight"), W, F, &L->fc2, err)) ||
        (st = get2(m, src, NAME("mlp.fc2.bias"), 0, W, '0', &L->fc2_b, err)))
        return st;
#undef NAME
    return PS_OK;
}

static ps_status load_layers(clip_model *m, clip_src *src, const char *tower, clip_tower *t,
                             ps_err *err) {
    t->layers = calloc((size_t)t->cfg.layers, sizeof(clip_layer));
    if (!t->layers) return ps_errf(err, PS_ENOMEM, "clip: no memory for layers");
    for (int l = 0; l < t->cfg.layers; l++) {
        char pre[128];
        snprintf(pre, sizeof pre, "%s.encoder.layers.%d", tower, l);
        ps_status st = load_layer(m, src, pre, &t->cfg, &t->layers[l], err);
        if (st) return st;
    }
    return PS_OK;
}

static ps_status load_text(clip_model *m, clip_src *src, ps_err *err) {
    clip_tower *t = &m->text;
    const clip_config *c = &m->cfg;
    int64_t W = c->text.hidden;
    ps_status st;
    t->cfg = c->text;
    if ((st = get2(m, src, "text_model.embeddings.token_embedding.weight", c->vocab, W, 'w', &t->tok, err)) ||
        (st = get2(m, src, "text_model.embeddings.position_embedding.weight", c->ctx, W, 'w', &t->pos, err)) ||
        (st = load_layers(m, src, "text_model", t, err)) ||
        (st = get2(m, src, "text_model.final_layer_norm.weight", 0, W, '1', &t->final_w, err)) ||
        (st = get2(m, src, "text_model.final_layer_norm.bias", 0, W, '0', &t->final_b, err)) ||
        (st = get_weight(m, src, "text_projection.weight", c->projection_dim, W, &t->proj, err)))
        return st;
    return PS_OK;
}

static float load_f(ps_dtype dt, const void *data, int64_t i) {
    if (dt == PS_DT_F32) return ((const float *)data)[i];
    if (dt == PS_DT_F16) return ps_f16_to_f32(((const uint16_t *)data)[i]);
    return ps_bf16_to_f32(((const uint16_t *)data)[i]);
}

/* Position table with the class embedding folded into row 0: the class
 * token's patch row is zero, so its embedding is pos[0] + class (F32). */
static ps_status vision_positions(clip_model *m, clip_src *src, ps_err *err) {
    const clip_config *c = &m->cfg;
    int64_t T = clip_vision_tokens(c), W = c->vision.hidden, shape[2] = {T, W};
    float *pos = malloc(sizeof(float) * (size_t)(T * W)), *cls = malloc(sizeof(float) * (size_t)W);
    ps_dtype dt;
    const void *data;
    ps_status st = PS_OK;
    if (!pos || !cls) {
        st = ps_errf(err, PS_ENOMEM, "clip: no memory for positions");
        goto done;
    }
    if ((st = src_get(src, "vision_model.embeddings.class_embedding", 1, &W, 'w', &dt, &data, err))) goto done;
    for (int64_t i = 0; i < W; i++) cls[i] = load_f(dt, data, i);
    if ((st = src_get(src, "vision_model.embeddings.position_embedding.weight", 2, shape, 'w', &dt, &data, err)))
        goto done;
    for (int64_t i = 0; i < T * W; i++) pos[i] = load_f(dt, data, i);
    for (int64_t i = 0; i < W; i++) pos[i] += cls[i];
    st = upload(m, pos, PS_DT_F32, T, W, &m->vision.pos, err);
done:
    free(pos);
    free(cls);
    return st;
}

static ps_status load_vision(clip_model *m, clip_src *src, ps_err *err) {
    clip_tower *t = &m->vision;
    const clip_config *c = &m->cfg;
    int64_t W = c->vision.hidden, P = c->patch_size;
    int64_t conv[4] = {W, 3, P, P};
    ps_dtype dt;
    const void *data;
    ps_status st;
    t->cfg = c->vision;
    if ((st = src_get(src, "vision_model.embeddings.patch_embedding.weight", 4, conv, 'w', &dt, &data, err)) ||
        (st = upload(m, data, dt, W, 3 * P * P, &t->patch.dense, err)))
        return st;
    t->patch.kind = PS_WEIGHT_DENSE;
    if ((st = vision_positions(m, src, err)) ||
        (st = get2(m, src, "vision_model.pre_layrnorm.weight", 0, W, '1', &t->pre_w, err)) ||
        (st = get2(m, src, "vision_model.pre_layrnorm.bias", 0, W, '0', &t->pre_b, err)) ||
        (st = load_layers(m, src, "vision_model", t, err)) ||
        (st = get2(m, src, "vision_model.post_layernorm.weight", 0, W, '1', &t->final_w, err)) ||
        (st = get2(m, src, "vision_model.post_layernorm.bias", 0, W, '0', &t->final_b, err)) ||
        (st = get_weight(m, src, "visual_projection.weight", c->projection_dim, W, &t->proj, err)))
        return st;
    return PS_OK;
}

static ps_status load_scale(clip_model *m, clip_src *src, ps_err *err) {
    if (!src->set) { /* random model: CLIP's trained value ln(100) */
        m->logit_scale = 100.0f;
        return PS_OK;
    }
    const st_tensor *t = st_find(src->set, "logit_scale");
    float v;
    if (!t || st_numel(t) != 1)
        return ps_errf(err, PS_EFORMAT, "tensor 'logit_scale' is missing or not a scalar");
    ps_status st = st_to_f32(t, &v, 1, err);
    if (st) return st;
    m->logit_scale = (float)exp((double)v); /* reference: logit_scale.exp() */
    return PS_OK;
}

static ps_status build(const clip_config *cfg, clip_src *src, ps_backend *be, clip_model **out,
                       ps_err *err) {
    clip_model *m = calloc(1, sizeof *m);
    if (!m) return ps_errf(err, PS_ENOMEM, "clip: no memory");
    m->cfg = *cfg;
    m->be = be;
    ps_status st;
    if ((st = load_text(m, src, err)) || (st = load_vision(m, src, err)) || (st = load_scale(m, src, err))) {
        clip_free(m);
        return st;
    }
    *out = m;
    return PS_OK;
}

ps_status clip_load(const char *dir, ps_backend *be, clip_model **out, ps_err *err) {
    *out = NULL;
    clip_config cfg;
    st_set *set = NULL;
    ps_status st = clip_config_load(dir, &cfg, err);
    if (st == PS_OK) st = st_open_model_dir(dir, &set, err);
    if (st) return ps_err_wrap(err, "clip model '%s'", dir);
    clip_src src = {set, 0, NULL, 0};
    st = build(&cfg, &src, be, out, err);
    st_close(set);
    if (st) return ps_err_wrap(err, "clip model '%s'", dir);
    PS_LOG_INFO("clip", "loaded %s: vision %dx%d/%d w%d L%d, text w%d L%d, embed %d, %.1f MB",
                dir, cfg.image_size, cfg.image_size, cfg.patch_size, cfg.vision.hidden,
                cfg.vision.layers, cfg.text.hidden, cfg.text.layers, cfg.projection_dim,
                (double)(*out)->weight_bytes / 1e6);
    return PS_OK;
}

ps_status clip_init_random(const clip_config *cfg, uint64_t seed, ps_backend *be, clip_model **out,
                           ps_err *err) {
    *out = NULL;
    clip_src src = {NULL, seed * 0x9E3779B97F4A7C15ull + 1, NULL, 0};
    ps_status st = build(cfg, &src, be, out, err);
    free(src.tmp);
    return st;
}

void clip_free(clip_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_bufs; i++) ps_buf_free(m->be, m->bufs[i]);
    free(m->bufs);
    free(m->text.layers);
    free(m->vision.layers);
    clip_scratch *s = &m->s;
    void *scratch[] = {s->x, s->h, s->q, s->k, s->v, s->a, s->f, s->patches,
                       s->ids, s->pos, s->sel, s->pooled, s->pooled_ln, s->out};
    for (size_t i = 0; i < sizeof scratch / sizeof scratch[0]; i++) ps_buf_free(m->be, scratch[i]);
    free(m);
}

const clip_config *clip_get_config(const clip_model *m) { return &m->cfg; }
float clip_logit_scale(const clip_model *m) { return m->logit_scale; }
int64_t clip_weight_bytes(const clip_model *m) { return m->weight_bytes; }
ps_backend *clip_backend(const clip_model *m) { return m->be; }
