/* op_lora_bgmv: checks once, then dispatches (kept apart from ops.c so the
 * multi-adapter op can grow without touching the core table code). */
#include "ops.h"

/* The arguments of one lora_bgmv (op_lora_bgmv, each projection of op_lora_bgmv_n). */
static ps_status check_lora(ps_backend *be, ps_tensor *y, const ps_tensor *x, const ps_lora_batch *lb,
                            ps_err *err) {
    if (!be->lora_bgmv)
        return ps_errf(err, PS_ENOTSUP, "op lora_bgmv is not supported by the %s backend", be->name);
    if (x->dtype != PS_DT_F32 || y->dtype != PS_DT_F32 || x->ndim != 2 || y->ndim != 2)
        return ps_errf(err, PS_EINVAL, "lora_bgmv: x and y must be 2-d F32 (%s %dd, %s %dd)",
                       ps_dtype_name(x->dtype), x->ndim, ps_dtype_name(y->dtype), y->ndim);
    if (x->dev != be->dev || y->dev != be->dev)
        return ps_errf(err, PS_EINVAL, "lora_bgmv: x/y not on the %s backend", be->name);
    int64_t T = x->shape[0];
    if (y->shape[0] != T)
        return ps_errf(err, PS_EINVAL, "lora_bgmv: x has %lld rows, y %lld", (long long)T,
                       (long long)y->shape[0]);
    if (T > 0 && (!x->data || !y->data || !lb->tok_slot))
        return ps_errf(err, PS_EINVAL, "lora_bgmv: missing x, y or tok_slot data");
    if (be->dev != PS_DEV_CPU &&
        (lb->tok_slot_dev.dtype != PS_DT_I32 || lb->tok_slot_dev.dev != be->dev ||
         ps_tensor_numel(&lb->tok_slot_dev) != T || (T > 0 && !lb->tok_slot_dev.data)))
        return ps_errf(err, PS_EINVAL, "lora_bgmv: tok_slot_dev must be (%lld) I32 on the %s backend",
                       (long long)T, be->name);
    if (lb->n_slots < 0 || (lb->n_slots > 0 && !lb->slots))
        return ps_errf(err, PS_EINVAL, "lora_bgmv: %d slots without a table", lb->n_slots);
    for (int s = 0; s < lb->n_slots; s++) {
        const ps_lora_slot *sl = &lb->slots[s];
        if (sl->A && (sl->r < 1 || sl->r > PS_LORA_MAX_RANK || !sl->B))
            return ps_errf(err, PS_EINVAL, "lora_bgmv: slot %d has rank %d (allowed 1..%d) or no B", s,
                           sl->r, PS_LORA_MAX_RANK);
        if (sl->A && sl->dtype != PS_DT_F32 && sl->dtype != PS_DT_F16 && sl->dtype != PS_DT_BF16)
            return ps_errf(err, PS_EINVAL, "lora_bgmv: slot %d has dtype %s, expected F32, F16 or BF16", s,
                           ps_dtype_name(sl->dtype));
    }
    for (int64_t t = 0; t < T; t++)
        if (lb->tok_slot[t] < -1 || lb->tok_slot[t] >= lb->n_slots)
            return ps_errf(err, PS_EINVAL, "lora_bgmv: token %lld has slot %d, allowed -1..%d", (long long)t,
                           lb->tok_slot[t], lb->n_slots - 1);
    return PS_OK;
}

ps_status op_lora_bgmv(ps_backend *be, ps_tensor *y, const ps_tensor *x, const ps_lora_batch *lb,
                       ps_err *err) {
    ps_status st = check_lora(be, y, x, lb, err);
    if (st || x->shape[0] == 0) return st;
    return be->lora_bgmv(be, y, x, lb, err);
}

ps_status op_lora_bgmv_n(ps_backend *be, int n, ps_tensor *const *ys, const ps_tensor *x,
                         const ps_lora_batch *const *lbs, ps_err *err) {
    if (n < 1 || n > PS_LINEAR_N_MAX)
        return ps_errf(err, PS_EINVAL, "lora_bgmv_n: %d projections (1..%d)", n, PS_LINEAR_N_MAX);
    for (int i = 0; i < n; i++) {
        ps_status st = check_lora(be, ys[i], x, lbs[i], err);
        if (st) return st;
        for (int j = 0; j < i; j++)
            if (ys[j]->data == ys[i]->data)
                return ps_errf(err, PS_EINVAL, "lora_bgmv_n: projections %d and %d add into one buffer", j, i);
    }
    if (x->shape[0] == 0) return PS_OK;
    if (be->lora_bgmv_n) return be->lora_bgmv_n(be, n, ys, x, lbs, err);
    for (int i = 0; i < n; i++) {
        ps_status st = be->lora_bgmv(be, ys[i], x, lbs[i], err);
        if (st) return st;
    }
    return PS_OK;
}
