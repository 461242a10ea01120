/* llama_model memory: the shell, device buffers owned by the weights, the
 * NF4 quantise-and-upload step shared by loading and random init, accessors
 * and llama_free. Every device buffer is recorded in m->bufs as soon as it is
 * allocated, so llama_free releases a half-built model completely. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "models/llama_internal.h"
#include "nf4_quant.h"

const char *const llama_proj_names[LLAMA_N_PROJ] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj",
};

ps_weight *llama_layer_proj(llama_layer *L, int p) {
    ps_weight *w[LLAMA_N_PROJ] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->wg, &L->wu, &L->wd};
    return w[p];
}

void llama_proj_shape(const llama_config *c, int p, int64_t *out, int64_t *in) {
    int64_t C = c->hidden, F = c->ffn, HD = (int64_t)c->n_heads * c->head_dim,
            KD = (int64_t)c->n_kv_heads * c->head_dim;
    const int64_t shapes[LLAMA_N_PROJ][2] = {{HD, C}, {KD, C}, {KD, C}, {C, HD},
                                             {F, C},  {F, C},  {C, F}};
    *out = shapes[p][0];
    *in = shapes[p][1];
}

ps_status llama_model_alloc(const llama_config *cfg, llama_quant q, ps_backend *be,
                            llama_model **out, ps_err *err) {
    *out = NULL;
    if (q != LLAMA_QUANT_NF4 && q != LLAMA_QUANT_NONE && q != LLAMA_QUANT_NF4_NODQ)
        return ps_errf(err, PS_EINVAL, "llama: unknown quantisation %d", (int)q);
    llama_model *m = calloc(1, sizeof *m);
    if (!m) return ps_errf(err, PS_ENOMEM, "llama: cannot allocate the model");
    static _Atomic uint64_t next_uid = 1;
    m->uid = atomic_fetch_add(&next_uid, 1);
    m->cfg = *cfg;
    m->quant = q;
    m->be = be;
    m->layers = calloc((size_t)cfg->n_layers, sizeof *m->layers);
    if (!m->layers) {
        free(m);
        return ps_errf(err, PS_ENOMEM, "llama: cannot allocate %d layers", cfg->n_layers);
    }
    *out = m;
    return PS_OK;
}

ps_status llama_alloc_buf(llama_model *m, size_t n, void **dev, ps_err *err) {
    *dev = NULL;
    if (m->n_bufs == m->cap_bufs) {
        int cap = m->cap_bufs ? m->cap_bufs * 2 : 64;
        void **nb = realloc(m->bufs, sizeof *nb * (size_t)cap);
        if (!nb) return ps_errf(err, PS_ENOMEM, "llama: cannot grow the buffer list");
        m->bufs = nb;
        m->cap_bufs = cap;
    }
    ps_status st = ps_buf_alloc(m->be, n, dev, err);
    if (st) return st;
    m->bufs[m->n_bufs++] = *dev;
    m->weight_bytes += (int64_t)n;
    return PS_OK;
}

ps_status llama_upload(llama_model *m, const void *host, size_t n, void **dev, ps_err *err) {
    ps_status st = llama_alloc_buf(m, n, dev, err);
    return st ? st : ps_buf_upload(m->be, *dev, host, n, err);
}

ps_status llama_upload_tensor(llama_model *m, ps_dtype dt, int ndim, const int64_t *shape,
                              const void *host, ps_tensor *out, ps_err *err) {
    ps_tensor t = {dt, ndim, {0}, NULL, m->be->dev};
    for (int i = 0; i < ndim; i++) t.shape[i] = shape[i];
    ps_status st = llama_upload(m, host, ps_tensor_nbytes(&t), &t.data, err);
    if (st) return st;
    *out = t;
    return PS_OK;
}

ps_status llama_quantize_upload(llama_model *m, const float *w32, int64_t out, int64_t in,
                                ps_weight *w, ps_err *err) {
    nf4_host q = {0};
    bool dq = m->quant != LLAMA_QUANT_NF4_NODQ;
    ps_status st = nf4_quantize(w32, out, in, dq, &q, err);
    if (st) goto fail;
    int64_t n = out * in, nblocks = (n + PS_NF4_BLOCK - 1) / PS_NF4_BLOCK;
    ps_nf4 v = {out, in, NULL, NULL, NULL, q.offset, NULL, m->be->dev};
    void *d;
    if ((st = llama_upload(m, q.packed, (size_t)(n + 1) / 2, &d, err))) goto fail;
    v.packed = d;
    if (dq) {
        int64_t n2 = (nblocks + PS_NF4_DQ_BLOCK - 1) / PS_NF4_DQ_BLOCK;
        if ((st = llama_upload(m, q.absmax_q8, (size_t)nblocks, &d, err))) goto fail;
        v.absmax_q8 = d;
        if ((st = llama_upload(m, q.absmax2, sizeof(float) * (size_t)n2, &d, err))) goto fail;
        v.absmax2 = d;
    } else {
        if ((st = llama_upload(m, q.absmax, sizeof(float) * (size_t)nblocks, &d, err))) goto fail;
        v.absmax = d;
    }
    memset(w, 0, sizeof *w);
    w->kind = PS_WEIGHT_NF4;
    w->nf4 = v;
fail:
    nf4_host_free(&q);
    return st;
}

void llama_free(llama_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n_bufs; i++) ps_buf_free(m->be, m->bufs[i]);
    ps_buf_free(m->be, m->s.tok_buf);
    ps_buf_free(m->be, m->s.out_buf);
    ps_buf_free(m->be, m->s.meta_buf);
    free(m->s.meta_host);
    free(m->s.lora_slots);
    free(m->s.lora_active);
    free(m->bufs);
    free(m->layers);
    free(m);
}

const llama_config *llama_get_config(const llama_model *m) { return &m->cfg; }
int64_t llama_weight_bytes(const llama_model *m) { return m->weight_bytes; }
ps_backend *llama_backend(const llama_model *m) { return m->be; }

static int64_t weight_nbytes(const ps_weight *w) {
    if (w->kind == PS_WEIGHT_DENSE) return (int64_t)ps_tensor_nbytes(&w->dense);
    int64_t n = w->nf4.out * w->nf4.in, nb = (n + PS_NF4_BLOCK - 1) / PS_NF4_BLOCK;
    int64_t scales = w->nf4.absmax ? nb * 4 : nb + (nb + PS_NF4_DQ_BLOCK - 1) / PS_NF4_DQ_BLOCK * 4;
    return (n + 1) / 2 + scales;
}

int64_t llama_decode_bytes_per_token(const llama_model *m) {
    int64_t b = 0;
    for (int l = 0; l < m->cfg.n_layers; l++) {
        llama_layer *L = &m->layers[l];
        for (int p = 0; p < LLAMA_N_PROJ; p++) b += weight_nbytes(llama_layer_proj(L, p));
        b += (int64_t)ps_tensor_nbytes(&L->attn_norm) + (int64_t)ps_tensor_nbytes(&L->ffn_norm);
    }
    b += (int64_t)ps_tensor_nbytes(&m->norm) + weight_nbytes(&m->lm_head);
    b += (int64_t)m->cfg.hidden * (int64_t)ps_dtype_size(m->embed.dtype); /* one embedding row */
    return b;
}
