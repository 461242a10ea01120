/* Public op entry points: check dtypes, shapes and devices once, then
 * dispatch to the backend table. Backends may then assume valid input.
 * A NULL entry answers PS_ENOTSUP naming the op and the backend. */
#include "ops.h"

#include <stdlib.h>

size_t ps_dtype_size(ps_dtype dt) {
    switch (dt) {
    case PS_DT_F32: case PS_DT_I32: return 4;
    case PS_DT_F16: case PS_DT_BF16: return 2;
    case PS_DT_U8: return 1;
    }
    return 0;
}

const char *ps_dtype_name(ps_dtype dt) {
    switch (dt) {
    case PS_DT_F32: return "F32";
    case PS_DT_F16: return "F16";
    case PS_DT_BF16: return "BF16";
    case PS_DT_I32: return "I32";
    case PS_DT_U8: return "U8";
    }
    return "?";
}

ps_tensor ps_tensor_1d(ps_dtype dt, int64_t n, void *data, ps_device dev) {
    ps_tensor t = {dt, 1, {n, 0, 0, 0}, data, dev};
    return t;
}
ps_tensor ps_tensor_2d(ps_dtype dt, int64_t rows, int64_t cols, void *data, ps_device dev) {
    ps_tensor t = {dt, 2, {rows, cols, 0, 0}, data, dev};
    return t;
}
ps_tensor ps_tensor_3d(ps_dtype dt, int64_t a, int64_t b, int64_t c, void *data, ps_device dev) {
    ps_tensor t = {dt, 3, {a, b, c, 0}, data, dev};
    return t;
}

int64_t ps_tensor_numel(const ps_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t ps_tensor_nbytes(const ps_tensor *t) {
    return (size_t)ps_tensor_numel(t) * ps_dtype_size(t->dtype);
}

ps_tensor ps_tensor_rows(const ps_tensor *t, int64_t row0, int64_t n) {
    ps_tensor v = *t;
    size_t row_bytes = ps_tensor_nbytes(t) / (size_t)(t->shape[0] ? t->shape[0] : 1);
    v.shape[0] = n;
    v.data = (char *)t->data + (size_t)row0 * row_bytes;
    return v;
}

int64_t ps_weight_out(const ps_weight *w) {
    return w->kind == PS_WEIGHT_NF4 ? w->nf4.out : w->dense.shape[0];
}
int64_t ps_weight_in(const ps_weight *w) {
    return w->kind == PS_WEIGHT_NF4 ? w->nf4.in : w->dense.shape[1];
}

void ps_backend_destroy(ps_backend *be) {
    if (be && be->destroy) be->destroy(be);
}

/* ---- buffers ---- */

ps_status ps_buf_alloc(ps_backend *be, size_t nbytes, void **out, ps_err *err) {
    *out = NULL;
    if (nbytes == 0) nbytes = 1;
    return be->alloc(be, nbytes, out, err);
}
void ps_buf_free(ps_backend *be, void *ptr) {
    if (ptr) be->free(be, ptr);
}
ps_status ps_buf_upload(ps_backend *be, void *dst, const void *src, size_t n, ps_err *err) {
    return n ? be->upload(be, dst, src, n, err) : PS_OK;
}
ps_status ps_buf_download(ps_backend *be, void *dst, const void *src, size_t n, ps_err *err) {
    return n ? be->download(be, dst, src, n, err) : PS_OK;
}
ps_status ps_backend_sync(ps_backend *be, ps_err *err) { return be->sync ? be->sync(be, err) : PS_OK; }

ps_status ps_graph_run(ps_backend *be, uint64_t key, ps_graph_body_fn body, void *ctx,
                       ps_err *err) {
    if (!be->graph_launch || !be->graph_begin || !be->graph_end) return body(ctx, err);
    bool launched = false, recording = false;
    ps_status st = be->graph_launch(be, key, &launched, err);
    if (st || launched) return st;
    if ((st = be->graph_begin(be, key, &recording, err))) return st;
    st = body(ctx, err);
    if (!recording) return st;
    ps_err end_err;
    ps_status end = be->graph_end(be, st == PS_OK, &launched, &end_err);
    if (st) return st; /* the body's error names the op that failed */
    if (end) {
        if (err) *err = end_err;
        return end;
    }
    return launched ? PS_OK : body(ctx, err); /* recorded but not run: run it now */
}

/* ---- checks ---- */

static bool is_float(ps_dtype dt) { return dt == PS_DT_F32 || dt == PS_DT_F16 || dt == PS_DT_BF16; }

#define NEED_OP(be, fn, opname)                                                             \
    do {                                                                                  \
        if (!(be)->fn)                                                                    \
            return ps_errf(err, PS_ENOTSUP, "op %s is not supported by the %s backend", opname, \
                           (be)->name);                                                   \
    } while (0)

static ps_status check_dev(ps_backend *be, const ps_tensor *t, const char *op, const char *what,
                           ps_err *err) {
    if (t->dev != be->dev)
        return ps_errf(err, PS_EINVAL, "%s: tensor '%s' lives on device %d, backend %s is %d", op,
                       what, (int)t->dev, be->name, (int)be->dev);
    if (!t->data && ps_tensor_numel(t) > 0)
        return ps_errf(err, PS_EINVAL, "%s: tensor '%s' has no data", op, what);
    return PS_OK;
}

static ps_status check_dtype(const ps_tensor *t, ps_dtype want, const char *op, const char *what,
                             ps_err *err) {
    if (t->dtype != want)
        return ps_errf(err, PS_EINVAL, "%s: tensor '%s' dtype %s, expected %s", op, what,
                       ps_dtype_name(t->dtype), ps_dtype_name(want));
    return PS_OK;
}

static ps_status check_same(const ps_tensor *a, const ps_tensor *b, const char *op, ps_err *err) {
    if (ps_tensor_numel(a) != ps_tensor_numel(b))
        return ps_errf(err, PS_EINVAL, "%s: element counts differ (%lld vs %lld)", op,
                       (long long)ps_tensor_numel(a), (long long)ps_tensor_numel(b));
    return PS_OK;
}

/* Last dimension and number of rows of a tensor viewed as (rows, last). */
static int64_t last_dim(const ps_tensor *t) { return t->ndim ? t->shape[t->ndim - 1] : 1; }
static int64_t rows_of(const ps_tensor *t) {
    int64_t c = last_dim(t);
    return c ? ps_tensor_numel(t) / c : 0;
}

#define TRY(x)                       \
    do {                             \
        ps_status s_ = (x);          \
        if (s_ != PS_OK) return s_;  \
    } while (0)

/* ---- ops ---- */

ps_status op_embed(ps_backend *be, ps_tensor *out, const ps_tensor *table, const ps_tensor *ids,
                   ps_err *err) {
    NEED_OP(be, embed, "embed");
    TRY(check_dev(be, out, "embed", "out", err));
    TRY(check_dev(be, table, "embed", "table", err));
    TRY(check_dev(be, ids, "embed", "ids", err));
    TRY(check_dtype(out, PS_DT_F32, "embed", "out", err));
    TRY(check_dtype(ids, PS_DT_I32, "embed", "ids", err));
    if (!is_float(table->dtype) || table->ndim != 2)
        return ps_errf(err, PS_EINVAL, "embed: table must be a 2-d float tensor");
    if (rows_of(out) != ps_tensor_numel(ids) || last_dim(out) != table->shape[1])
        return ps_errf(err, PS_EINVAL, "embed: out (%lld, %lld) vs ids %lld and width %lld",
                       (long long)rows_of(out), (long long)last_dim(out),
                       (long long)ps_tensor_numel(ids), (long long)table->shape[1]);
    return be->embed(be, out, table, ids, err);
}

static ps_status check_linear(ps_backend *be, ps_tensor *y, const ps_tensor *x, const ps_weight *w,
                              ps_err *err) {
    NEED_OP(be, linear, "linear");
    TRY(check_dev(be, y, "linear", "y", err));
    TRY(check_dev(be, x, "linear", "x", err));
    TRY(check_dtype(y, PS_DT_F32, "linear", "y", err));
    TRY(check_dtype(x, PS_DT_F32, "linear", "x", err));
    if (w->kind == PS_WEIGHT_DENSE) {
        TRY(check_dev(be, &w->dense, "linear", "weight", err));
        if (!is_float(w->dense.dtype) || w->dense.ndim != 2)
            return ps_errf(err, PS_EINVAL, "linear: dense weight must be a 2-d float tensor");
    } else {
        if (w->nf4.dev != be->dev || !w->nf4.packed)
            return ps_errf(err, PS_EINVAL, "linear: nf4 weight not on the %s backend", be->name);
        if (!w->nf4.absmax && !(w->nf4.absmax_q8 && w->nf4.absmax2))
            return ps_errf(err, PS_EINVAL, "linear: nf4 weight has no block scales");
    }
    int64_t in = ps_weight_in(w), out = ps_weight_out(w);
    if (last_dim(x) != in || last_dim(y) != out || rows_of(x) != rows_of(y))
        return ps_errf(err, PS_EINVAL,
                       "linear: x (%lld, %lld), y (%lld, %lld), weight (%lld, %lld)",
                       (long long)rows_of(x), (long long)last_dim(x), (long long)rows_of(y),
                       (long long)last_dim(y), (long long)out, (long long)in);
    return PS_OK;
}

ps_status op_linear(ps_backend *be, ps_tensor *y, const ps_tensor *x, const ps_weight *w,
                    ps_err *err) {
    TRY(check_linear(be, y, x, w, err));
    return be->linear(be, y, x, w, err);
}

ps_status op_linear_n(ps_backend *be, int n, ps_tensor *const *ys, const ps_tensor *x,
                      const ps_weight *const *ws, ps_err *err) {
    if (n < 1 || n > PS_LINEAR_N_MAX)
        return ps_errf(err, PS_EINVAL, "linear_n: %d weights (1..%d)", n, PS_LINEAR_N_MAX);
    for (int i = 0; i < n; i++) {
        TRY(check_linear(be, ys[i], x, ws[i], err));
        for (int j = 0; j < i; j++)
            if (ys[j]->data == ys[i]->data)
                return ps_errf(err, PS_EINVAL, "linear_n: outputs %d and %d are the same buffer", j, i);
    }
    if (be->linear_n) return be->linear_n(be, n, ys, x, ws, err);
    for (int i = 0; i < n; i++) TRY(be->linear(be, ys[i], x, ws[i], err));
    return PS_OK;
}

ps_status op_add_bias(ps_backend *be, ps_tensor *y, const ps_tensor *bias, ps_err *err) {
    NEED_OP(be, add_bias, "add_bias");
    TRY(check_dev(be, y, "add_bias", "y", err));
    TRY(check_dev(be, bias, "add_bias", "bias", err));
    TRY(check_dtype(y, PS_DT_F32, "add_bias", "y", err));
    if (!is_float(bias->dtype) || ps_tensor_numel(bias) != last_dim(y))
        return ps_errf(err, PS_EINVAL, "add_bias: bias of %lld elements for width %lld",
                       (long long)ps_tensor_numel(bias), (long long)last_dim(y));
    return be->add_bias(be, y, bias, err);
}

/* The checks rmsnorm and add_rmsnorm share (out, x and the weight), named by op. */
static ps_status check_rmsnorm(ps_backend *be, const ps_tensor *out, const ps_tensor *x, const ps_tensor *w,
                               const char *op, ps_err *err) {
    TRY(check_dev(be, out, op, "out", err));
    TRY(check_dev(be, x, op, "x", err));
    TRY(check_dev(be, w, op, "weight", err));
    TRY(check_dtype(out, PS_DT_F32, op, "out", err));
    TRY(check_dtype(x, PS_DT_F32, op, "x", err));
    TRY(check_same(out, x, op, err));
    if (!is_float(w->dtype) || ps_tensor_numel(w) != last_dim(x))
        return ps_errf(err, PS_EINVAL, "%s: weight of %lld elements for width %lld", op,
                       (long long)ps_tensor_numel(w), (long long)last_dim(x));
    return PS_OK;
}

ps_status op_rmsnorm(ps_backend *be, ps_tensor *out, const ps_tensor *x, const ps_tensor *w,
                     float eps, ps_err *err) {
    NEED_OP(be, rmsnorm, "rmsnorm");
    TRY(check_rmsnorm(be, out, x, w, "rmsnorm", err));
    return be->rmsnorm(be, out, x, w, eps, err);
}

ps_status op_add_rmsnorm(ps_backend *be, ps_tensor *out, ps_tensor *x, const ps_tensor *y,
                         const ps_tensor *w, float eps, ps_err *err) {
    if (!be->add_rmsnorm) {
        ps_status st = op_add(be, x, y, err);
        return st ? st : op_rmsnorm(be, out, x, w, eps, err);
    }
    TRY(check_dev(be, y, "add_rmsnorm", "y", err));
    TRY(check_dtype(y, PS_DT_F32, "add_rmsnorm", "y", err));
    TRY(check_same(x, y, "add_rmsnorm", err));
    TRY(check_rmsnorm(be, out, x, w, "add_rmsnorm", err));
    if (out->data == y->data)
        return ps_errf(err, PS_EINVAL, "add_rmsnorm: out must not be y (y is read while out is written)");
    return be->add_rmsnorm(be, out, x, x, y, w, eps, err);
}

/* The arguments of op_add_rmsnorm_linear_n (also those of _swiglu's gate/up). */
static ps_status check_norm_linear_n(ps_backend *be, ps_tensor *h, ps_tensor *x_out, const ps_tensor *x,
                                     const ps_tensor *y, const ps_tensor *w, int n, ps_tensor *const *ys,
                                     const ps_weight *const *ws, const char *op, ps_err *err) {
    NEED_OP(be, add_rmsnorm, op);
    if (n < 1 || n > PS_LINEAR_N_MAX)
        return ps_errf(err, PS_EINVAL, "%s: %d weights (1..%d)", op, n, PS_LINEAR_N_MAX);
    TRY(check_dev(be, x_out, op, "x_out", err));
    TRY(check_dtype(x_out, PS_DT_F32, op, "x_out", err));
    TRY(check_dev(be, y, op, "y", err));
    TRY(check_dtype(y, PS_DT_F32, op, "y", err));
    TRY(check_same(x, y, op, err));
    TRY(check_same(x, x_out, op, err));
    TRY(check_rmsnorm(be, h, x, w, op, err));
    const void *bufs[4] = {x->data, y->data, x_out->data, h->data};
    static const char *const names[4] = {"x", "y", "x_out", "h"};
    for (int i = 2; i < 4; i++)
        for (int j = 0; j < i; j++)
            if (bufs[i] == bufs[j])
                return ps_errf(err, PS_EINVAL, "%s: %s and %s are the same buffer", op, names[j], names[i]);
    for (int i = 0; i < n; i++) {
        TRY(check_linear(be, ys[i], h, ws[i], err));
        for (int j = 0; j < 4; j++)
            if (ys[i]->data == bufs[j])
                return ps_errf(err, PS_EINVAL, "%s: output %d is %s", op, i, names[j]);
        for (int j = 0; j < i; j++)
            if (ys[j]->data == ys[i]->data)
                return ps_errf(err, PS_EINVAL, "%s: outputs %d and %d are the same buffer", op, j, i);
    }
    return PS_OK;
}

ps_status op_add_rmsnorm_linear_n(ps_backend *be, ps_tensor *h, ps_tensor *x_out, const ps_tensor *x,
                                  const ps_tensor *y, const ps_tensor *w, float eps, int n,
                                  ps_tensor *const *ys, const ps_weight *const *ws, ps_err *err) {
    TRY(check_norm_linear_n(be, h, x_out, x, y, w, n, ys, ws, "add_rmsnorm_linear_n", err));
    if (be->add_rmsnorm_linear_n) return be->add_rmsnorm_linear_n(be, h, x_out, x, y, w, eps, n, ys, ws, err);
    TRY(be->add_rmsnorm(be, h, x_out, x, y, w, eps, err));
    return op_linear_n(be, n, ys, h, ws, err);
}

ps_status op_add_rmsnorm_swiglu(ps_backend *be, ps_tensor *h, ps_tensor *x_out, const ps_tensor *x,
                                const ps_tensor *y, const ps_tensor *w, float eps, const ps_weight *wg,
                                const ps_weight *wu, ps_tensor *g, ps_tensor *u, ps_tensor *a, ps_err *err) {
    const char *op = "add_rmsnorm_swiglu";
    ps_tensor *gu[2] = {g, u};
    const ps_weight *ws[2] = {wg, wu};
    if (ps_weight_out(wg) != ps_weight_out(wu))
        return ps_errf(err, PS_EINVAL, "%s: gate has %lld outputs, up %lld", op, (long long)ps_weight_out(wg),
                       (long long)ps_weight_out(wu));
    TRY(check_norm_linear_n(be, h, x_out, x, y, w, 2, gu, ws, op, err));
    TRY(check_dev(be, a, op, "a", err));
    TRY(check_dtype(a, PS_DT_F32, op, "a", err));
    TRY(check_same(a, g, op, err));
    const void *others[6] = {x->data, y->data, x_out->data, h->data, g->data, u->data};
    for (int i = 0; i < 6; i++)
        if (a->data == others[i]) return ps_errf(err, PS_EINVAL, "%s: a shares a buffer with another argument", op);
    if (be->add_rmsnorm_swiglu) return be->add_rmsnorm_swiglu(be, h, x_out, x, y, w, eps, wg, wu, g, u, a, err);
    TRY(op_add_rmsnorm_linear_n(be, h, x_out, x, y, w, eps, 2, gu, ws, err));
    return op_silu_mul(be, a, g, u, err);
}

ps_status op_layernorm(ps_backend *be, ps_tensor *out, const ps_tensor *x, const ps_tensor *w,
                       const ps_tensor *b, float eps, ps_err *err) {
    NEED_OP(be, layernorm, "layernorm");
    TRY(check_dev(be, out, "layernorm", "out", err));
    TRY(check_dev(be, x, "layernorm", "x", err));
    TRY(check_dev(be, w, "layernorm", "weight", err));
    TRY(check_dev(be, b, "layernorm", "bias", err));
    TRY(check_dtype(out, PS_DT_F32, "layernorm", "out", err));
    TRY(check_dtype(x, PS_DT_F32, "layernorm", "x", err));
    TRY(check_same(out, x, "layernorm", err));
    if (!is_float(w->dtype) || !is_float(b->dtype) || ps_tensor_numel(w) != last_dim(x) ||
        ps_tensor_numel(b) != last_dim(x))
        return ps_errf(err, PS_EINVAL, "layernorm: weight/bias must have %lld float elements",
                       (long long)last_dim(x));
    return be->layernorm(be, out, x, w, b, eps, err);
}

static ps_status check_rope(ps_backend *be, const ps_tensor *x, const ps_tensor *pos, ps_err *err) {
    TRY(check_dev(be, x, "rope", "x", err));
    TRY(check_dev(be, pos, "rope", "pos", err));
    TRY(check_dtype(x, PS_DT_F32, "rope", "x", err));
    TRY(check_dtype(pos, PS_DT_I32, "rope", "pos", err));
    if (x->ndim != 3 || x->shape[0] != ps_tensor_numel(pos) || x->shape[2] % 2)
        return ps_errf(err, PS_EINVAL, "rope: x must be (T, H, D) with even D and T = %lld",
                       (long long)ps_tensor_numel(pos));
    return PS_OK;
}

ps_status op_rope(ps_backend *be, ps_tensor *x, const ps_tensor *pos, float theta, ps_err *err) {
    NEED_OP(be, rope, "rope");
    TRY(check_rope(be, x, pos, err));
    return be->rope(be, x, pos, theta, err);
}

static ps_status check_kv(ps_backend *be, const ps_kv_layer *kv, const char *op, ps_err *err) {
    TRY(check_dev(be, &kv->k, op, "k_cache", err));
    TRY(check_dev(be, &kv->v, op, "v_cache", err));
    if (kv->k.ndim != 4 || kv->v.ndim != 4 || kv->k.shape[1] != kv->page_size ||
        kv->k.dtype != kv->v.dtype || check_same(&kv->k, &kv->v, op, err))
        return ps_errf(err, PS_EINVAL, "%s: kv cache must be two equal (pages, %d, n_kv, D) tensors",
                       op, kv->page_size);
    if (kv->k.dtype != PS_DT_F32 && kv->k.dtype != PS_DT_F16 && kv->k.dtype != PS_DT_BF16)
        return ps_errf(err, PS_EINVAL, "%s: kv cache dtype %s (F32, F16 or BF16)", op, ps_dtype_name(kv->k.dtype));
    return PS_OK;
}

static ps_status check_kv_store(ps_backend *be, const ps_kv_layer *kv, const ps_tensor *k,
                                const ps_tensor *v, const ps_tensor *slots, ps_err *err) {
    TRY(check_kv(be, kv, "kv_store", err));
    TRY(check_dev(be, k, "kv_store", "k", err));
    TRY(check_dev(be, v, "kv_store", "v", err));
    TRY(check_dev(be, slots, "kv_store", "slots", err));
    TRY(check_dtype(k, PS_DT_F32, "kv_store", "k", err));
    TRY(check_dtype(v, PS_DT_F32, "kv_store", "v", err));
    TRY(check_dtype(slots, PS_DT_I32, "kv_store", "slots", err));
    int64_t row = kv->k.shape[2] * kv->k.shape[3];
    if (ps_tensor_numel(k) != ps_tensor_numel(slots) * row || check_same(k, v, "kv_store", err))
        return ps_errf(err, PS_EINVAL, "kv_store: k/v must be (T, n_kv, D) with T = %lld slots",
                       (long long)ps_tensor_numel(slots));
    return PS_OK;
}

ps_status op_kv_store(ps_backend *be, ps_kv_layer *kv, const ps_tensor *k, const ps_tensor *v,
                      const ps_tensor *slots, ps_err *err) {
    NEED_OP(be, kv_store, "kv_store");
    TRY(check_kv_store(be, kv, k, v, slots, err));
    return be->kv_store(be, kv, k, v, slots, err);
}

ps_status op_rope_store(ps_backend *be, ps_tensor *q, ps_tensor *k, const ps_tensor *v,
                        const ps_tensor *pos, float theta, ps_kv_layer *kv, const ps_tensor *slots,
                        ps_err *err) {
    if (!be->rope_store) {
        ps_status st;
        if ((st = op_rope(be, q, pos, theta, err)) || (st = op_rope(be, k, pos, theta, err)))
            return st;
        return op_kv_store(be, kv, k, v, slots, err);
    }
    TRY(check_rope(be, q, pos, err));
    TRY(check_rope(be, k, pos, err));
    TRY(check_kv_store(be, kv, k, v, slots, err));
    if (q->shape[2] != k->shape[2])
        return ps_errf(err, PS_EINVAL, "rope_store: q head dim %lld, k head dim %lld", (long long)q->shape[2],
                       (long long)k->shape[2]);
    return be->rope_store(be, q, k, v, pos, theta, kv, slots, err);
}

ps_status op_attention(ps_backend *be, ps_tensor *out, const ps_tensor *q, const ps_kv_layer *kv,
                       const ps_attn_meta *meta, float scale, ps_err *err) {
    NEED_OP(be, attention, "attention");
    TRY(check_kv(be, kv, "attention", err));
    TRY(check_dev(be, out, "attention", "out", err));
    TRY(check_dev(be, q, "attention", "q", err));
    TRY(check_dev(be, &meta->tok_seq, "attention", "tok_seq", err));
    TRY(check_dev(be, &meta->tok_kv_pos, "attention", "tok_kv_pos", err));
    TRY(check_dev(be, &meta->block_tables, "attention", "block_tables", err));
    TRY(check_dtype(q, PS_DT_F32, "attention", "q", err));
    TRY(check_dtype(out, PS_DT_F32, "attention", "out", err));
    TRY(check_same(out, q, "attention", err));
    int64_t n_kv = kv->k.shape[2], D = kv->k.shape[3];
    if (q->ndim != 3 || q->shape[0] != meta->n_tokens || q->shape[2] != D ||
        q->shape[1] % n_kv != 0)
        return ps_errf(err, PS_EINVAL,
                       "attention: q must be (T=%d, H, D=%lld) with H a multiple of n_kv=%lld",
                       meta->n_tokens, (long long)D, (long long)n_kv);
    if (ps_tensor_numel(&meta->block_tables) != (int64_t)meta->n_seqs * meta->max_pages)
        return ps_errf(err, PS_EINVAL, "attention: block_tables must be (%d, %d)", meta->n_seqs,
                       meta->max_pages);
    return be->attention(be, out, q, kv, meta, scale, err);
}

ps_status op_attention_dense(ps_backend *be, ps_tensor *out, const ps_tensor *q,
                             const ps_tensor *k, const ps_tensor *v, bool causal, float scale,
                             ps_err *err) {
    NEED_OP(be, attention_dense, "attention_dense");
    TRY(check_dev(be, out, "attention_dense", "out", err));
    TRY(check_dev(be, q, "attention_dense", "q", err));
    TRY(check_dev(be, k, "attention_dense", "k", err));
    TRY(check_dev(be, v, "attention_dense", "v", err));
    const ps_tensor *all[4] = {out, q, k, v};
    for (int i = 0; i < 4; i++) {
        TRY(check_dtype(all[i], PS_DT_F32, "attention_dense", "q/k/v/out", err));
        if (all[i]->ndim != 4 || check_same(all[i], q, "attention_dense", err))
            return ps_errf(err, PS_EINVAL, "attention_dense: q, k, v, out must all be (B, T, H, D)");
    }
    return be->attention_dense(be, out, q, k, v, causal, scale, err);
}

ps_status op_silu_mul(ps_backend *be, ps_tensor *out, const ps_tensor *gate, const ps_tensor *up,
                      ps_err *err) {
    NEED_OP(be, silu_mul, "silu_mul");
    TRY(check_dev(be, out, "silu_mul", "out", err));
    TRY(check_dev(be, gate, "silu_mul", "gate", err));
    TRY(check_dev(be, up, "silu_mul", "up", err));
    TRY(check_dtype(out, PS_DT_F32, "silu_mul", "out", err));
    TRY(check_dtype(gate, PS_DT_F32, "silu_mul", "gate", err));
    TRY(check_dtype(up, PS_DT_F32, "silu_mul", "up", err));
    TRY(check_same(out, gate, "silu_mul", err));
    TRY(check_same(out, up, "silu_mul", err));
    return be->silu_mul(be, out, gate, up, err);
}

ps_status op_activate(ps_backend *be, ps_tensor *x, int act, ps_err *err) {
    NEED_OP(be, activate, "activate");
    TRY(check_dev(be, x, "activate", "x", err));
    TRY(check_dtype(x, PS_DT_F32, "activate", "x", err));
    if (act < PS_ACT_SILU || act > PS_ACT_RELU)
        return ps_errf(err, PS_EINVAL, "activate: unknown activation %d", act);
    return be->activate(be, x, act, err);
}

ps_status op_add(ps_backend *be, ps_tensor *x, const ps_tensor *y, ps_err *err) {
    NEED_OP(be, add, "add");
    TRY(check_dev(be, x, "add", "x", err));
    TRY(check_dev(be, y, "add", "y", err));
    TRY(check_dtype(x, PS_DT_F32, "add", "x", err));
    TRY(check_dtype(y, PS_DT_F32, "add", "y", err));
    TRY(check_same(x, y, "add", err));
    return be->add(be, x, y, err);
}

ps_status op_gather_rows(ps_backend *be, ps_tensor *out, const ps_tensor *x,
                         const ps_tensor *rows, ps_err *err) {
    NEED_OP(be, gather_rows, "gather_rows");
    TRY(check_dev(be, out, "gather_rows", "out", err));
    TRY(check_dev(be, x, "gather_rows", "x", err));
    TRY(check_dev(be, rows, "gather_rows", "rows", err));
    TRY(check_dtype(out, PS_DT_F32, "gather_rows", "out", err));
    TRY(check_dtype(x, PS_DT_F32, "gather_rows", "x", err));
    TRY(check_dtype(rows, PS_DT_I32, "gather_rows", "rows", err));
    if (last_dim(out) != last_dim(x) || rows_of(out) != ps_tensor_numel(rows))
        return ps_errf(err, PS_EINVAL, "gather_rows: out (%lld, %lld) for %lld rows of width %lld",
                       (long long)rows_of(out), (long long)last_dim(out),
                       (long long)ps_tensor_numel(rows), (long long)last_dim(x));
    return be->gather_rows(be, out, x, rows, err);
}
