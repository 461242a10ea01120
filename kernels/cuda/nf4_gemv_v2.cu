/* NF4 GEMV v2 (decode): x tiles staged in shared memory. Instantiated for
 * 4 or 8 warps per block and 1, 2 or 4 rows per warp, each for 1..8 rows of
 * x; nf4_gemv.cu owns the configuration table and the dispatch. Element math
 * from kernels/math/nf4.h, as the oracle kernels/cpu/linear_ref.c. */
#include "cuda_common.cuh"
#include "nf4_gemv_common.cuh"
#include "nf4_tables.cuh"

/* the launcher type shared with nf4_gemv.cu (declared there too) */
typedef void (*cuda_gemv_launch_fn)(cuda_impl *p, float *y, const float *x, const cuda_nf4_args &a);
cuda_gemv_launch_fn cuda_gemv_v2_fn(int warps, int R, int nb);

/* ---- v2: x tiles in shared memory, conflict-free ----
 * v1 reads x straight from global memory with lanes 128 bytes apart (each lane
 * owns 32 consecutive elements), so every warp load of x touches 32 cache
 * lines; at T = 8 that, not the weights, is the cost. v2 stages x in tiles of
 * 1024 elements (one 16-byte code chunk per lane) in shared memory, laid out
 * so that float4 j of lane l's chunk sits at slot j*32 + (l ^ j): the reads of
 * a warp (fixed j) cover 32 consecutive slots and the cooperative writes (8
 * threads, fixed l, j = 0..7) land in 8 different bank groups. Double
 * buffered (one barrier per tile); the next tile's codes and scales are loaded
 * into registers before the current tile is computed. */
#define GEMV2_KT 1024 /* elements of a K tile: 32 lanes x 32 codes */

template <int B, int W>
__device__ static inline void gemv2_stage_x(float4 *s_x, const float *__restrict__ x, int64_t in, int64_t k0) {
    for (int q = threadIdx.x; q < B * (GEMV2_KT / 4); q += W * 32) {
        int b = q / (GEMV2_KT / 4), f = q % (GEMV2_KT / 4), l = f / 8, j = f % 8;
        int64_t k = k0 + 4 * (int64_t)f;
        float4 v = k < in ? __ldg((const float4 *)(x + b * in + k)) : make_float4(0.f, 0.f, 0.f, 0.f);
        s_x[b * (GEMV2_KT / 4) + j * 32 + (l ^ j)] = v;
    }
}

template <int B, int W, int R>
__global__ void __launch_bounds__(W * 32)
nf4_gemv_v2_kernel(float *__restrict__ y, const float *__restrict__ x, cuda_nf4_args w) {
    cudaTriggerProgrammaticLaunchCompletion();
    __shared__ float s_nf4[16], s_dq[256];
    extern __shared__ float smem[]; /* two x tiles: 2 * B * GEMV2_KT floats (16-byte aligned) */
    float4 *s_x0 = (float4 *)smem, *s_x1 = s_x0 + B * (GEMV2_KT / 4);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t in = w.in, nchunk = in / 32, bpr = in / 64;
    const int64_t ntile = (in + GEMV2_KT - 1) / GEMV2_KT;
    int64_t row0 = ((int64_t)blockIdx.x * W + warp) * R; /* may be >= out: still joins the barriers */
    int64_t rows[R];
#pragma unroll
    for (int r = 0; r < R; r++) rows[r] = row0 + r < w.out ? row0 + r : w.out - 1; /* tail: computed, not stored */
    uint4 wv[R];
#pragma unroll
    for (int r = 0; r < R; r++) /* tile 0's codes: frozen weights, in flight before the dependency wait */
        if (lane < nchunk) wv[r] = __ldg((const uint4 *)(w.packed + rows[r] * (in / 2)) + lane);
    cudaGridDependencySynchronize(); /* x is the previous kernel's output (cuda_common.cuh, PDL) */
    gemv2_stage_x<B, W>(s_x0, x, in, 0);
    cuda_nf4_tables_to_smem(s_nf4, s_dq, w.q8 != NULL); /* its barrier also publishes tile 0 */

    float acc[R][B];
    gemv_zero<R, B>(acc);
    float sc[R];
#pragma unroll
    for (int r = 0; r < R; r++)
        if (lane < nchunk) sc[r] = cuda_nf4_scale(w, s_dq, rows[r] * bpr + lane / 2);
    for (int64_t t = 0; t < ntile; t++) {
        const float4 *sx = t & 1 ? s_x1 : s_x0;
        int64_t c = t * 32 + lane, cn = c + 32;
        uint4 wn[R];
        float sn[R];
        if (t + 1 < ntile) { /* next tile: codes in flight, x staged into the other buffer */
#pragma unroll
            for (int r = 0; r < R; r++)
                if (cn < nchunk) {
                    wn[r] = __ldg((const uint4 *)(w.packed + rows[r] * (in / 2)) + cn);
                    sn[r] = cuda_nf4_scale(w, s_dq, rows[r] * bpr + cn / 2);
                }
            gemv2_stage_x<B, W>(t & 1 ? s_x0 : s_x1, x, in, (t + 1) * GEMV2_KT);
        }
        if (c < nchunk) {
            float dot[R][B];
            gemv_chunk_dot_swizzled<R, B>(dot, wv, sx, GEMV2_KT / 4, lane, s_nf4);
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int b = 0; b < B; b++) acc[r][b] += dot[r][b] * sc[r];
        }
        if (t + 1 < ntile) {
#pragma unroll
            for (int r = 0; r < R; r++) wv[r] = wn[r], sc[r] = sn[r];
        }
        __syncthreads(); /* tile t+1 staged; buffer t free for tile t+2 */
    }
    gemv_warp_store<R, B>(acc, y, row0, w.out, lane);
}

template <int B, int W, int R>
static void nf4_gemv_v2_launch(cuda_impl *p, float *y, const float *x, const cuda_nf4_args &a) {
    int64_t rows_per_block = (int64_t)W * R;
    unsigned grid = (unsigned)((a.out + rows_per_block - 1) / rows_per_block);
    int smem = (int)(2 * B * GEMV2_KT * sizeof(float)); /* 64 KB at B = 8: above the 48 KB default */
    static int allowed;
    cuda_allow_smem(nf4_gemv_v2_kernel<B, W, R>, smem, &allowed);
    cuda_launch(p, nf4_gemv_v2_kernel<B, W, R>, grid, W * 32, smem, y, x, a);
}

#define GEMV2_BY_B(W, R)                                                                  \
    {nf4_gemv_v2_launch<1, W, R>, nf4_gemv_v2_launch<2, W, R>, nf4_gemv_v2_launch<3, W, R>, \
     nf4_gemv_v2_launch<4, W, R>, nf4_gemv_v2_launch<5, W, R>, nf4_gemv_v2_launch<6, W, R>, \
     nf4_gemv_v2_launch<7, W, R>, nf4_gemv_v2_launch<8, W, R>}

/* The launcher of v2 with W warps per block and R rows per warp for nb
 * (1..8) rows of x; NULL for a combination not instantiated. */
cuda_gemv_launch_fn cuda_gemv_v2_fn(int warps, int R, int nb) {
    static const cuda_gemv_launch_fn w4[3][8] = {GEMV2_BY_B(4, 1), GEMV2_BY_B(4, 2), GEMV2_BY_B(4, 4)};
    static const cuda_gemv_launch_fn w8[3][8] = {GEMV2_BY_B(8, 1), GEMV2_BY_B(8, 2), GEMV2_BY_B(8, 4)};
    int ri = R == 1 ? 0 : R == 2 ? 1 : R == 4 ? 2 : -1;
    if (ri < 0 || nb < 1 || nb > 8 || (warps != 4 && warps != 8)) return NULL;
    return warps == 4 ? w4[ri][nb - 1] : w8[ri][nb - 1];
}
