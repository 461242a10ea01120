/* The naive linear layer, the oracle the fast CPU path (linear.c) and the
 * CUDA kernels are tested against: y[t, n] = sum_k x[t, k] * W[n, k], one
 * output at a time, every weight element decoded on its own (dense through
 * cpu_load_f, NF4 through the shared formulas in kernels/math/nf4.h).
 *
 * Accumulates in double so that its own rounding error is far below the fast
 * path's: a parity test then measures the fast path alone. Slow on purpose;
 * never used by default. */
#include "cpu_backend.h"
#include "math/nf4.h"
#include "nf4_quant.h"

static float linear_ref_weight(const ps_weight *w, int64_t i) {
    if (w->kind == PS_WEIGHT_DENSE) return cpu_load_f(&w->dense, i);
    float scale = nf4_block_scale(&w->nf4, i / PS_NF4_BLOCK);
    return ps_nf4_value(ps_nf4_code[ps_nf4_code_at(w->nf4.packed, i)], scale);
}

ps_status cpu_linear_ref(ps_backend *be, ps_tensor *y, const ps_tensor *x, const ps_weight *w,
                         ps_err *err) {
    int64_t N = ps_weight_out(w), K = ps_weight_in(w);
    int64_t T = N ? ps_tensor_numel(y) / N : 0; /* x has no rows to count when K == 0 */
    const float *xd = x->data;
    float *yd = y->data;
    for (int64_t t = 0; t < T; t++)
        for (int64_t n = 0; n < N; n++) {
            double s = 0.0;
            for (int64_t k = 0; k < K; k++)
                s += (double)xd[t * K + k] * (double)linear_ref_weight(w, n * K + k);
            yd[t * N + n] = (float)s;
        }
    return PS_OK;
}
