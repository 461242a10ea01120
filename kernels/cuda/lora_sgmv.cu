/* Multi-adapter LoRA over tiles of consecutive tokens (the SGMV idea of
 * Punica / S-LoRA, op lora_bgmv): a prefill chunk is a run of tokens of one
 * adapter, so a tile of LORA_SGMV_TOKENS of them reads each element of A and
 * B once for all its tokens, where BGMV (lora.cu) reads it once per token.
 * At a 512-token prefill with r = 16 on a 4096-wide projection BGMV's shrink
 * streams A and x 512 x 16 times through L2 (268 MB per projection); here A
 * is read once per tile of 8 tokens and x once per 4 rank rows.
 *
 *   shrink: block (token tile, 4 rank rows); thread (warp w, lane l) keeps
 *           the 8 x 4 partial sums of its K positions (lora_warp_range),
 *           loading 4 values of A and 8 of x for 32 multiply-adds;
 *   expand: block (token tile, 256 outputs); the tile's v rows in shared
 *           memory, each B element loaded once for the 8 tokens.
 * Every output is summed in exactly BGMV's order (per lane over its K
 * positions, the xor butterfly, the warps in order; the expand over rank
 * rows in order), so both families give the same bits. A tile whose tokens
 * use different adapters (a decode batch of many) still gives them: each
 * token then loads its own adapter, and the host prefers BGMV for such
 * batches, whose grid has one block per token. */
#include "lora.cuh"

#define SGMV_TT LORA_SGMV_TOKENS /* tokens per tile */
#define SGMV_JT 4                /* rank rows per shrink block */
#define SGMV_THREADS (32 * LORA_SHRINK_WARPS)

/* The adapters of the tile's tokens: *uniform when every adapted token of
 * the tile has one slot (*slot then), the tile's largest rank returned
 * (0: no token of the tile is adapted). Same answer in every thread. */
__device__ static int sgmv_tile(const lora_window &w, const int32_t *tok_slot, int64_t t0, int64_t T,
                                bool *uniform, int *slot) {
    int rmax = 0;
    *uniform = true, *slot = -1;
    for (int tt = 0; tt < SGMV_TT && t0 + tt < T; tt++) {
        int s = lora_local_slot(w, tok_slot, t0 + tt);
        if (s < 0) continue;
        if (*slot >= 0 && s != *slot) *uniform = false;
        *slot = s;
        rmax = w.r[s] > rmax ? w.r[s] : rmax;
    }
    return rmax;
}

/* acc[tt][jj] += A[j0 + jj] . x[t0 + tt] over this lane's K positions, one
 * adapter for the whole tile: rows past the rank and tokens past T are
 * clamped to valid ones (loaded, never stored). DT constant: the load
 * needs no dtype branch. */
template <int DT>
__device__ static void sgmv_shrink_shared(float (&acc)[SGMV_TT][SGMV_JT], const void *A, int r, const float *x,
                                          int64_t t0, int64_t T, int j0, int64_t in, int64_t k0, int64_t k1) {
    int64_t arow[SGMV_JT];
    const float *xr[SGMV_TT];
#pragma unroll
    for (int jj = 0; jj < SGMV_JT; jj++) arow[jj] = (int64_t)(j0 + jj < r ? j0 + jj : r - 1) * in;
#pragma unroll
    for (int tt = 0; tt < SGMV_TT; tt++) xr[tt] = x + (t0 + tt < T ? t0 + tt : T - 1) * in;
    for (int64_t k = k0; k < k1; k += 32) {
        float a[SGMV_JT];
#pragma unroll
        for (int jj = 0; jj < SGMV_JT; jj++) a[jj] = lora_ld(A, arow[jj] + k, DT);
#pragma unroll
        for (int tt = 0; tt < SGMV_TT; tt++) {
            float xv = xr[tt][k];
#pragma unroll
            for (int jj = 0; jj < SGMV_JT; jj++) acc[tt][jj] += a[jj] * xv;
        }
    }
}

/* The same when the tile's tokens use different adapters: token by token. */
__device__ static void sgmv_shrink_each(float (&acc)[SGMV_TT][SGMV_JT], const lora_window &w, const int32_t *tok_slot,
                                        const float *x, int64_t t0, int64_t T, int j0, int64_t in, int64_t k0,
                                        int64_t k1) {
#pragma unroll
    for (int tt = 0; tt < SGMV_TT; tt++) {
        int s = t0 + tt < T ? lora_local_slot(w, tok_slot, t0 + tt) : -1;
        if (s < 0) continue;
        int64_t arow[SGMV_JT];
#pragma unroll
        for (int jj = 0; jj < SGMV_JT; jj++) arow[jj] = (int64_t)(j0 + jj < w.r[s] ? j0 + jj : w.r[s] - 1) * in;
        const float *xt = x + (t0 + tt) * in;
        for (int64_t k = k0; k < k1; k += 32) {
            float xv = xt[k];
#pragma unroll
            for (int jj = 0; jj < SGMV_JT; jj++) acc[tt][jj] += lora_ld(w.A[s], arow[jj] + k, w.dtype[s]) * xv;
        }
    }
}

/* v[t, j] for the tile's tokens t and rank rows j0 .. j0 + SGMV_JT - 1. */
__device__ static void sgmv_shrink_block(const lora_window &w, const int32_t *tok_slot, const float *x, float *v,
                                         int64_t in, int64_t T) {
    __shared__ float part[LORA_SHRINK_WARPS][SGMV_TT * SGMV_JT];
    const int64_t t0 = (int64_t)blockIdx.x * SGMV_TT;
    const int j0 = (int)blockIdx.y * SGMV_JT;
    bool uniform;
    int slot;
    if (j0 >= sgmv_tile(w, tok_slot, t0, T, &uniform, &slot)) return; /* the whole block */
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int64_t k0, k1;
    lora_warp_range(warp, in, &k0, &k1);
    float acc[SGMV_TT][SGMV_JT];
#pragma unroll
    for (int tt = 0; tt < SGMV_TT; tt++)
#pragma unroll
        for (int jj = 0; jj < SGMV_JT; jj++) acc[tt][jj] = 0.0f;
    if (!uniform) sgmv_shrink_each(acc, w, tok_slot, x, t0, T, j0, in, k0 + lane, k1);
    else if (w.dtype[slot] == PS_DT_F32)
        sgmv_shrink_shared<PS_DT_F32>(acc, w.A[slot], w.r[slot], x, t0, T, j0, in, k0 + lane, k1);
    else if (w.dtype[slot] == PS_DT_F16)
        sgmv_shrink_shared<PS_DT_F16>(acc, w.A[slot], w.r[slot], x, t0, T, j0, in, k0 + lane, k1);
    else sgmv_shrink_shared<PS_DT_BF16>(acc, w.A[slot], w.r[slot], x, t0, T, j0, in, k0 + lane, k1);
#pragma unroll
    for (int tt = 0; tt < SGMV_TT; tt++)
#pragma unroll
        for (int jj = 0; jj < SGMV_JT; jj++) {
            float sum = lora_warp_sum(acc[tt][jj]); /* every lane holds it: lane o stores output o */
            if (lane == tt * SGMV_JT + jj) part[warp][tt * SGMV_JT + jj] = sum;
        }
    __syncthreads();
    const int o = threadIdx.x;
    if (o >= SGMV_TT * SGMV_JT) return;
    const int64_t t = t0 + o / SGMV_JT;
    const int j = j0 + o % SGMV_JT;
    int s = t < T ? lora_local_slot(w, tok_slot, t) : -1;
    if (s < 0 || j >= w.r[s]) return;
    float sum = 0.0f;
    for (int i = 0; i < LORA_SHRINK_WARPS; i++) sum += part[i][o];
    v[t * PS_LORA_MAX_RANK + j] = sum;
}

/* y[t, o] += scale_s * sum_j v[t, j] B_s[j, o] for the tile's tokens and the
 * block's 256 outputs. */
__device__ static void sgmv_expand_block(const lora_window &w, const int32_t *tok_slot, const float *v, float *y,
                                         int64_t out, int64_t T) {
    __shared__ float vs[SGMV_TT][PS_LORA_MAX_RANK];
    const int64_t t0 = (int64_t)blockIdx.x * SGMV_TT;
    bool uniform;
    int slot;
    const int rmax = sgmv_tile(w, tok_slot, t0, T, &uniform, &slot);
    if (rmax == 0) return; /* the whole block */
    for (int i = threadIdx.x; i < SGMV_TT * rmax; i += blockDim.x) {
        int tt = i / rmax, j = i % rmax;
        vs[tt][j] = t0 + tt < T ? v[(t0 + tt) * PS_LORA_MAX_RANK + j] : 0.0f;
    }
    __syncthreads();
    const int64_t o = blockIdx.y * (int64_t)LORA_EXPAND_THREADS + threadIdx.x;
    if (o >= out) return;
    float acc[SGMV_TT];
#pragma unroll
    for (int tt = 0; tt < SGMV_TT; tt++) acc[tt] = 0.0f;
    if (uniform) {
        const void *B = w.B[slot];
        const int dt = w.dtype[slot];
        for (int j = 0; j < w.r[slot]; j++) {
            float b = lora_ld(B, (int64_t)j * out + o, dt);
#pragma unroll
            for (int tt = 0; tt < SGMV_TT; tt++) acc[tt] += vs[tt][j] * b;
        }
    } else {
#pragma unroll
        for (int tt = 0; tt < SGMV_TT; tt++) {
            int s = t0 + tt < T ? lora_local_slot(w, tok_slot, t0 + tt) : -1;
            for (int j = 0; s >= 0 && j < w.r[s]; j++) acc[tt] += vs[tt][j] * lora_ld(w.B[s], (int64_t)j * out + o, w.dtype[s]);
        }
    }
#pragma unroll
    for (int tt = 0; tt < SGMV_TT; tt++) {
        int s = t0 + tt < T ? lora_local_slot(w, tok_slot, t0 + tt) : -1;
        if (s >= 0) y[(t0 + tt) * out + o] += w.scale[s] * acc[tt];
    }
}

__global__ void __launch_bounds__(SGMV_THREADS)
lora_sgmv_shrink_kernel(lora_windows ws, const int32_t *tok_slot, const float *x, float *v, int64_t in, int64_t T) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    sgmv_shrink_block(ws.w[blockIdx.z], tok_slot, x, v + blockIdx.z * T * PS_LORA_MAX_RANK, in, T);
}

__global__ void __launch_bounds__(LORA_EXPAND_THREADS)
lora_sgmv_expand_kernel(lora_windows ws, const int32_t *tok_slot, const float *v, int64_t T) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    const int i = (int)blockIdx.z;
    if ((int64_t)blockIdx.y * LORA_EXPAND_THREADS >= ws.out[i]) return; /* the grid fits the widest */
    sgmv_expand_block(ws.w[i], tok_slot, v + i * T * PS_LORA_MAX_RANK, ws.y[i], ws.out[i], T);
}

void cuda_lora_sgmv_launch(cuda_impl *p, const lora_windows &ws, int n, const int32_t *tok_slot, const float *x,
                           float *v, int64_t in, int64_t T, int rmax, int64_t omax) {
    const unsigned tiles = (unsigned)((T + SGMV_TT - 1) / SGMV_TT);
    dim3 gs(tiles, (unsigned)((rmax + SGMV_JT - 1) / SGMV_JT), (unsigned)n);
    cuda_launch(p, lora_sgmv_shrink_kernel, gs, SGMV_THREADS, 0, ws, tok_slot, x, v, in, T);
    dim3 ge(tiles, (unsigned)((omax + LORA_EXPAND_THREADS - 1) / LORA_EXPAND_THREADS), (unsigned)n);
    cuda_launch(p, lora_sgmv_expand_kernel, ge, LORA_EXPAND_THREADS, 0, ws, tok_slot, (const float *)v, T);
    p->counts.lora_sgmv++;
}
