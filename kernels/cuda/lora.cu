/* Multi-adapter LoRA on the GPU (op lora_bgmv, see ps_lora_batch in ops.h):
 * the BGMV idea of Punica / S-LoRA. Every token gathers its own adapter's
 * A and B through its slot index, so one launch serves a batch that mixes
 * many adapters (and tokens with none) without merging into the base and
 * without splitting the batch. Long runs of one adapter (prefill chunks) go
 * to the SGMV tiles of lora_sgmv.cu instead (lora_use_sgmv), which give the
 * same bits.
 *
 * Two kernels per launch window of up to LORA_WINDOW slots (passed by value
 * as kernel parameters: no host-to-device copy per call):
 *   shrink: v[t, j] = A_s[j, :] . x[t, :]        one block per (token, j), its
 *           warps on consecutive K ranges, partials added in warp order (one
 *           warp per (token, j), the first version, made a decode batch of 16
 *           at r = 16 a grid of 32 blocks, each warp walking a whole row of
 *           A alone: latency-bound; one LoRA on all projections took a
 *           TinyLlama batch-16 decode step from 7 to 9 ms on the H100);
 *   expand: y[t, o] += scale_s * sum_j v[t, j] B_s[j, o]   one thread per (token, o);
 *           B is stored (r, out), so neighbouring threads read neighbouring bytes.
 * Each token's sums run in an order fixed by its shapes alone, so results are
 * batch invariant, as the op requires. Math in f32; 16-bit A/B widened with
 * the shared kernels/math/half.h conversions. Mirrors kernels/cpu/lora.c. */
#include "lora.cuh"

/* v[t, j] of block (t, j) (the shrink above) */
__device__ static void lora_shrink_block(const lora_window &w, const int32_t *tok_slot, const float *x, float *v,
                                         int64_t in) {
    __shared__ float part[LORA_SHRINK_WARPS];
    int64_t t = blockIdx.x;
    int s = lora_local_slot(w, tok_slot, t), j = blockIdx.y;
    if (s < 0 || j >= w.r[s]) return; /* the whole block */
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int64_t k0, k1;
    lora_warp_range(warp, in, &k0, &k1);
    const float *xt = x + t * in;
    float acc = 0.0f;
    for (int64_t k = k0 + lane; k < k1; k += 32) acc += lora_ld(w.A[s], (int64_t)j * in + k, w.dtype[s]) * xt[k];
    acc = lora_warp_sum(acc);
    if (lane == 0) part[warp] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        float sum = 0.0f;
        for (int i = 0; i < LORA_SHRINK_WARPS; i++) sum += part[i];
        v[t * PS_LORA_MAX_RANK + j] = sum;
    }
}

/* y[t, o] of block (t, o / LORA_EXPAND_THREADS) (the expand above) */
__device__ static void lora_expand_block(const lora_window &w, const int32_t *tok_slot, const float *v, float *y,
                                         int64_t out) {
    int64_t t = blockIdx.x;
    int s = lora_local_slot(w, tok_slot, t);
    if (s < 0) return;
    int64_t o = blockIdx.y * (int64_t)LORA_EXPAND_THREADS + threadIdx.x;
    if (o >= out) return;
    const float *vt = v + t * PS_LORA_MAX_RANK;
    float acc = 0.0f;
    for (int j = 0; j < w.r[s]; j++) acc += vt[j] * lora_ld(w.B[s], (int64_t)j * out + o, w.dtype[s]);
    y[t * out + o] += w.scale[s] * acc;
}

/* Projection i of ws is grid layer blockIdx.z (lora.cuh): the same blocks
 * for one projection or for the q/k/v of one x (op_lora_bgmv_n), so the same
 * bits, in 2 launches instead of 2 n. */
__global__ void __launch_bounds__(32 * LORA_SHRINK_WARPS)
lora_shrink_kernel(lora_windows ws, const int32_t *tok_slot, const float *x, float *v, int64_t in, int64_t T) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    lora_shrink_block(ws.w[blockIdx.z], tok_slot, x, v + blockIdx.z * T * PS_LORA_MAX_RANK, in);
}

__global__ void lora_expand_kernel(lora_windows ws, const int32_t *tok_slot, const float *v, int64_t T) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    const int i = (int)blockIdx.z;
    if ((int64_t)blockIdx.y * LORA_EXPAND_THREADS >= ws.out[i]) return; /* the grid fits the widest */
    lora_expand_block(ws.w[i], tok_slot, v + i * T * PS_LORA_MAX_RANK, ws.y[i], ws.out[i]);
}

void cuda_lora_bgmv_launch(cuda_impl *p, const lora_windows &ws, int n, const int32_t *tok_slot, const float *x,
                           float *v, int64_t in, int64_t T, int rmax, int64_t omax) {
    dim3 gs((unsigned)T, (unsigned)rmax, (unsigned)n);
    cuda_launch(p, lora_shrink_kernel, gs, 32 * LORA_SHRINK_WARPS, 0, ws, tok_slot, x, v, in, T);
    dim3 ge((unsigned)T, (unsigned)((omax + LORA_EXPAND_THREADS - 1) / LORA_EXPAND_THREADS), (unsigned)n);
    cuda_launch(p, lora_expand_kernel, ge, LORA_EXPAND_THREADS, 0, ws, tok_slot, (const float *)v, T);
}

/* Window [first, first + count) of a batch's slots; its largest rank. */
static int lora_window_of(const ps_lora_batch *lb, int first, lora_window *w) {
    memset(w, 0, sizeof *w);
    w->first = first;
    w->count = lb->n_slots - first < LORA_WINDOW ? lb->n_slots - first : LORA_WINDOW;
    int rmax = 0;
    for (int i = 0; i < w->count; i++) {
        const ps_lora_slot *sl = &lb->slots[first + i];
        w->A[i] = sl->A;
        w->B[i] = sl->B;
        w->r[i] = sl->A ? sl->r : 0;
        w->dtype[i] = (int)sl->dtype;
        w->scale[i] = sl->scale;
        if (w->r[i] > rmax) rmax = w->r[i];
    }
    return rmax;
}

/* The device copy of the tokens' slots, or an error naming the op. */
static ps_status lora_tok_dev(const ps_lora_batch *lb, int64_t T, const int32_t **tok, ps_err *err) {
    if (!lb->tok_slot_dev.data || ps_tensor_numel(&lb->tok_slot_dev) != T || lb->tok_slot_dev.dev != PS_DEV_CUDA)
        return ps_errf(err, PS_EINVAL, "lora_bgmv: the cuda backend needs tok_slot_dev (%lld tokens) "
                                       "on the device", (long long)T);
    *tok = (const int32_t *)lb->tok_slot_dev.data;
    return PS_OK;
}

/* Whether this step's LoRA runs as SGMV tiles (lora_sgmv.cu) rather than
 * per-token BGMV: forced by the tuning, else from LORA_SGMV_MIN_T
 * tokens (prefill chunks; decode steps have one token per sequence) when at
 * least half the tiles that hold adapted tokens are of one adapter. Both give
 * the same bits, so the choice is one of speed only (and a step graph keeps
 * the one of its recording). */
static bool lora_use_sgmv(const cuda_impl *p, const int32_t *tok_slot, int64_t T) {
    if (p->tune.lora_path != PS_CUDA_LORA_AUTO) return p->tune.lora_path == PS_CUDA_LORA_SGMV;
    if (T < LORA_SGMV_MIN_T) return false;
    int64_t tiles = 0, uniform = 0;
    for (int64_t t0 = 0; t0 < T; t0 += LORA_SGMV_TOKENS) {
        int32_t slot = -1;
        bool adapted = false, one = true;
        for (int64_t t = t0; t < T && t < t0 + LORA_SGMV_TOKENS; t++) {
            if (tok_slot[t] < 0) continue;
            one = one && (!adapted || tok_slot[t] == slot);
            adapted = true, slot = tok_slot[t];
        }
        tiles += adapted, uniform += adapted && one;
    }
    return 2 * uniform >= tiles;
}

/* Shrink and expand of ws.w[0..n) with the family chosen for the step. */
static ps_status lora_run(cuda_impl *p, const lora_windows &ws, int n, const ps_lora_batch *lb, const float *x,
                          int64_t in, int64_t T, int rmax, int64_t omax, ps_err *err) {
    const int32_t *tok_slot = NULL;
    PS_TRY(lora_tok_dev(lb, T, &tok_slot, err));
    PS_TRY(cuda_scratch(p, &p->scratch_lora, &p->scratch_lora_bytes,
                        sizeof(float) * (size_t)(n * T) * PS_LORA_MAX_RANK, err));
    float *v = (float *)p->scratch_lora;
    if (lora_use_sgmv(p, lb->tok_slot, T)) cuda_lora_sgmv_launch(p, ws, n, tok_slot, x, v, in, T, rmax, omax);
    else cuda_lora_bgmv_launch(p, ws, n, tok_slot, x, v, in, T, rmax, omax);
    CU_LAUNCH_CHECK(p);
    return PS_OK;
}

ps_status cuda_lora_bgmv(ps_backend *be, ps_tensor *y, const ps_tensor *x,
                         const ps_lora_batch *lb, ps_err *err) {
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    int64_t in = cuda_last_dim(x), out = cuda_last_dim(y), T = cuda_rows(x);
    if (T == 0 || lb->n_slots == 0) return PS_OK;
    for (int first = 0; first < lb->n_slots; first += LORA_WINDOW) {
        lora_windows ws;
        memset(&ws, 0, sizeof ws);
        int rmax = lora_window_of(lb, first, &ws.w[0]);
        if (rmax == 0) continue;
        ws.y[0] = (float *)y->data, ws.out[0] = out;
        PS_TRY(lora_run(p, ws, 1, lb, (const float *)x->data, in, T, rmax, out, err));
    }
    return cuda_op_done(p, "lora_bgmv", err);
}

/* op_lora_bgmv_n: one shrink and one expand launch for all projections when
 * each has at most one window of slots (LORA_WINDOW adapters in the step);
 * otherwise one cuda_lora_bgmv each. */
ps_status cuda_lora_bgmv_n(ps_backend *be, int n, ps_tensor *const *ys, const ps_tensor *x,
                           const ps_lora_batch *const *lbs, ps_err *err) {
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    int64_t in = cuda_last_dim(x), T = cuda_rows(x);
    bool one = n <= LORA_N_MAX;
    for (int i = 0; one && i < n; i++) /* one window each, the same tokens' slots */
        one = lbs[i]->n_slots <= LORA_WINDOW && lbs[i]->tok_slot_dev.data == lbs[0]->tok_slot_dev.data;
    if (!one) {
        for (int i = 0; i < n; i++) PS_TRY(cuda_lora_bgmv(be, ys[i], x, lbs[i], err));
        return PS_OK;
    }
    if (T == 0) return PS_OK;
    lora_windows ws;
    memset(&ws, 0, sizeof ws);
    int rmax = 0;
    int64_t omax = 0;
    for (int i = 0; i < n; i++) {
        int r = lbs[i]->n_slots > 0 ? lora_window_of(lbs[i], 0, &ws.w[i]) : 0;
        ws.y[i] = (float *)ys[i]->data;
        ws.out[i] = r > 0 ? cuda_last_dim(ys[i]) : 0; /* no adapter here: no expand blocks */
        rmax = r > rmax ? r : rmax;
        omax = ws.out[i] > omax ? ws.out[i] : omax;
    }
    if (rmax == 0) return PS_OK;
    PS_TRY(lora_run(p, ws, n, lbs[0], (const float *)x->data, in, T, rmax, omax, err));
    return cuda_op_done(p, "lora_bgmv_n", err);
}
