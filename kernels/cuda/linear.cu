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
