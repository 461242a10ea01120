/* op_linear on CUDA: picks the fused GEMV (few tokens: decode, bandwidth
 * bound) or the 16-bit cuBLAS path (many tokens: prefill, compute bound) for
 * NF4 and dense weights. The choice is speed only; tests run both paths on
 * the same inputs (ps_cuda_set_tuning). y and x are F32 (T, out) / (T, in). */
#include "cuda_common.cuh"

int cuda_linear_path(const cuda_impl *p, int64_t T) {
    int path = p->tune.linear_path;
    if (path == PS_CUDA_LINEAR_AUTO)
        path = T <= p->tune.gemv_max_t ? PS_CUDA_LINEAR_GEMV : PS_CUDA_LINEAR_GEMM;
    return path;
}

ps_status cuda_linear(ps_backend *be, ps_tensor *y, const ps_tensor *x, const ps_weight *w,
                      ps_err *err) {
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    int64_t out = ps_weight_out(w), in = ps_weight_in(w), T = cuda_rows(y);
    if (T * out == 0) return PS_OK;
    float *yd = (float *)y->data;
    const float *xd = (const float *)x->data;
    if (in == 0) { /* an empty sum */
        CU_TRY(p, cudaMemsetAsync(yd, 0, sizeof(float) * (size_t)(T * out), p->stream));
        return cuda_op_done(p, "linear", err);
    }
    int path = cuda_linear_path(p, T);
    ps_status s;
    if (w->kind == PS_WEIGHT_NF4)
        s = path == PS_CUDA_LINEAR_GEMV ? cuda_nf4_gemv(p, yd, xd, T, &w->nf4, err)
                                        : cuda_nf4_gemm(p, yd, xd, T, &w->nf4, err);
    else
        s = path == PS_CUDA_LINEAR_GEMV ? cuda_dense_gemv(p, yd, xd, T, &w->dense, err)
                                        : cuda_dense_gemm(p, yd, xd, T, &w->dense, err);
    if (s != PS_OK) return s;
    return cuda_op_done(p, "linear", err);
}

/* op_linear_n: NF4 weights on the GEMV path go to cuda_nf4_gemv_n (one launch
 * for all when the kernel allows); anything else is n cuda_linear calls. */
ps_status cuda_linear_n(ps_backend *be, int n, ps_tensor *const *ys, const ps_tensor *x,
                        const ps_weight *const *ws, ps_err *err) {
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    int64_t T = cuda_rows(x);
    bool fused = T > 0 && ps_weight_in(ws[0]) > 0 && cuda_linear_path(p, T) == PS_CUDA_LINEAR_GEMV;
    const ps_nf4 *nf[PS_LINEAR_N_MAX];
    float *yd[PS_LINEAR_N_MAX];
    for (int i = 0; fused && i < n; i++) {
        fused = ws[i]->kind == PS_WEIGHT_NF4 && ps_weight_out(ws[i]) > 0;
        nf[i] = &ws[i]->nf4;
        yd[i] = (float *)ys[i]->data;
    }
    if (!fused) {
        for (int i = 0; i < n; i++) PS_TRY(cuda_linear(be, ys[i], x, ws[i], err));
        return PS_OK;
    }
    PS_TRY(cuda_nf4_gemv_n(p, n, yd, (const float *)x->data, T, nf, err));
    return cuda_op_done(p, "linear", err);
}

/* NF4 weights on the GEMV path for T rows of their x: their views into nf, or false. */
static bool nf4_views(const cuda_impl *p, int64_t T, int n, const ps_weight *const *ws, const ps_nf4 **nf) {
    if (T <= 0 || ps_weight_in(ws[0]) <= 0 || cuda_linear_path(p, T) != PS_CUDA_LINEAR_GEMV) return false;
    for (int i = 0; i < n; i++) {
        if (ws[i]->kind != PS_WEIGHT_NF4 || ps_weight_out(ws[i]) <= 0) return false;
        nf[i] = &ws[i]->nf4;
    }
    return true;
}

static cuda_norm_args norm_args(ps_tensor *h, ps_tensor *x_out, const ps_tensor *x, const ps_tensor *y,
                                const ps_tensor *w, float eps) {
    cuda_norm_args a = {(const float *)x->data, (const float *)y->data, w->data, (int)w->dtype, eps,
                        (float *)x_out->data, (float *)h->data};
    return a;
}

/* op_add_rmsnorm_linear_n: one v6 launch with the norm as its x staging when
 * cuda_nf4_gemv_fused takes it; otherwise the norm kernel, then
 * cuda_linear_n. */
ps_status cuda_add_rmsnorm_linear_n(ps_backend *be, ps_tensor *h, ps_tensor *x_out, const ps_tensor *x,
                                    const ps_tensor *y, const ps_tensor *w, float eps, int n,
                                    ps_tensor *const *ys, const ps_weight *const *ws, ps_err *err) {
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    const ps_nf4 *nf[PS_LINEAR_N_MAX];
    float *yd[PS_LINEAR_N_MAX];
    bool done = false;
    if (nf4_views(p, cuda_rows(x), n, ws, nf)) {
        for (int i = 0; i < n; i++) yd[i] = (float *)ys[i]->data;
        cuda_norm_args nm = norm_args(h, x_out, x, y, w, eps);
        PS_TRY(cuda_nf4_gemv_fused(p, n, yd, cuda_rows(x), nf, NULL, &nm, false, &done, err));
    }
    if (done) return cuda_op_done(p, "add_rmsnorm_linear_n", err);
    PS_TRY(cuda_add_rmsnorm(be, h, x_out, x, y, w, eps, err));
    return cuda_linear_n(be, n, ys, h, ws, err);
}

/* op_add_rmsnorm_swiglu: the norm, gate, up and silu * up in one v6 launch;
 * or the norm kernel, then gate/up into silu * up in one; or the norm
 * kernel, cuda_linear_n and silu_mul (whichever the configuration and the
 * shapes allow, first one first). */
ps_status cuda_add_rmsnorm_swiglu(ps_backend *be, ps_tensor *h, ps_tensor *x_out, const ps_tensor *x,
                                  const ps_tensor *y, const ps_tensor *w, float eps, const ps_weight *wg,
                                  const ps_weight *wu, ps_tensor *g, ps_tensor *u, ps_tensor *a, ps_err *err) {
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    const ps_weight *ws[2] = {wg, wu};
    const ps_nf4 *nf[2];
    float *ya[2] = {(float *)a->data, NULL};
    bool nf4 = nf4_views(p, cuda_rows(x), 2, ws, nf), done = false;
    cuda_norm_args nm = norm_args(h, x_out, x, y, w, eps);
    if (nf4) PS_TRY(cuda_nf4_gemv_fused(p, 2, ya, cuda_rows(x), nf, NULL, &nm, true, &done, err));
    if (done) return cuda_op_done(p, "add_rmsnorm_swiglu", err);
    PS_TRY(cuda_add_rmsnorm(be, h, x_out, x, y, w, eps, err));
    if (nf4) PS_TRY(cuda_nf4_gemv_fused(p, 2, ya, cuda_rows(x), nf, (const float *)h->data, NULL, true, &done, err));
    if (done) return cuda_op_done(p, "add_rmsnorm_swiglu", err);
    ps_tensor *gu[2] = {g, u};
    PS_TRY(cuda_linear_n(be, 2, gu, h, ws, err));
    return cuda_silu_mul(be, a, g, u, err);
}
