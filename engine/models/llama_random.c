/* llama_init_random: deterministic random weights (see llama_random.h for
 * the distribution). Host memory stays at one float32 matrix (the largest
 * projection) plus its 16-bit or NF4 form; embeddings and lm_head, which can
 * be larger, are made and uploaded in chunks of rows. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/host_parallel.h"
#include "base/log.h"
#include "math/half.h"
#include "models/llama_internal.h"
#include "models/llama_random.h"

#define RAND_CHUNK_ROWS 512

void llama_random_shape(const llama_config *c, int kind, int64_t *rows, int64_t *cols) {
    switch (kind) {
    case LLAMA_RW_EMBED:
    case LLAMA_RW_LM_HEAD: *rows = c->vocab; *cols = c->hidden; return;
    case LLAMA_RW_NORM:
    case LLAMA_RW_ATTN_NORM:
    case LLAMA_RW_FFN_NORM: *rows = 1; *cols = c->hidden; return;
    default: llama_proj_shape(c, kind - LLAMA_RW_PROJ, rows, cols); return;
    }
}

void llama_random_name(int kind, int layer, char *buf, int cap) {
    switch (kind) {
    case LLAMA_RW_EMBED: snprintf(buf, (size_t)cap, "model.embed_tokens.weight"); return;
    case LLAMA_RW_NORM: snprintf(buf, (size_t)cap, "model.norm.weight"); return;
    case LLAMA_RW_LM_HEAD: snprintf(buf, (size_t)cap, "lm_head.weight"); return;
    case LLAMA_RW_ATTN_NORM:
        snprintf(buf, (size_t)cap, "model.layers.%d.input_layernorm.weight", layer);
        return;
    case LLAMA_RW_FFN_NORM:
        snprintf(buf, (size_t)cap, "model.layers.%d.post_attention_layernorm.weight", layer);
        return;
    default:
        snprintf(buf, (size_t)cap, "model.layers.%d.%s.weight", layer,
                 llama_proj_names[kind - LLAMA_RW_PROJ]);
    }
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static float kind_std(const llama_config *c, int kind) {
    int64_t rows, cols;
    llama_random_shape(c, kind, &rows, &cols);
    if (kind == LLAMA_RW_EMBED) return c->tie_embeddings ? 2.0f / sqrtf((float)c->hidden) : 1.0f;
    if (kind == LLAMA_RW_LM_HEAD) return 2.0f / sqrtf((float)c->hidden);
    return 1.0f / sqrtf((float)cols);
}

typedef struct {
    uint64_t seed;
    int layer, kind;
    int64_t row0, cols;
    float scale;
    float *out;
} random_job;

/* Rows [r0, r1) of a job: each row has its own stream, so any split of the
 * rows over threads gives the same values. */
static void random_rows_range(void *ctx, int64_t r0, int64_t r1) {
    const random_job *j = ctx;
    for (int64_t r = r0; r < r1; r++) {
        uint64_t s = j->seed ^ ((uint64_t)(j->layer + 1) << 48) ^ ((uint64_t)j->kind << 40) ^
                     (uint64_t)(j->row0 + r);
        splitmix64(&s);
        float *o = j->out + r * j->cols;
        for (int64_t i = 0; i < j->cols; i++) {
            uint64_t a = splitmix64(&s);
            int32_t u = (int32_t)(a & 0xffff) + (int32_t)((a >> 16) & 0xffff) +
                        (int32_t)((a >> 32) & 0xffff) + (int32_t)(a >> 48) - 2 * 65536;
            o[i] = ps_f16_to_f32(ps_f32_to_f16((float)u * j->scale));
        }
    }
}

void llama_random_rows(const llama_config *c, uint64_t seed, int layer, int kind, int64_t row0,
                       int64_t nrows, float *out) {
    int64_t rows, cols;
    llama_random_shape(c, kind, &rows, &cols);
    if (kind == LLAMA_RW_NORM || kind == LLAMA_RW_ATTN_NORM || kind == LLAMA_RW_FFN_NORM) {
        for (int64_t i = 0; i < nrows * cols; i++) out[i] = 1.0f;
        return;
    }
    /* Irwin-Hall: the sum of 4 uniforms on [0,1) has mean 2 and variance 1/3; the
     * four 16-bit quarters of one 64-bit draw are the uniforms (one draw per value).
     * A 7B-shaped model is 6.7e9 draws: the rows are spread over host threads. */
    random_job j = {seed, layer, kind, row0, cols, kind_std(c, kind) * 1.7320508f / 65536.0f, out};
    host_parallel_for(nrows, 16, random_rows_range, &j);
}

/* A (rows, cols) F16 tensor made and uploaded RAND_CHUNK_ROWS rows at a time. */
static ps_status upload_rows_f16(llama_model *m, uint64_t seed, int layer, int kind,
                                 ps_tensor *out, float *f32, uint16_t *f16, ps_err *err) {
    int64_t rows, cols;
    llama_random_shape(&m->cfg, kind, &rows, &cols);
    ps_tensor t = ps_tensor_2d(PS_DT_F16, rows, cols, NULL, m->be->dev);
    if (rows == 1) t = ps_tensor_1d(PS_DT_F16, cols, NULL, m->be->dev);
    ps_status st = llama_alloc_buf(m, ps_tensor_nbytes(&t), &t.data, err);
    for (int64_t r0 = 0; !st && r0 < rows; r0 += RAND_CHUNK_ROWS) {
        int64_t n = rows - r0 < RAND_CHUNK_ROWS ? rows - r0 : RAND_CHUNK_ROWS;
        llama_random_rows(&m->cfg, seed, layer, kind, r0, n, f32);
        for (int64_t i = 0; i < n * cols; i++) f16[i] = ps_f32_to_f16(f32[i]);
        st = ps_buf_upload(m->be, (char *)t.data + r0 * cols * 2, f16, (size_t)(n * cols) * 2, err);
    }
    if (!st) *out = t;
    return st;
}

static ps_status random_proj(llama_model *m, uint64_t seed, int l, int p, float *f32,
                             uint16_t *f16, ps_err *err) {
    int kind = LLAMA_RW_PROJ + p;
    ps_weight *w = llama_layer_proj(&m->layers[l], p);
    memset(w, 0, sizeof *w);
    if (m->quant == LLAMA_QUANT_NONE) {
        w->kind = PS_WEIGHT_DENSE;
        return upload_rows_f16(m, seed, l, kind, &w->dense, f32, f16, err);
    }
    int64_t rows, cols;
    llama_random_shape(&m->cfg, kind, &rows, &cols);
    llama_random_rows(&m->cfg, seed, l, kind, 0, rows, f32);
    return llama_quantize_upload(m, f32, rows, cols, w, err);
}

ps_status llama_init_random(const llama_config *cfg, uint64_t seed, llama_quant q, ps_backend *be,
                            llama_model **out, ps_err *err) {
    *out = NULL;
    llama_model *m = NULL;
    float *f32 = NULL;
    uint16_t *f16 = NULL;
    ps_status st;
    if ((st = llama_config_check(cfg, err)) || (st = llama_model_alloc(cfg, q, be, &m, err)))
        goto fail;
    /* one buffer big enough for the largest projection or a chunk of rows */
    int64_t cap = (int64_t)RAND_CHUNK_ROWS * cfg->hidden;
    for (int p = 0; p < LLAMA_N_PROJ; p++) {
        int64_t r, c;
        llama_proj_shape(cfg, p, &r, &c);
        if (r * c > cap) cap = r * c;
    }
    f32 = malloc(sizeof(float) * (size_t)cap);
    f16 = malloc(sizeof(uint16_t) * (size_t)cap);
    if (!f32 || !f16) {
        st = ps_errf(err, PS_ENOMEM, "llama random: cannot allocate %lld floats", (long long)cap);
        goto fail;
    }
    if ((st = upload_rows_f16(m, seed, 0, LLAMA_RW_EMBED, &m->embed, f32, f16, err)) ||
        (st = upload_rows_f16(m, seed, 0, LLAMA_RW_NORM, &m->norm, f32, f16, err)))
        goto fail;
    m->lm_head.kind = PS_WEIGHT_DENSE;
    if (cfg->tie_embeddings) m->lm_head.dense = m->embed;
    else if ((st = upload_rows_f16(m, seed, 0, LLAMA_RW_LM_HEAD, &m->lm_head.dense, f32, f16, err)))
        goto fail;
    for (int l = 0; l < cfg->n_layers; l++) {
        llama_layer *L = &m->layers[l];
        if ((st = upload_rows_f16(m, seed, l, LLAMA_RW_ATTN_NORM, &L->attn_norm, f32, f16, err)) ||
            (st = upload_rows_f16(m, seed, l, LLAMA_RW_FFN_NORM, &L->ffn_norm, f32, f16, err)))
            goto fail;
        for (int p = 0; p < LLAMA_N_PROJ; p++)
            if ((st = random_proj(m, seed, l, p, f32, f16, err))) goto fail;
    }
    if ((st = ps_backend_sync(be, err))) goto fail;
    PS_LOG_INFO("llama", "random model: %d layers, hidden %d, vocab %d, %lld bytes of weights",
                cfg->n_layers, cfg->hidden, cfg->vocab, (long long)m->weight_bytes);
    *out = m;
    m = NULL;
fail:
    llama_free(m);
    free(f32);
    free(f16);
    return st;
}
