/* Attention on the CPU: the paged-KV oracle (prefill and decode alike, one
 * (token, head) at a time; attention_fast.c has the default fast variant) and
 * the dense kernel used by encoders.
 * Softmax in float with the max subtracted; one (token, head) per task. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"
#include "kv_rows.h"

ps_status cpu_kv_store(ps_backend *be, ps_kv_layer *kv, const ps_tensor *k, const ps_tensor *v,
                       const ps_tensor *slots, ps_err *err) {
    int64_t row = kv->k.shape[2] * kv->k.shape[3];
    int64_t n_slots = kv->k.shape[0] * kv->k.shape[1];
    const int32_t *s = slots->data;
    int64_t T = ps_tensor_numel(slots);
    for (int64_t t = 0; t < T; t++) {
        if (s[t] < 0 || s[t] >= n_slots)
            return ps_errf(err, PS_EINVAL, "kv_store: slot %d out of range [0, %lld)", s[t],
                           (long long)n_slots);
        cpu_kv_put(kv->k.data, kv->k.dtype, s[t] * row, (const float *)k->data + t * row, row);
        cpu_kv_put(kv->v.data, kv->v.dtype, s[t] * row, (const float *)v->data + t * row, row);
    }
    return PS_OK;
}

typedef struct {
    float *out;
    const float *q;
    const ps_kv_layer *kv;
    const int32_t *tok_seq, *tok_kv_pos, *block_tables;
    int max_pages, page_size;
    int64_t H, n_kv, D;
    float scale;
    int max_len;
} paged_job;

static void paged_rows(void *ctx, int64_t r0, int64_t r1) {
    paged_job *j = ctx;
    /* scores, then one widened row (16-bit caches) */
    float *scores = malloc(sizeof(float) * (size_t)((j->max_len > 0 ? j->max_len : 1) + j->D));
    if (!scores) return; /* cannot happen in practice; output stays as is */
    float *buf = scores + (j->max_len > 0 ? j->max_len : 1);
    const void *K = j->kv->k.data, *V = j->kv->v.data;
    ps_dtype dt = j->kv->k.dtype;
    int64_t group = j->H / j->n_kv, row = j->n_kv * j->D;
    for (int64_t r = r0; r < r1; r++) {
        int64_t t = r / j->H, h = r % j->H, kvh = h / group;
        const int32_t *bt = j->block_tables + (int64_t)j->tok_seq[t] * j->max_pages;
        int len = j->tok_kv_pos[t] + 1;
        const float *q = j->q + (t * j->H + h) * j->D;
        float m = -INFINITY;
        for (int i = 0; i < len; i++) {
            int64_t slot = (int64_t)bt[i / j->page_size] * j->page_size + i % j->page_size;
            const float *k = cpu_kv_row(K, dt, slot * row + kvh * j->D, j->D, buf);
            float s = 0.0f;
            for (int64_t d = 0; d < j->D; d++) s += q[d] * k[d];
            scores[i] = s * j->scale;
            if (scores[i] > m) m = scores[i];
        }
        float sum = 0.0f;
        for (int i = 0; i < len; i++) {
            scores[i] = expf(scores[i] - m);
            sum += scores[i];
        }
        float *o = j->out + (t * j->H + h) * j->D;
        memset(o, 0, sizeof(float) * j->D);
        for (int i = 0; i < len; i++) {
            int64_t slot = (int64_t)bt[i / j->page_size] * j->page_size + i % j->page_size;
            const float *v = cpu_kv_row(V, dt, slot * row + kvh * j->D, j->D, buf);
            float p = scores[i] / sum;
            for (int64_t d = 0; d < j->D; d++) o[d] += p * v[d];
        }
    }
    free(scores);
}

ps_status cpu_attention_check(const ps_kv_layer *kv, const ps_attn_meta *meta, int *max_len,
                              ps_err *err) {
    const int32_t *tok_seq = meta->tok_seq.data, *kv_pos = meta->tok_kv_pos.data;
    *max_len = 0;
    for (int64_t t = 0; t < meta->n_tokens; t++) {
        int len = kv_pos[t] + 1;
        if (kv_pos[t] < 0 || tok_seq[t] < 0 || tok_seq[t] >= meta->n_seqs ||
            (len + kv->page_size - 1) / kv->page_size > meta->max_pages)
            return ps_errf(err, PS_EINVAL, "attention: token %lld has seq %d, kv_pos %d (max %d pages)",
                           (long long)t, tok_seq[t], kv_pos[t], meta->max_pages);
        if (len > *max_len) *max_len = len;
    }
    return PS_OK;
}

ps_status cpu_attention_ref(ps_backend *be, ps_tensor *out, const ps_tensor *q,
                            const ps_kv_layer *kv, const ps_attn_meta *meta, float scale,
                            ps_err *err) {
    paged_job j = {out->data, q->data, kv, meta->tok_seq.data, meta->tok_kv_pos.data,
                   meta->block_tables.data, meta->max_pages, kv->page_size,
                   q->shape[1], kv->k.shape[2], kv->k.shape[3], scale, 0};
    ps_status st = cpu_attention_check(kv, meta, &j.max_len, err);
    if (st) return st;
    cpu_parallel_for(be, (int64_t)meta->n_tokens * j.H, paged_rows, &j);
    return PS_OK;
}

typedef struct {
    float *out;
    const float *q, *k, *v;
    int64_t T, H, D;
    bool causal;
    float scale;
} dense_job;

static void dense_rows(void *ctx, int64_t r0, int64_t r1) {
    dense_job *j = ctx;
    float *scores = malloc(sizeof(float) * (size_t)j->T);
    if (!scores) return;
    for (int64_t r = r0; r < r1; r++) { /* r = (b * T + t) * H + h */
        int64_t h = r % j->H, bt = r / j->H, t = bt % j->T, b = bt / j->T;
        const float *q = j->q + r * j->D;
        int64_t len = j->causal ? t + 1 : j->T;
        float m = -INFINITY;
        for (int64_t i = 0; i < len; i++) {
            const float *k = j->k + ((b * j->T + i) * j->H + h) * j->D;
            float s = 0.0f;
            for (int64_t d = 0; d < j->D; d++) s += q[d] * k[d];
            scores[i] = s * j->scale;
            if (scores[i] > m) m = scores[i];
        }
        float sum = 0.0f;
        for (int64_t i = 0; i < len; i++) {
            scores[i] = expf(scores[i] - m);
            sum += scores[i];
        }
        float *o = j->out + r * j->D;
        memset(o, 0, sizeof(float) * j->D);
        for (int64_t i = 0; i < len; i++) {
            const float *v = j->v + ((b * j->T + i) * j->H + h) * j->D;
            float p = scores[i] / sum;
            for (int64_t d = 0; d < j->D; d++) o[d] += p * v[d];
        }
    }
    free(scores);
}

ps_status cpu_attention_dense(ps_backend *be, ps_tensor *out, const ps_tensor *q,
                              const ps_tensor *k, const ps_tensor *v, bool causal, float scale,
                              ps_err *err) {
    dense_job j = {out->data, q->data, k->data, v->data, q->shape[1], q->shape[2], q->shape[3],
                   causal, scale};
    cpu_parallel_for(be, q->shape[0] * j.T * j.H, dense_rows, &j);
    return PS_OK;
}
