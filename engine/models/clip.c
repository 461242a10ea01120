/* CLIP forward passes on op_*: the two towers of OpenAI clip/model.py.
 *
 * Mirrors clip/model.py (commit d05afc4): ResidualAttentionBlock (:189-192,
 * pre-LN, x + attn(ln_1(x)), x + mlp(ln_2(x)), mlp = c_fc, QuickGELU, c_proj),
 * VisionTransformer.forward (:223-240: conv1 as a linear over flattened
 * patches, class token, positions, ln_pre, blocks, ln_post on token 0, proj),
 * encode_text (:343-356: token + positions, causal blocks, ln_final, row at
 * argmax(text), projection). HF names, as transformers' modeling_clip.py.
 *
 * Row layout: the residual stream is (B*T, W); attention views q/k/v as
 * (B, T, H, D), head h being the contiguous slice [h*D, (h+1)*D) of a row.
 * The class token is a zero patch row whose position row carries the class
 * embedding (clip_load.c), so embedding an image is one linear and one add. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "clip_impl.h"

#define TRY(x)                      \
    do {                            \
        ps_status s_ = (x);         \
        if (s_ != PS_OK) return s_; \
    } while (0)

/* ---- scratch ---- */

static ps_status grow(ps_backend *be, void **p, size_t bytes, ps_err *err) {
    ps_buf_free(be, *p);
    *p = NULL;
    return ps_buf_alloc(be, bytes, p, err);
}

/* Makes room for `rows` token rows and `batch` pooled rows. */
static ps_status scratch_reserve(clip_model *m, int64_t rows, int64_t batch, ps_err *err) {
    clip_scratch *s = &m->s;
    const clip_config *c = &m->cfg;
    int64_t W = c->text.hidden > c->vision.hidden ? c->text.hidden : c->vision.hidden;
    int64_t F = c->text.ffn > c->vision.ffn ? c->text.ffn : c->vision.ffn;
    int64_t PP = 3 * (int64_t)c->patch_size * c->patch_size;
    ps_backend *be = m->be;
    if (rows > s->rows) {
        int64_t r = rows > 2 * s->rows ? rows : 2 * s->rows;
        size_t fw = sizeof(float) * (size_t)(r * W);
        TRY(grow(be, (void **)&s->x, fw, err));
        TRY(grow(be, (void **)&s->h, fw, err));
        TRY(grow(be, (void **)&s->q, fw, err));
        TRY(grow(be, (void **)&s->k, fw, err));
        TRY(grow(be, (void **)&s->v, fw, err));
        TRY(grow(be, (void **)&s->a, fw, err));
        TRY(grow(be, (void **)&s->f, sizeof(float) * (size_t)(r * F), err));
        TRY(grow(be, (void **)&s->patches, sizeof(float) * (size_t)(r * PP), err));
        TRY(grow(be, (void **)&s->ids, sizeof(int32_t) * (size_t)r, err));
        TRY(grow(be, (void **)&s->pos, sizeof(int32_t) * (size_t)r, err));
        s->rows = r;
    }
    if (batch > s->batch) {
        int64_t b = batch > 2 * s->batch ? batch : 2 * s->batch;
        TRY(grow(be, (void **)&s->sel, sizeof(int32_t) * (size_t)b, err));
        TRY(grow(be, (void **)&s->pooled, sizeof(float) * (size_t)(b * W), err));
        TRY(grow(be, (void **)&s->pooled_ln, sizeof(float) * (size_t)(b * W), err));
        TRY(grow(be, (void **)&s->out, sizeof(float) * (size_t)(b * c->projection_dim), err));
        s->batch = b;
    }
    return PS_OK;
}

static ps_tensor dev2(clip_model *m, void *p, int64_t rows, int64_t cols) {
    return ps_tensor_2d(PS_DT_F32, rows, cols, p, m->be->dev);
}
static ps_tensor dev_i32(clip_model *m, void *p, int64_t n) {
    return ps_tensor_1d(PS_DT_I32, n, p, m->be->dev);
}

/* ---- blocks ---- */

/* y = x W^T + b */
static ps_status linear_bias(ps_backend *be, ps_tensor *y, const ps_tensor *x, const ps_weight *w,
                             const ps_tensor *b, ps_err *err) {
    TRY(op_linear(be, y, x, w, err));
    return op_add_bias(be, y, b, err);
}

/* One pre-LN residual block on x (B*T, W); h, q, k, v, a, f are scratch. */
static ps_status block_forward(clip_model *m, const clip_tower *tw, const clip_layer *L, int B,
                               int T, bool causal, ps_err *err) {
    ps_backend *be = m->be;
    clip_scratch *s = &m->s;
    int64_t R = (int64_t)B * T, W = tw->cfg.hidden, F = tw->cfg.ffn, H = tw->cfg.heads, D = W / H;
    ps_tensor x = dev2(m, s->x, R, W), h = dev2(m, s->h, R, W), f = dev2(m, s->f, R, F);
    ps_tensor q = dev2(m, s->q, R, W), k = dev2(m, s->k, R, W), v = dev2(m, s->v, R, W);
    ps_tensor a = dev2(m, s->a, R, W);
    /* x = x + out_proj(attn(layer_norm1(x))) */
    TRY(op_layernorm(be, &h, &x, &L->ln1_w, &L->ln1_b, tw->cfg.eps, err));
    TRY(linear_bias(be, &q, &h, &L->q, &L->q_b, err));
    TRY(linear_bias(be, &k, &h, &L->k, &L->k_b, err));
    TRY(linear_bias(be, &v, &h, &L->v, &L->v_b, err));
    ps_tensor q4 = {PS_DT_F32, 4, {B, T, H, D}, s->q, be->dev}, k4 = q4, v4 = q4, a4 = q4;
    k4.data = s->k;
    v4.data = s->v;
    a4.data = s->a;
    TRY(op_attention_dense(be, &a4, &q4, &k4, &v4, causal, 1.0f / sqrtf((float)D), err));
    TRY(linear_bias(be, &h, &a, &L->o, &L->o_b, err));
    TRY(op_add(be, &x, &h, err));
    /* x = x + fc2(act(fc1(layer_norm2(x)))) */
    TRY(op_layernorm(be, &h, &x, &L->ln2_w, &L->ln2_b, tw->cfg.eps, err));
    TRY(linear_bias(be, &f, &h, &L->fc1, &L->fc1_b, err));
    TRY(op_activate(be, &f, tw->cfg.act, err));
    TRY(linear_bias(be, &h, &f, &L->fc2, &L->fc2_b, err));
    return op_add(be, &x, &h, err);
}

/* Pooled rows sel (B) of x -> final LayerNorm -> projection -> host embeds (B, E). */
static ps_status pool_project(clip_model *m, const clip_tower *tw, int B, int T,
                              const int32_t *sel_host, float *embeds, ps_err *err) {
    ps_backend *be = m->be;
    clip_scratch *s = &m->s;
    int64_t W = tw->cfg.hidden, E = m->cfg.projection_dim;
    ps_tensor x = dev2(m, s->x, (int64_t)B * T, W), sel = dev_i32(m, s->sel, B);
    ps_tensor p = dev2(m, s->pooled, B, W), pl = dev2(m, s->pooled_ln, B, W), o = dev2(m, s->out, B, E);
    TRY(ps_buf_upload(be, s->sel, sel_host, sizeof(int32_t) * (size_t)B, err));
    /* LayerNorm is per row: normalising only the pooled rows equals pooling
     * the normalised sequence (the reference's ln_final on all positions) */
    TRY(op_gather_rows(be, &p, &x, &sel, err));
    TRY(op_layernorm(be, &pl, &p, &tw->final_w, &tw->final_b, tw->cfg.eps, err));
    TRY(op_linear(be, &o, &pl, &tw->proj, err));
    return ps_buf_download(be, embeds, s->out, sizeof(float) * (size_t)(B * E), err);
}

/* ---- towers ---- */

/* Host im2col: (3, S, S) -> rows of (3 P P) in (c, ky, kx) order, conv1's
 * weight layout; row 0 of each image (the class token) is zero. */
static void patchify(const float *px, int S, int P, float *rows) {
    int G = S / P, K = 3 * P * P;
    memset(rows, 0, sizeof(float) * (size_t)K);
    for (int gy = 0; gy < G; gy++)
        for (int gx = 0; gx < G; gx++) {
            float *r = rows + (size_t)(1 + gy * G + gx) * K;
            for (int c = 0; c < 3; c++)
                for (int ky = 0; ky < P; ky++)
                    memcpy(r + (c * P + ky) * P, px + ((size_t)c * S + gy * P + ky) * S + gx * P,
                           sizeof(float) * (size_t)P);
        }
}

ps_status clip_encode_images(clip_model *m, const float *pixels, int B, float *embeds, ps_err *err) {
    const clip_config *c = &m->cfg;
    const clip_tower *tw = &m->vision;
    int S = c->image_size, P = c->patch_size, T = clip_vision_tokens(c), K = 3 * P * P;
    int64_t R = (int64_t)B * T, W = tw->cfg.hidden;
    if (B <= 0) return ps_errf(err, PS_EINVAL, "clip encode_images: batch %d", B);
    TRY(scratch_reserve(m, R, B, err));
    float *rows = malloc(sizeof(float) * (size_t)(R * K));
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)R), *sel = malloc(sizeof(int32_t) * (size_t)B);
    ps_status st = PS_OK;
    if (!rows || !pos || !sel) {
        st = ps_errf(err, PS_ENOMEM, "clip encode_images: no memory for %d images", B);
        goto done;
    }
    for (int b = 0; b < B; b++) {
        patchify(pixels + (size_t)b * 3 * S * S, S, P, rows + (size_t)b * T * K);
        for (int t = 0; t < T; t++) pos[b * T + t] = t;
        sel[b] = b * T;
    }
    ps_backend *be = m->be;
    clip_scratch *s = &m->s;
    ps_tensor patches = dev2(m, s->patches, R, K), x = dev2(m, s->x, R, W), h = dev2(m, s->h, R, W);
    ps_tensor posi = dev_i32(m, s->pos, R);
    if ((st = ps_buf_upload(be, s->patches, rows, sizeof(float) * (size_t)(R * K), err)) ||
        (st = ps_buf_upload(be, s->pos, pos, sizeof(int32_t) * (size_t)R, err)) ||
        /* embeddings: conv1 (no bias) + (class +) positions, then pre_layrnorm */
        (st = op_linear(be, &h, &patches, &tw->patch, err)) ||
        (st = op_embed(be, &x, &tw->pos, &posi, err)) ||
        (st = op_add(be, &h, &x, err)) ||
        (st = op_layernorm(be, &x, &h, &tw->pre_w, &tw->pre_b, tw->cfg.eps, err)))
        goto done;
    for (int l = 0; l < tw->cfg.layers && st == PS_OK; l++)
        st = block_forward(m, tw, &tw->layers[l], B, T, false, err);
    if (st == PS_OK) st = pool_project(m, tw, B, T, sel, embeds, err);
done:
    free(rows);
    free(pos);
    free(sel);
    return st;
}

ps_status clip_encode_texts(clip_model *m, const int32_t *input_ids, int B, float *embeds,
                            ps_err *err) {
    const clip_config *c = &m->cfg;
    const clip_tower *tw = &m->text;
    int ctx = c->ctx, T = 1;
    if (B <= 0) return ps_errf(err, PS_EINVAL, "clip encode_texts: batch %d", B);
    int32_t *sel = malloc(sizeof(int32_t) * (size_t)B);
    int32_t *ids = NULL, *pos = NULL;
    ps_status st = PS_OK;
    if (!sel) return ps_errf(err, PS_ENOMEM, "clip encode_texts: no memory for %d texts", B);
    for (int b = 0; b < B; b++) { /* pooled row: argmax(input_ids), the first maximum */
        const int32_t *r = input_ids + (size_t)b * ctx;
        int am = 0;
        for (int t = 0; t < ctx; t++) {
            if (r[t] < 0 || r[t] >= c->vocab) {
                st = ps_errf(err, PS_EINVAL, "clip encode_texts: text %d position %d: id %d outside [0, %d)",
                             b, t, r[t], c->vocab);
                goto done;
            }
            if (r[t] > r[am]) am = t;
        }
        sel[b] = am;
        if (am + 1 > T) T = am + 1;
    }
    int64_t R = (int64_t)B * T, W = tw->cfg.hidden;
    ids = malloc(sizeof(int32_t) * (size_t)R);
    pos = malloc(sizeof(int32_t) * (size_t)R);
    if (!ids || !pos) {
        st = ps_errf(err, PS_ENOMEM, "clip encode_texts: no memory for %d texts", B);
        goto done;
    }
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < T; t++) {
            ids[b * T + t] = input_ids[(size_t)b * ctx + t];
            pos[b * T + t] = t;
        }
        sel[b] += b * T;
    }
    if ((st = scratch_reserve(m, R, B, err))) goto done;
    ps_backend *be = m->be;
    clip_scratch *s = &m->s;
    ps_tensor x = dev2(m, s->x, R, W), h = dev2(m, s->h, R, W);
    ps_tensor idt = dev_i32(m, s->ids, R), post = dev_i32(m, s->pos, R);
    if ((st = ps_buf_upload(be, s->ids, ids, sizeof(int32_t) * (size_t)R, err)) ||
        (st = ps_buf_upload(be, s->pos, pos, sizeof(int32_t) * (size_t)R, err)) ||
        (st = op_embed(be, &x, &tw->tok, &idt, err)) ||
        (st = op_embed(be, &h, &tw->pos, &post, err)) ||
        (st = op_add(be, &x, &h, err)))
        goto done;
    for (int l = 0; l < tw->cfg.layers && st == PS_OK; l++)
        st = block_forward(m, tw, &tw->layers[l], B, T, true, err);
    if (st == PS_OK) st = pool_project(m, tw, B, T, sel, embeds, err);
done:
    free(sel);
    free(ids);
    free(pos);
    return st;
}
