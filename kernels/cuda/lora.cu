/* Multi-adapter LoRA on the GPU (op lora_bgmv, see ps_lora_batch in ops.h):
 * the BGMV idea of Punica / S-LoRA. Every token gathers its own adapter's
 * A and B through its slot index, so one launch serves a batch that mixes
 * many adapters (and tokens with none) without merging into the base and
 * without splitting the batch.
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
#include "cuda_common.cuh"

#define LORA_WINDOW 32       /* slots per launch (kernel parameter space) */
#define LORA_SHRINK_WARPS 8  /* warps per shrink block */
#define LORA_EXPAND_THREADS 256

typedef struct {
    const void *A[LORA_WINDOW];
    const void *B[LORA_WINDOW];
    int r[LORA_WINDOW];
    int dtype[LORA_WINDOW];
    float scale[LORA_WINDOW];
    int first, count; /* slots [first, first + count) of the batch */
} lora_window;

__device__ static inline float lora_ld(const void *p, int64_t i, int dt) {
    if (dt == PS_DT_F32) return ((const float *)p)[i];
    if (dt == PS_DT_F16) return cuda_f16_to_f32(((const uint16_t *)p)[i]);
    return ps_bf16_to_f32(((const uint16_t *)p)[i]);
}

/* slot of token t inside this window, or -1 */
__device__ static inline int lora_local_slot(const lora_window &w, const int32_t *tok_slot,
                                             int64_t t) {
    int s = tok_slot[t] - w.first;
    if (s < 0 || s >= w.count || w.A[s] == NULL) return -1;
    return s;
}

/* v[t, j] of block (t, j) (the shrink above) */
__device__ static void lora_shrink_block(const lora_window &w, const int32_t *tok_slot, const float *x, float *v,
                                         int64_t in) {
    __shared__ float part[LORA_SHRINK_WARPS];
    int64_t t = blockIdx.x;
    int s = lora_local_slot(w, tok_slot, t), j = blockIdx.y;
    if (s < 0 || j >= w.r[s]) return; /* the whole block */
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int64_t k0 = warp * in / LORA_SHRINK_WARPS, k1 = (warp + 1) * in / LORA_SHRINK_WARPS;
    const float *xt = x + t * in;
    float acc = 0.0f;
    for (int64_t k = k0 + lane; k < k1; k += 32) acc += lora_ld(w.A[s], (int64_t)j * in + k, w.dtype[s]) * xt[k];
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
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

__global__ void __launch_bounds__(32 * LORA_SHRINK_WARPS)
lora_shrink_kernel(lora_window w, const int32_t *tok_slot, const float *x, float *v, int64_t in) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    lora_shrink_block(w, tok_slot, x, v, in);
}

__global__ void lora_expand_kernel(lora_window w, const int32_t *tok_slot, const float *v,
                                   float *y, int64_t out) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    lora_expand_block(w, tok_slot, v, y, out);
}

/* Several projections of one x (op_lora_bgmv_n): projection i is grid
 * layer blockIdx.z, its window w[i], its shrink results at v + i T
 * PS_LORA_MAX_RANK. The same blocks as one launch per projection, so the
 * same bits, in 2 launches instead of 2 n. */
#define LORA_N_MAX 3
typedef struct {
    lora_window w[LORA_N_MAX];
    float *y[LORA_N_MAX];
    int64_t out[LORA_N_MAX];
} lora_windows;

__global__ void __launch_bounds__(32 * LORA_SHRINK_WARPS)
lora_shrink_n_kernel(lora_windows ws, const int32_t *tok_slot, const float *x, float *v, int64_t in, int64_t T) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    lora_shrink_block(ws.w[blockIdx.z], tok_slot, x, v + blockIdx.z * T * PS_LORA_MAX_RANK, in);
}

__global__ void lora_expand_n_kernel(lora_windows ws, const int32_t *tok_slot, const float *v, int64_t T) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    const int i = (int)blockIdx.z;
    if ((int64_t)blockIdx.y * LORA_EXPAND_THREADS >= ws.out[i]) return; /* the grid fits the widest */
    lora_expand_block(ws.w[i], tok_slot, v + i * T * PS_LORA_MAX_RANK, ws.y[i], ws.out[i]);
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

ps_status cuda_lora_bgmv(ps_backend *be, ps_tensor *y, const ps_tensor *x,
                         const ps_lora_batch *lb, ps_err *err) {
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    int64_t in = cuda_last_dim(x), out = cuda_last_dim(y), T = cuda_rows(x);
    if (T == 0 || lb->n_slots == 0) return PS_OK;
    const int32_t *tok_slot = NULL;
    PS_TRY(lora_tok_dev(lb, T, &tok_slot, err));
    PS_TRY(cuda_scratch(p, &p->scratch_lora, &p->scratch_lora_bytes,
                        sizeof(float) * (size_t)T * PS_LORA_MAX_RANK, err));
    float *v = (float *)p->scratch_lora;
    for (int first = 0; first < lb->n_slots; first += LORA_WINDOW) {
        lora_window w;
        int rmax = lora_window_of(lb, first, &w);
        if (rmax == 0) continue;
        dim3 gs((unsigned)T, (unsigned)rmax);
        cuda_launch(p, lora_shrink_kernel, gs, 32 * LORA_SHRINK_WARPS, 0, w, tok_slot, (const float *)x->data,
                    v, in);
        CU_LAUNCH_CHECK(p);
        dim3 ge((unsigned)T, (unsigned)((out + LORA_EXPAND_THREADS - 1) / LORA_EXPAND_THREADS));
        cuda_launch(p, lora_expand_kernel, ge, LORA_EXPAND_THREADS, 0, w, tok_slot, v, (float *)y->data, out);
        CU_LAUNCH_CHECK(p);
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
    const int32_t *tok_slot = NULL;
    PS_TRY(lora_tok_dev(lbs[0], T, &tok_slot, err));
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
    PS_TRY(cuda_scratch(p, &p->scratch_lora, &p->scratch_lora_bytes,
                        sizeof(float) * (size_t)(n * T) * PS_LORA_MAX_RANK, err));
    float *v = (float *)p->scratch_lora;
    dim3 gs((unsigned)T, (unsigned)rmax, (unsigned)n);
    cuda_launch(p, lora_shrink_n_kernel, gs, 32 * LORA_SHRINK_WARPS, 0, ws, tok_slot, (const float *)x->data, v, in,
                T);
    CU_LAUNCH_CHECK(p);
    dim3 ge((unsigned)T, (unsigned)((omax + LORA_EXPAND_THREADS - 1) / LORA_EXPAND_THREADS), (unsigned)n);
    cuda_launch(p, lora_expand_n_kernel, ge, LORA_EXPAND_THREADS, 0, ws, tok_slot, v, T);
    CU_LAUNCH_CHECK(p);
    return cuda_op_done(p, "lora_bgmv_n", err);
}
