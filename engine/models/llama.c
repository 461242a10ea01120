/* llama_forward: one step of HF LlamaForCausalLM over a batch of tokens from
 * several sequences (prefill chunks and decode tokens mixed), with a paged KV
 * cache. Reads top to bottom like LlamaModel.forward / llama2.c's forward():
 *
 *   x = embed(ids)
 *   per layer: h = rmsnorm(x); q, k, v = h Wq, h Wk, h Wv; rope(q, k) at each
 *              token's position; store k, v in the cache; attention over the
 *              sequence's cache entries 0..tok_kv_pos (causal within the step);
 *              x += att Wo; h = rmsnorm(x); x += (silu(h Wg) * h Wu) Wd
 *              (each "x += ...; h = rmsnorm(x)" pair and the projections of h
 *              are one op_add_rmsnorm_linear_n, the last MLP output's add
 *              crossing into the next layer; x alternates between two buffers)
 *   logits = lm_head(rmsnorm(x[out_rows]))   (only the rows asked for)
 *
 * Every op goes through op_* (kernels/ops.h), so this file runs unchanged on
 * any backend. The step's metadata is checked on the host, then uploaded in
 * one copy; activations live in scratch buffers owned by the model, grown
 * when a bigger batch arrives and otherwise reused (no allocation per step). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "models/llama_internal.h"

#define ALIGN_ELEMS 16 /* 64-byte alignment of each scratch region */
/* Step limits far above any real batch; they keep every size below in int range. */
#define LLAMA_MAX_STEP_TOKENS (1 << 20)
#define LLAMA_MAX_STEP_PAGES (1 << 26)

static int64_t align_up(int64_t n) { return (n + ALIGN_ELEMS - 1) / ALIGN_ELEMS * ALIGN_ELEMS; }

/* Floats of the per-token activations for T tokens (layout in carve). */
static int64_t tok_floats(const llama_config *c, int64_t T) {
    int64_t C = c->hidden, HD = (int64_t)c->n_heads * c->head_dim,
            KD = (int64_t)c->n_kv_heads * c->head_dim, F = c->ffn;
    return 4 * align_up(T * C) + 2 * align_up(T * HD) + 2 * align_up(T * KD) + 3 * align_up(T * F);
}

static int64_t out_floats(const llama_config *c, int64_t R) {
    return 2 * align_up(R * c->hidden) + align_up(R * c->vocab);
}

static int next_cap(int need) {
    int cap = 16;
    while (cap < need) cap = cap > (1 << 29) ? need : cap * 2;
    return cap;
}

static size_t tok_bytes(const llama_config *c, int n) { return sizeof(float) * (size_t)tok_floats(c, n); }
static size_t out_bytes(const llama_config *c, int n) { return sizeof(float) * (size_t)out_floats(c, n); }
static size_t meta_bytes(const llama_config *c, int n) { return sizeof(int32_t) * (size_t)n; }

/* Grows one device scratch buffer to hold `need` units (tokens, output rows or
 * ints); capacity doubles so a run of growing prefill chunks reallocates rarely. */
static ps_status grow(llama_model *m, void **buf, int *cap, int need,
                      size_t (*bytes)(const llama_config *, int), ps_err *err) {
    if (need <= *cap && *buf) return PS_OK;
    int ncap = next_cap(need > *cap ? need : *cap);
    ps_buf_free(m->be, *buf);
    *buf = NULL;
    *cap = 0;
    ps_status st = ps_buf_alloc(m->be, bytes(&m->cfg, ncap), buf, err);
    if (!st) *cap = ncap;
    return st;
}

static ps_status scratch_reserve(llama_model *m, const llama_batch *b, int meta_ints,
                                 ps_err *err) {
    llama_scratch *s = &m->s;
    int old_meta = s->meta_cap;
    ps_status st;
    if ((st = grow(m, &s->tok_buf, &s->tok_cap, b->n_tokens, tok_bytes, err)) ||
        (st = grow(m, &s->out_buf, &s->out_cap, b->n_out, out_bytes, err)) ||
        (st = grow(m, &s->meta_buf, &s->meta_cap, meta_ints, meta_bytes, err)))
        return st;
    if (s->meta_cap != old_meta || !s->meta_host) {
        free(s->meta_host);
        s->meta_host = malloc(sizeof(int32_t) * (size_t)s->meta_cap);
        if (!s->meta_host) return ps_errf(err, PS_ENOMEM, "llama: cannot allocate step metadata");
    }
    return PS_OK;
}

/* Host-side checks of everything an op would otherwise read out of bounds. */
static ps_status check_batch(const llama_model *m, const kv_cache *kv, const llama_batch *b,
                             ps_err *err) {
    const llama_config *c = &m->cfg;
    if (b->n_tokens < 1 || b->n_out < 0 || b->n_out > b->n_tokens || b->n_seqs < 1 ||
        b->max_pages < 1 || b->n_tokens > LLAMA_MAX_STEP_TOKENS ||
        (int64_t)b->n_seqs * b->max_pages > LLAMA_MAX_STEP_PAGES)
        return ps_errf(err, PS_EINVAL, "llama batch: %d tokens, %d outputs, %d sequences, %d pages "
                                       "(need 1 <= tokens <= 2^20, 0 <= outputs <= tokens, >= 1 seq and "
                                       "page, seqs * pages <= 2^26)",
                       b->n_tokens, b->n_out, b->n_seqs, b->max_pages);
    if (!kv || kv->n_layers != c->n_layers || kv->be != m->be || !kv->layers ||
        kv->layers[0].k.shape[2] != c->n_kv_heads || kv->layers[0].k.shape[3] != c->head_dim)
        return ps_errf(err, PS_EINVAL, "llama batch: the KV cache was not made for this model");
    for (int t = 0; t < b->n_tokens; t++) {
        int32_t s = b->tok_seq[t], kp = b->tok_kv_pos[t];
        if (b->ids[t] < 0 || b->ids[t] >= c->vocab)
            return ps_errf(err, PS_EINVAL, "llama batch: token %d id %d outside the vocabulary of %d",
                           t, b->ids[t], c->vocab);
        if (s < 0 || s >= b->n_seqs || kp < 0 || kp / kv->page_size >= b->max_pages || b->pos[t] < 0)
            return ps_errf(err, PS_EINVAL, "llama batch: token %d has seq %d (of %d), kv_pos %d "
                                           "(%d pages of %d), pos %d", t, s, b->n_seqs, kp,
                           b->max_pages, kv->page_size, b->pos[t]);
    }
    /* every page a token can read (entries 0..kv_pos of its sequence) must exist */
    for (int t = 0; t < b->n_tokens; t++) {
        const int32_t *bt = b->block_tables + (int64_t)b->tok_seq[t] * b->max_pages;
        for (int p = b->tok_kv_pos[t] / kv->page_size; p >= 0; p--)
            if (bt[p] < 0 || bt[p] >= kv->n_pages)
                return ps_errf(err, PS_EINVAL, "llama batch: sequence %d page %d is %d, outside the "
                                               "pool of %d pages", b->tok_seq[t], p, bt[p], kv->n_pages);
    }
    for (int r = 0; r < b->n_out; r++)
        if (b->out_rows[r] < 0 || b->out_rows[r] >= b->n_tokens)
            return ps_errf(err, PS_EINVAL, "llama batch: out_rows[%d] = %d outside [0, %d)", r,
                           b->out_rows[r], b->n_tokens);
    return llama_adapters_check(m, b, err);
}

typedef struct {
    ps_tensor ids, pos, slots, out_rows;
    ps_attn_meta attn;
    llama_step_adapters ad;
} step_meta;

/* Packs ids | pos | slots | tok_seq | tok_kv_pos | out_rows | block_tables
 * (| adapter metadata) into one staging array and uploads it once. The block
 * table goes out `width` >= max_pages columns wide (padding -1, never read). */
static ps_status upload_meta(llama_model *m, const kv_cache *kv, const llama_batch *b, int width,
                             step_meta *sm, ps_err *err) {
    int T = b->n_tokens, R = b->n_out, BT = b->n_seqs * width;
    int32_t *h = m->s.meta_host, *d = m->s.meta_buf;
    ps_device dev = m->be->dev;
    memcpy(h, b->ids, sizeof(int32_t) * (size_t)T);
    memcpy(h + T, b->pos, sizeof(int32_t) * (size_t)T);
    int max_len = 0;
    for (int t = 0; t < T; t++) {
        int32_t kp = b->tok_kv_pos[t];
        int32_t page = b->block_tables[(int64_t)b->tok_seq[t] * b->max_pages + kp / kv->page_size];
        h[2 * T + t] = page * kv->page_size + kp % kv->page_size;
        if (kp + 1 > max_len) max_len = kp + 1;
    }
    memcpy(h + 3 * T, b->tok_seq, sizeof(int32_t) * (size_t)T);
    memcpy(h + 4 * T, b->tok_kv_pos, sizeof(int32_t) * (size_t)T);
    if (R) memcpy(h + 5 * T, b->out_rows, sizeof(int32_t) * (size_t)R);
    for (int s = 0; s < b->n_seqs; s++) {
        int32_t *row = h + 5 * T + R + (int64_t)s * width;
        memcpy(row, b->block_tables + (int64_t)s * b->max_pages, sizeof(int32_t) * (size_t)b->max_pages);
        for (int p = b->max_pages; p < width; p++) row[p] = -1;
    }
    sm->ids = ps_tensor_1d(PS_DT_I32, T, d, dev);
    sm->pos = ps_tensor_1d(PS_DT_I32, T, d + T, dev);
    sm->slots = ps_tensor_1d(PS_DT_I32, T, d + 2 * T, dev);
    sm->out_rows = ps_tensor_1d(PS_DT_I32, R, d + 5 * T, dev);
    sm->attn.n_tokens = T;
    sm->attn.n_seqs = b->n_seqs;
    sm->attn.max_pages = width;
    sm->attn.tok_seq = ps_tensor_1d(PS_DT_I32, T, d + 3 * T, dev);
    sm->attn.tok_kv_pos = ps_tensor_1d(PS_DT_I32, T, d + 4 * T, dev);
    sm->attn.block_tables = ps_tensor_2d(PS_DT_I32, b->n_seqs, width, d + 5 * T + R, dev);
    sm->attn.max_kv_len = max_len;
    int AD = llama_adapters_meta_ints(b);
    ps_status st = llama_adapters_begin(m, b, h + 5 * T + R + BT, d + 5 * T + R + BT, &sm->ad, err);
    if (st) return st;
    return ps_buf_upload(m->be, d, h, sizeof(int32_t) * (size_t)(5 * T + R + BT + AD), err);
}

/* Activations of one step, views into the scratch buffers. */
typedef struct {
    ps_tensor xa, xb;        /* (T, C) the residual stream's two buffers: */
    ps_tensor *x, *x_next;   /* it is in x; the next residual add writes x_next, then they swap */
    ps_tensor h, tmp;        /* (T, C) normed input, projection output */
    ps_tensor q, att;        /* (T, H, D) */
    ps_tensor k, v;          /* (T, KV, D) */
    ps_tensor g, u, a;       /* (T, F) gate, up, silu(gate) * up */
    ps_tensor xo, ho, logits;/* (R, C) (R, C) (R, V) */
} acts;

static void carve(llama_model *m, int T, int R, acts *a) {
    const llama_config *c = &m->cfg;
    ps_device dev = m->be->dev;
    float *p = m->s.tok_buf;
    int64_t C = c->hidden, H = c->n_heads, KV = c->n_kv_heads, D = c->head_dim, F = c->ffn;
#define TAKE(n) (p += align_up(n), p - align_up(n))
    a->xa = ps_tensor_2d(PS_DT_F32, T, C, TAKE(T * C), dev);
    a->xb = ps_tensor_2d(PS_DT_F32, T, C, TAKE(T * C), dev);
    a->x = &a->xa, a->x_next = &a->xb;
    a->h = ps_tensor_2d(PS_DT_F32, T, C, TAKE(T * C), dev);
    a->tmp = ps_tensor_2d(PS_DT_F32, T, C, TAKE(T * C), dev);
    a->q = ps_tensor_3d(PS_DT_F32, T, H, D, TAKE(T * H * D), dev);
    a->att = ps_tensor_3d(PS_DT_F32, T, H, D, TAKE(T * H * D), dev);
    a->k = ps_tensor_3d(PS_DT_F32, T, KV, D, TAKE(T * KV * D), dev);
    a->v = ps_tensor_3d(PS_DT_F32, T, KV, D, TAKE(T * KV * D), dev);
    a->g = ps_tensor_2d(PS_DT_F32, T, F, TAKE(T * F), dev);
    a->u = ps_tensor_2d(PS_DT_F32, T, F, TAKE(T * F), dev);
    a->a = ps_tensor_2d(PS_DT_F32, T, F, TAKE(T * F), dev);
    p = m->s.out_buf;
    a->xo = ps_tensor_2d(PS_DT_F32, R, C, TAKE(R * C), dev);
    a->ho = ps_tensor_2d(PS_DT_F32, R, C, TAKE(R * C), dev);
    a->logits = ps_tensor_2d(PS_DT_F32, R, c->vocab, TAKE(R * c->vocab), dev);
#undef TAKE
}

/* q, k, v of a (T, H*D) projection output seen as (T, H, D) for rope/attention. */
static ps_tensor as_2d(const ps_tensor *t) {
    return ps_tensor_2d(t->dtype, t->shape[0], t->shape[1] * t->shape[2], t->data, t->dev);
}

/* x_next, holding x + tmp, becomes x */
static void residual_swap(acts *a) {
    ps_tensor *t = a->x;
    a->x = a->x_next, a->x_next = t;
}

/* h = rmsnorm(x + tmp) and the projections ys = h ws^T (without "+ tmp" for
 * the model's first norm). The sum goes to x_next, which then becomes x:
 * op_add_rmsnorm_linear_n leaves its input as it was, so that a backend may
 * run the add, the norm and the projections as one launch. */
static ps_status norm_project(ps_backend *be, acts *a, bool add, const ps_tensor *w, float eps, int n,
                              ps_tensor *const *ys, const ps_weight *const *ws, ps_err *err) {
    ps_status st;
    if (!add) {
        st = op_rmsnorm(be, &a->h, a->x, w, eps, err);
        return st ? st : op_linear_n(be, n, ys, &a->h, ws, err);
    }
    if ((st = op_add_rmsnorm_linear_n(be, &a->h, a->x_next, a->x, &a->tmp, w, eps, n, ys, ws, err))) return st;
    residual_swap(a);
    return PS_OK;
}

static ps_status layer_forward(llama_model *m, llama_layer *L, ps_kv_layer *kvl,
                               const step_meta *sm, acts *a, ps_err *err) {
    ps_backend *be = m->be;
    const llama_config *c = &m->cfg;
    ps_tensor q2 = as_2d(&a->q), k2 = as_2d(&a->k), v2 = as_2d(&a->v), att2 = as_2d(&a->att);
    /* projections that read the same input go in one op_linear_n call (one
     * launch on CUDA at decode); each adapter's delta follows its projection */
    ps_tensor *qkv[3] = {&q2, &k2, &v2}, *gu[2] = {&a->g, &a->u};
    const ps_weight *wqkv[3] = {&L->wq, &L->wk, &L->wv}, *wgu[2] = {&L->wg, &L->wu};
    const llama_step_adapters *ad = &sm->ad;
    int l = (int)(L - m->layers);
    ps_status st;
    /* self-attention block (LlamaAttention, HF rotate_half layout); the previous
     * layer's MLP output (in tmp) joins the residual stream here, fused with the norm */
    static const int p_qkv[3] = {0, 1, 2}, p_gu[2] = {4, 5};
    if ((st = norm_project(be, a, l > 0, &L->attn_norm, c->rms_eps, 3, qkv, wqkv, err)) ||
        (st = llama_adapters_lora_n(m, ad, l, 3, p_qkv, qkv, &a->h, err)) ||
        (st = op_rope_store(be, &a->q, &a->k, &a->v, &sm->pos, c->rope_theta, kvl, &sm->slots, err)) ||
        (st = op_attention(be, &a->att, &a->q, kvl, &sm->attn, 1.0f / sqrtf((float)c->head_dim),
                           err)) ||
        (st = op_linear(be, &a->tmp, &att2, &L->wo, err)) ||
        (st = llama_adapters_lora(m, ad, l, 3, &a->tmp, &att2, err)))
        return st;
    /* MLP block (LlamaMLP: down(silu(gate(h)) * up(h))), after x += attention output;
     * without LoRA on gate and up, the norm, both projections and the silu in one op */
    if (!llama_adapters_lora_on(ad, l, 4) && !llama_adapters_lora_on(ad, l, 5)) {
        if ((st = op_add_rmsnorm_swiglu(be, &a->h, a->x_next, a->x, &a->tmp, &L->ffn_norm, c->rms_eps, &L->wg,
                                        &L->wu, &a->g, &a->u, &a->a, err)))
            return st;
        residual_swap(a);
    } else if ((st = norm_project(be, a, true, &L->ffn_norm, c->rms_eps, 2, gu, wgu, err)) ||
               (st = llama_adapters_lora_n(m, ad, l, 2, p_gu, gu, &a->h, err)) ||
               (st = op_silu_mul(be, &a->a, &a->g, &a->u, err)))
        return st;
    if ((st = op_linear(be, &a->tmp, &a->a, &L->wd, err)) ||
        (st = llama_adapters_lora(m, ad, l, 6, &a->tmp, &a->a, err)))
        return st;
    return PS_OK; /* the MLP output stays in tmp: the next norm (or the caller) adds it */
}

/* Everything of a step from the embedding to the logits, without the final
 * download: the part a device backend may record as a graph (ps_graph_run). */
typedef struct {
    llama_model *m;
    kv_cache *kv;
    const llama_batch *b;
    const step_meta *sm;
    acts *a;
} step_ctx;

static ps_status step_body(void *ctx, ps_err *err) {
    step_ctx *sc = ctx;
    llama_model *m = sc->m;
    ps_backend *be = m->be;
    const llama_config *c = &m->cfg;
    const step_meta *sm = sc->sm;
    acts *a = sc->a;
    ps_status st;
    if ((st = op_embed(be, a->x, &m->embed, &sm->ids, err)) ||
        (st = llama_adapters_embed(m, sc->b, &sm->ad, a->x, err)))
        return st;
    for (int l = 0; l < c->n_layers; l++)
        if ((st = layer_forward(m, &m->layers[l], &sc->kv->layers[l], sm, a, err))) {
            ps_err_wrap(err, "layer %d", l);
            return st;
        }
    if (sc->b->n_out == 0) return PS_OK;
    /* the last MLP output, then final norm and lm_head only on the rows whose logits are wanted */
    if ((st = op_add(be, a->x, &a->tmp, err)) ||
        (st = op_gather_rows(be, &a->xo, a->x, &sm->out_rows, err)) ||
        (st = op_rmsnorm(be, &a->ho, &a->xo, &m->norm, c->rms_eps, err)) ||
        (st = op_linear(be, &a->logits, &a->ho, &m->lm_head, err)) ||
        (st = llama_adapters_lm_head(m, sc->b, &sm->ad, &a->logits, &a->ho, err)))
        return st;
    return PS_OK;
}

/* A step may be recorded as a graph when everything its ops take from the
 * host is a function of the key below, and the batch is bounded. Only steps
 * that want every token's logits (decode steps) qualify: their shapes repeat
 * from step to step, while prefill chunks would fill the backend's small
 * graph cache with shapes seen once. Adapters: LoRA qualifies (its tables are
 * a function of the step's adapters, in order, keyed by load uid; which token
 * uses which is device metadata); embedding or lm_head replacements and
 * virtual tokens do not (they run per host-computed run of tokens). The
 * block-table width is padded to a power of two so that a caller passing
 * only the pages in use keeps its key while a sequence grows. */
#define LLAMA_GRAPH_MAX_TOKENS 64

static bool graphable(const llama_batch *b) {
    if (b->n_tokens > LLAMA_GRAPH_MAX_TOKENS || b->n_out != b->n_tokens) return false;
    for (int i = 0; i < b->n_adapters; i++)
        if (b->adapters[i]->embed_tokens || b->adapters[i]->lm_head) return false;
    if (b->tok_virtual)
        for (int t = 0; t < b->n_tokens; t++)
            if (b->tok_virtual[t] >= 0) return false;
    return true;
}

static int pages_bucket(int max_pages) {
    int w = 1;
    while (w < max_pages) w *= 2;
    return w;
}

static uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    return h;
}

/* Every host value the recorded ops see: shapes (tokens = output rows here,
 * sequences, table width), the addresses of the scratch, metadata and KV
 * buffers (they move when a buffer grows) and the step's adapters in order. The attention metadata's
 * max_kv_len is left out: it varies every step and only the CPU backend,
 * which records no graphs, reads it. */
static uint64_t graph_key(const llama_model *m, const kv_cache *kv, const llama_batch *b, int width) {
    uint64_t h = 0x5eedull;
    h = mix(h, (uint64_t)b->n_tokens);
    h = mix(h, (uint64_t)b->n_seqs);
    h = mix(h, (uint64_t)width);
    /* the model and cache by uid: a model freed and another loaded at the same
     * address (same shapes, other weights) must not replay the old recording */
    h = mix(h, m->uid);
    h = mix(h, kv->uid);
    h = mix(h, (uint64_t)(uintptr_t)kv->layers[0].k.data);
    h = mix(h, (uint64_t)(uintptr_t)m->s.tok_buf);
    h = mix(h, (uint64_t)(uintptr_t)m->s.out_buf);
    h = mix(h, (uint64_t)(uintptr_t)m->s.meta_buf);
    h = mix(h, (uint64_t)b->n_adapters);
    for (int i = 0; i < b->n_adapters; i++) h = mix(h, b->adapters[i]->uid);
    return h;
}

ps_status llama_forward(llama_model *m, kv_cache *kv, const llama_batch *b, float *logits,
                        ps_err *err) {
    ps_backend *be = m->be;
    step_meta sm;
    acts a;
    ps_status st;
    if ((st = check_batch(m, kv, b, err))) return st;
    bool graph = graphable(b);
    int width = graph ? pages_bucket(b->max_pages) : b->max_pages;
    int meta_ints = 5 * b->n_tokens + b->n_out + b->n_seqs * width + llama_adapters_meta_ints(b);
    if ((st = scratch_reserve(m, b, meta_ints, err)) || (st = upload_meta(m, kv, b, width, &sm, err)))
        return st;
    carve(m, b->n_tokens, b->n_out, &a);

    step_ctx sc = {m, kv, b, &sm, &a};
    st = graph ? ps_graph_run(be, graph_key(m, kv, b, width), step_body, &sc, err) : step_body(&sc, err);
    if (st) return st;
    if (b->n_out == 0) return ps_backend_sync(be, err);
    return ps_buf_download(be, logits, a.logits.data,
                           sizeof(float) * (size_t)b->n_out * (size_t)m->cfg.vocab, err);
}
