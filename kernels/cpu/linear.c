/* The fast CPU linear layer y (T, N) = x (T, K) W^T, used by default: picks a
 * kernel for the weight and batch, and splits the output columns (weight rows)
 * over the backend's threads with cpu_parallel_for.
 *
 *  - T == 1 (decode) on AVX-512 or AVX2: a GEMV that decodes each weight row in
 *    registers and reads it exactly once (linear_nf4_gemv.c, linear_dense.c;
 *    linear_avx2.c for AVX2 builds).
 *  - otherwise (prefill, batched decode, other builds): each thread decodes
 *    one CPU_LIN_NB x CPU_LIN_KC tile of its rows into an f32 buffer on its
 *    stack and multiplies it with all T rows of x (linear_gemm.c) before
 *    decoding the next. NF4 never exists as a full f32 copy.
 * NF4 with K % 64 != 0 (blocks spanning rows) takes the element-wise decoder.
 * Both paths sum in one fixed order, so results do not depend on T or on the
 * thread count (linear_impl.h). The oracle is cpu_linear_ref (linear_ref.c).
 * Scratch lives on the stack of each thread that runs a part (at most
 * ~140 KiB: the tile plus 4 split x rows), so no call allocates. */
#include <string.h>

#include "cpu_backend.h"
#include "linear_impl.h"

#ifdef CPU_LIN_SIMD
#define LINEAR_SIMD true
#else
#define LINEAR_SIMD false
#endif

/* Below this many multiply-adds one thread finishes before others wake up. */
#define LINEAR_MIN_PARALLEL (1 << 16)

typedef struct {
    cpu_lin_call c;
    cpu_lin_decode_fn decode; /* NULL: F32 weight read in place */
    bool split;               /* decode writes the split order (linear_impl.h) */
} linear_job;

static void linear_gemv_range(void *ctx, int64_t n0, int64_t n1) {
#ifdef CPU_LIN_SIMD
    const linear_job *job = ctx;
    if (job->c.w->kind == PS_WEIGHT_NF4) cpu_lin_nf4_gemv(&job->c, n0, n1);
    else cpu_lin_dense_gemv(&job->c, n0, n1);
#else
    (void)ctx, (void)n0, (void)n1;
#endif
}

/* Tiles [tile0, tile1) of CPU_LIN_NB weight rows each. */
static void linear_tile_range(void *ctx, int64_t tile0, int64_t tile1) {
    const linear_job *job = ctx;
    const cpu_lin_call *c = &job->c;
    float buf[CPU_LIN_NB * CPU_LIN_KC] __attribute__((aligned(64)));
    for (int64_t tile = tile0; tile < tile1; tile++) {
        int64_t n0 = tile * CPU_LIN_NB;
        int64_t nb = c->N - n0 < CPU_LIN_NB ? c->N - n0 : CPU_LIN_NB;
        for (int64_t k0 = 0; k0 < c->K; k0 += CPU_LIN_KC) {
            int64_t kc = c->K - k0 < CPU_LIN_KC ? c->K - k0 : CPU_LIN_KC;
            const float *w = buf;
            int64_t ldw = CPU_LIN_KC;
            if (job->decode) {
                job->decode(c->w, n0, nb, k0, kc, buf, CPU_LIN_KC);
            } else {
                w = (const float *)c->w->dense.data + n0 * c->K + k0;
                ldw = c->K;
            }
            cpu_lin_gemm_tile(c->x + k0, c->K, c->T, w, ldw, nb, kc, c->y + n0, c->N, k0 > 0,
                              job->split);
        }
    }
}

/* NF4 whose rows are whole blocks: the vector decoders apply. */
static bool linear_nf4_blocks(const ps_weight *w) {
    return w->kind == PS_WEIGHT_NF4 && w->nf4.in % PS_NF4_BLOCK == 0;
}

static cpu_lin_decode_fn linear_decoder(const ps_weight *w) {
    if (w->kind == PS_WEIGHT_NF4)
        return linear_nf4_blocks(w) ? cpu_lin_nf4_decode_blocks : cpu_lin_nf4_decode_any;
    return w->dense.dtype == PS_DT_F32 ? NULL : cpu_lin_dense_decode;
}

ps_status cpu_linear(ps_backend *be, ps_tensor *y, const ps_tensor *x, const ps_weight *w,
                     ps_err *err) {
    int64_t N = ps_weight_out(w), K = ps_weight_in(w);
    if (K == 0) { /* empty sums */
        memset(y->data, 0, ps_tensor_nbytes(y));
        return PS_OK;
    }
    linear_job job = {.c = {.w = w, .x = x->data, .y = y->data, .T = ps_tensor_numel(x) / K,
                            .N = N, .K = K},
                      .decode = linear_decoder(w),
                      .split = LINEAR_SIMD && linear_nf4_blocks(w)};
    /* the NF4 GEMV needs whole blocks per row; other NF4 shapes take the tiles */
    bool gemv = LINEAR_SIMD && job.c.T == 1 && (w->kind == PS_WEIGHT_DENSE || job.split);
    cpu_range_fn fn = gemv ? linear_gemv_range : linear_tile_range;
    int64_t n = gemv ? N : (N + CPU_LIN_NB - 1) / CPU_LIN_NB;
    if (job.c.T * N * K < LINEAR_MIN_PARALLEL) fn(&job, 0, n);
    else cpu_parallel_for(be, n, fn, &job);
    return PS_OK;
}
