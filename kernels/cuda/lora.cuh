/* What the two multi-adapter LoRA kernel families share (op lora_bgmv, see
 * ps_lora_batch in ops.h): the window of slots a launch takes as kernel
 * parameters, the per-element load, and the launch entry of each family.
 *   lora.cu:      BGMV, one block per (token, rank row) and per (token,
 *                 output block): every token gathers its own adapter; the
 *                 choice for decode steps of many different adapters;
 *   lora_sgmv.cu: SGMV, one block per tile of consecutive tokens: tokens of
 *                 one adapter (a prefill chunk) share every load of A and B;
 *                 the choice for long runs of one adapter.
 * Both compute each output with the same arithmetic in the same order, so
 * they give the same bits and a token's row does not depend on which family
 * ran it, nor on its neighbours (the op is batch invariant). */
#ifndef PS_CUDA_LORA_CUH
#define PS_CUDA_LORA_CUH

#include "cuda_common.cuh"

#define LORA_WINDOW 32       /* slots per launch (kernel parameter space) */
#define LORA_N_MAX 3         /* projections of one x in one launch (q/k/v) */
#define LORA_SHRINK_WARPS 8  /* warps per shrink block; warp w sums K range w of 8 */
#define LORA_EXPAND_THREADS 256

typedef struct {
    const void *A[LORA_WINDOW];
    const void *B[LORA_WINDOW];
    int r[LORA_WINDOW];
    int dtype[LORA_WINDOW];
    float scale[LORA_WINDOW];
    int first, count; /* slots [first, first + count) of the batch */
} lora_window;

/* Projection i of a launch is grid layer blockIdx.z: its window w[i], its
 * output y[i] of width out[i] (0: no adapter touches it, no expand blocks),
 * its shrink results at v + i T PS_LORA_MAX_RANK. */
typedef struct {
    lora_window w[LORA_N_MAX];
    float *y[LORA_N_MAX];
    int64_t out[LORA_N_MAX];
} lora_windows;

__device__ static inline float lora_ld(const void *p, int64_t i, int dt) {
    if (dt == PS_DT_F32) return ((const float *)p)[i];
    if (dt == PS_DT_F16) return cuda_f16_to_f32(((const uint16_t *)p)[i]);
    return ps_bf16_to_f32(((const uint16_t *)p)[i]);
}

/* slot of token t inside this window, or -1 */
__device__ static inline int lora_local_slot(const lora_window &w, const int32_t *tok_slot, int64_t t) {
    int s = tok_slot[t] - w.first;
    if (s < 0 || s >= w.count || w.A[s] == NULL) return -1;
    return s;
}

/* K range [k0, k1) of shrink warp `warp`: lane l sums k = k0 + l, k0 + l + 32, ...
 * in that order, the lanes' sums meet in an xor butterfly, the warps' in warp
 * order. Both families follow this order exactly. */
__device__ static inline void lora_warp_range(int warp, int64_t in, int64_t *k0, int64_t *k1) {
    *k0 = warp * in / LORA_SHRINK_WARPS;
    *k1 = (warp + 1) * in / LORA_SHRINK_WARPS;
}

__device__ static inline float lora_warp_sum(float acc) {
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    return acc;
}

/* Shrink v = A x and expand y += scale B v of projections ws.w[0..n) for the
 * T rows of x (rmax: the largest rank, omax: the widest out among them);
 * launches only, the caller checks. */
void cuda_lora_bgmv_launch(cuda_impl *p, const lora_windows &ws, int n, const int32_t *tok_slot, const float *x,
                           float *v, int64_t in, int64_t T, int rmax, int64_t omax);
void cuda_lora_sgmv_launch(cuda_impl *p, const lora_windows &ws, int n, const int32_t *tok_slot, const float *x,
                           float *v, int64_t in, int64_t T, int rmax, int64_t omax);
/* Tokens per SGMV tile; the host checks how many tiles are of one slot. */
#define LORA_SGMV_TOKENS 8
/* Fewest tokens for which the automatic choice takes SGMV: decode steps of
 * up to 32 sequences keep BGMV's one block per token until a GPU run has
 * timed both (bench_adapters' prefill rows). */
#define LORA_SGMV_MIN_T 64

#endif
