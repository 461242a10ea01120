/* Placeholder linear until the NF4 work lands: the dense naive path only. */
#include "cpu_backend.h"

ps_status cpu_linear_ref(ps_backend *be, ps_tensor *y, const ps_tensor *x, const ps_weight *w,
                         ps_err *err) {
    if (w->kind != PS_WEIGHT_DENSE) return ps_errf(err, PS_ENOTSUP, "cpu linear: nf4 not yet implemented");
    int64_t T = ps_tensor_numel(x) / w->dense.shape[1], N = w->dense.shape[0], K = w->dense.shape[1];
    const float *xd = x->data;
    float *yd = y->data;
    for (int64_t t = 0; t < T; t++)
        for (int64_t n = 0; n < N; n++) {
            float s = 0.0f;
            for (int64_t k = 0; k < K; k++) s += xd[t * K + k] * cpu_load_f(&w->dense, n * K + k);
            yd[t * N + n] = s;
        }
    return PS_OK;
}

ps_status cpu_linear(ps_backend *be, ps_tensor *y, const ps_tensor *x, const ps_weight *w,
                     ps_err *err) {
    return cpu_linear_ref(be, y, x, w, err);
}
