/* NF4 GEMV for decode: y (T, out) = x (T, in) W^T with W decoded on the fly
 * from its 4-bit codes and (double-quantised) block scales, never
 * materialised. Accumulates in f32; mirrors kernels/cpu/linear_ref.c (the
 * oracle) with the element math of kernels/math/nf4.h (ps_nf4_code_at,
 * ps_nf4_block_scale, ps_nf4_value).
 *
 * Two fast kernels, picked by ps_cuda_tuning.gemv_kernel (PS_CUDA_GEMV=v1|v2):
 * v2 (default) is described at its definition below. v1 (kept to compare):
 * Fast kernel (in % 64 == 0, 16-byte aligned codes and x): each warp owns R
 * output rows; every lane reads 16 bytes (32 codes, half a 64-block) of each
 * of its rows per step, two steps in flight, and applies them to up to 8 rows
 * of x held in registers, so one weight load serves the whole batch and one x
 * load serves R rows. The block scale multiplies the 32-code partial dot
 * rather than each element: the same product, rounded once instead of 32
 * times (well inside the f32 tolerance of the parity test).
 * Generic kernel (any shape, e.g. in = 17): one warp per row, one element per
 * lane step, ps_nf4_value per element. More than 8 rows of x: chunks of 8,
 * each rereading W (the linear dispatcher switches to dequant + cuBLAS when
 * T is large). */
#include "cuda_common.cuh"
#include "nf4_tables.cuh"

#define GEMV_THREADS 128
#define GEMV_WARPS (GEMV_THREADS / 32)
#define GEMV_U 2 /* 16-byte chunks per row in flight per lane */

template <int B, int R>
__global__ void __launch_bounds__(GEMV_THREADS)
nf4_gemv_fast_kernel(float *__restrict__ y, const float *__restrict__ x, cuda_nf4_args w) {
    __shared__ float s_nf4[16], s_dq[256];
    cuda_nf4_tables_to_smem(s_nf4, s_dq, w.q8 != NULL);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int64_t row0 = ((int64_t)blockIdx.x * GEMV_WARPS + warp) * R;
    if (row0 >= w.out) return;
    const int64_t in = w.in, nchunk = in / 32, bpr = in / 64;
    int64_t rows[R];
#pragma unroll
    for (int r = 0; r < R; r++) rows[r] = row0 + r < w.out ? row0 + r : w.out - 1; /* tail: computed, not stored */
    float acc[R][B];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int b = 0; b < B; b++) acc[r][b] = 0.0f;

    for (int64_t c0 = lane; c0 < nchunk; c0 += 32 * GEMV_U) {
        uint4 wv[GEMV_U][R];
        float sc[GEMV_U][R];
#pragma unroll
        for (int u = 0; u < GEMV_U; u++) {
            int64_t c = c0 + 32 * u;
            if (c >= nchunk) continue;
#pragma unroll
            for (int r = 0; r < R; r++) {
                wv[u][r] = __ldg((const uint4 *)(w.packed + rows[r] * (in / 2)) + c);
                sc[u][r] = cuda_nf4_scale(w, s_dq, rows[r] * bpr + c / 2);
            }
        }
#pragma unroll
        for (int u = 0; u < GEMV_U; u++) {
            int64_t c = c0 + 32 * u;
            if (c >= nchunk) continue;
            float dot[R][B];
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int b = 0; b < B; b++) dot[r][b] = 0.0f;
#pragma unroll
            for (int j = 0; j < 4; j++) { /* 32-bit word j: codes 8j .. 8j+7 of the chunk */
                float xv[B][8];
#pragma unroll
                for (int b = 0; b < B; b++) {
                    const float4 *xp = (const float4 *)(x + b * in + c * 32 + j * 8);
                    float4 lo = __ldg(xp), hi = __ldg(xp + 1);
                    xv[b][0] = lo.x, xv[b][1] = lo.y, xv[b][2] = lo.z, xv[b][3] = lo.w;
                    xv[b][4] = hi.x, xv[b][5] = hi.y, xv[b][6] = hi.z, xv[b][7] = hi.w;
                }
#pragma unroll
                for (int r = 0; r < R; r++) {
                    uint32_t word = j == 0 ? wv[u][r].x : j == 1 ? wv[u][r].y : j == 2 ? wv[u][r].z : wv[u][r].w;
                    uint8_t bytes[4];
                    memcpy(bytes, &word, 4); /* memory order: the packed layout */
#pragma unroll
                    for (int e = 0; e < 8; e++) {
                        float v = s_nf4[ps_nf4_code_at(bytes, e)];
#pragma unroll
                        for (int b = 0; b < B; b++) dot[r][b] += v * xv[b][e];
                    }
                }
            }
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int b = 0; b < B; b++) acc[r][b] += dot[r][b] * sc[u][r];
        }
    }
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int b = 0; b < B; b++)
            for (int o = 16; o > 0; o >>= 1) acc[r][b] += __shfl_xor_sync(0xffffffffu, acc[r][b], o);
    if (lane == 0) {
#pragma unroll
        for (int r = 0; r < R; r++)
            if (row0 + r < w.out)
#pragma unroll
                for (int b = 0; b < B; b++) y[b * w.out + row0 + r] = acc[r][b];
    }
}

#define GEMV_NB_MAX 8

__global__ void __launch_bounds__(GEMV_THREADS)
nf4_gemv_generic_kernel(float *__restrict__ y, const float *__restrict__ x, int nb, cuda_nf4_args w) {
    __shared__ float s_nf4[16], s_dq[256];
    cuda_nf4_tables_to_smem(s_nf4, s_dq, w.q8 != NULL);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int64_t row = (int64_t)blockIdx.x * GEMV_WARPS + warp;
    if (row >= w.out) return;
    float acc[GEMV_NB_MAX];
#pragma unroll
    for (int b = 0; b < GEMV_NB_MAX; b++) acc[b] = 0.0f;
    for (int64_t k = lane; k < w.in; k += 32) {
        int64_t i = row * w.in + k;
        float v = ps_nf4_value(s_nf4[ps_nf4_code_at(w.packed, i)],
                               cuda_nf4_scale(w, s_dq, i / PS_NF4_BLOCK));
#pragma unroll
        for (int b = 0; b < GEMV_NB_MAX; b++)
            if (b < nb) acc[b] += v * x[b * w.in + k];
    }
#pragma unroll
    for (int b = 0; b < GEMV_NB_MAX; b++) {
        for (int o = 16; o > 0; o >>= 1) acc[b] += __shfl_xor_sync(0xffffffffu, acc[b], o);
        if (lane == 0 && b < nb) y[b * w.out + row] = acc[b];
    }
}

template <int B, int R>
static void nf4_gemv_fast_launch(cuda_impl *p, float *y, const float *x, const cuda_nf4_args &a) {
    int64_t rows_per_block = (int64_t)GEMV_WARPS * R;
    unsigned grid = (unsigned)((a.out + rows_per_block - 1) / rows_per_block);
    nf4_gemv_fast_kernel<B, R><<<grid, GEMV_THREADS, 0, p->stream>>>(y, x, a);
}


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
#define GEMV2_THREADS 256
#define GEMV2_WARPS (GEMV2_THREADS / 32)
#define GEMV2_KT 1024 /* elements of a K tile: 32 lanes x 32 codes */

template <int B>
__device__ static inline void gemv2_stage_x(float4 *s_x, const float *__restrict__ x, int64_t in, int64_t k0) {
    for (int q = threadIdx.x; q < B * (GEMV2_KT / 4); q += GEMV2_THREADS) {
        int b = q / (GEMV2_KT / 4), f = q % (GEMV2_KT / 4), l = f / 8, j = f % 8;
        int64_t k = k0 + 4 * (int64_t)f;
        float4 v = k < in ? __ldg((const float4 *)(x + b * in + k)) : make_float4(0.f, 0.f, 0.f, 0.f);
        s_x[b * (GEMV2_KT / 4) + j * 32 + (l ^ j)] = v;
    }
}

template <int B, int R>
__global__ void __launch_bounds__(GEMV2_THREADS)
nf4_gemv_v2_kernel(float *__restrict__ y, const float *__restrict__ x, cuda_nf4_args w) {
    __shared__ float s_nf4[16], s_dq[256];
    extern __shared__ float smem[]; /* two x tiles: 2 * B * GEMV2_KT floats (16-byte aligned) */
    float4 *s_x0 = (float4 *)smem, *s_x1 = s_x0 + B * (GEMV2_KT / 4);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int64_t in = w.in, nchunk = in / 32, bpr = in / 64;
    const int64_t ntile = (in + GEMV2_KT - 1) / GEMV2_KT;
    int64_t row0 = ((int64_t)blockIdx.x * GEMV2_WARPS + warp) * R; /* may be >= out: still joins the barriers */
    int64_t rows[R];
#pragma unroll
    for (int r = 0; r < R; r++) rows[r] = row0 + r < w.out ? row0 + r : w.out - 1; /* tail: computed, not stored */
    gemv2_stage_x<B>(s_x0, x, in, 0);
    cuda_nf4_tables_to_smem(s_nf4, s_dq, w.q8 != NULL); /* its barrier also publishes tile 0 */

    float acc[R][B];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int b = 0; b < B; b++) acc[r][b] = 0.0f;
    uint4 wv[R];
    float sc[R];
    {
        int64_t c = lane;
#pragma unroll
        for (int r = 0; r < R; r++)
            if (c < nchunk) {
                wv[r] = __ldg((const uint4 *)(w.packed + rows[r] * (in / 2)) + c);
                sc[r] = cuda_nf4_scale(w, s_dq, rows[r] * bpr + c / 2);
            }
    }
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
            gemv2_stage_x<B>(t & 1 ? s_x0 : s_x1, x, in, (t + 1) * GEMV2_KT);
        }
        if (c < nchunk) {
            float dot[R][B];
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int b = 0; b < B; b++) dot[r][b] = 0.0f;
#pragma unroll
            for (int j = 0; j < 8; j++) { /* float4 j: codes 4j .. 4j+3 of the chunk */
                float xv[B][4];
#pragma unroll
                for (int b = 0; b < B; b++) {
                    float4 v = sx[b * (GEMV2_KT / 4) + j * 32 + (lane ^ j)];
                    xv[b][0] = v.x, xv[b][1] = v.y, xv[b][2] = v.z, xv[b][3] = v.w;
                }
#pragma unroll
                for (int r = 0; r < R; r++) {
                    uint32_t word = j < 2 ? wv[r].x : j < 4 ? wv[r].y : j < 6 ? wv[r].z : wv[r].w;
                    uint8_t bytes[4];
                    memcpy(bytes, &word, 4); /* memory order: the packed layout */
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        float v = s_nf4[ps_nf4_code_at(bytes, (j & 1) * 4 + e)];
#pragma unroll
                        for (int b = 0; b < B; b++) dot[r][b] += v * xv[b][e];
                    }
                }
            }
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
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int b = 0; b < B; b++)
            for (int o = 16; o > 0; o >>= 1) acc[r][b] += __shfl_xor_sync(0xffffffffu, acc[r][b], o);
    if (lane == 0) {
#pragma unroll
        for (int r = 0; r < R; r++)
            if (row0 + r < w.out)
#pragma unroll
                for (int b = 0; b < B; b++) y[b * w.out + row0 + r] = acc[r][b];
    }
}

template <int B, int R>
static void nf4_gemv_v2_launch(cuda_impl *p, float *y, const float *x, const cuda_nf4_args &a) {
    int64_t rows_per_block = (int64_t)GEMV2_WARPS * R;
    unsigned grid = (unsigned)((a.out + rows_per_block - 1) / rows_per_block);
    int smem = (int)(2 * B * GEMV2_KT * sizeof(float)); /* 64 KB at B = 8: above the 48 KB default */
    /* a failure here shows in the launch check that follows (cudaGetLastError) */
    (void)cudaFuncSetAttribute(nf4_gemv_v2_kernel<B, R>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    nf4_gemv_v2_kernel<B, R><<<grid, GEMV2_THREADS, smem, p->stream>>>(y, x, a);
}

static void nf4_gemv_v2_chunk(cuda_impl *p, float *y, const float *x, int nb, const cuda_nf4_args &a) {
    switch (nb) {
    case 1: nf4_gemv_v2_launch<1, 2>(p, y, x, a); break;
    case 2: nf4_gemv_v2_launch<2, 2>(p, y, x, a); break;
    case 3: nf4_gemv_v2_launch<3, 2>(p, y, x, a); break;
    case 4: nf4_gemv_v2_launch<4, 2>(p, y, x, a); break;
    case 5: nf4_gemv_v2_launch<5, 2>(p, y, x, a); break;
    case 6: nf4_gemv_v2_launch<6, 2>(p, y, x, a); break;
    case 7: nf4_gemv_v2_launch<7, 2>(p, y, x, a); break;
    default: nf4_gemv_v2_launch<8, 2>(p, y, x, a); break;
    }
}

/* One chunk of nb (1..8) rows of x. R: 4 rows per warp for a single token
 * (x reuse matters most when the shared-memory code lookups dominate), 2 for
 * more tokens (registers). */
static void nf4_gemv_chunk(cuda_impl *p, float *y, const float *x, int nb, const cuda_nf4_args &a,
                           bool fast) {
    if (fast && p->tune.gemv_kernel != 1) {
        nf4_gemv_v2_chunk(p, y, x, nb, a);
        return;
    }
    if (!fast) {
        unsigned grid = (unsigned)((a.out + GEMV_WARPS - 1) / GEMV_WARPS);
        nf4_gemv_generic_kernel<<<grid, GEMV_THREADS, 0, p->stream>>>(y, x, nb, a);
        return;
    }
    switch (nb) {
    case 1: nf4_gemv_fast_launch<1, 4>(p, y, x, a); break;
    case 2: nf4_gemv_fast_launch<2, 2>(p, y, x, a); break;
    case 3: nf4_gemv_fast_launch<3, 2>(p, y, x, a); break;
    case 4: nf4_gemv_fast_launch<4, 2>(p, y, x, a); break;
    case 5: nf4_gemv_fast_launch<5, 2>(p, y, x, a); break;
    case 6: nf4_gemv_fast_launch<6, 2>(p, y, x, a); break;
    case 7: nf4_gemv_fast_launch<7, 2>(p, y, x, a); break;
    default: nf4_gemv_fast_launch<8, 2>(p, y, x, a); break;
    }
}

ps_status cuda_nf4_gemv(cuda_impl *p, float *y, const float *x, int64_t T, const ps_nf4 *w,
                        ps_err *err) {
    cuda_nf4_args a = cuda_nf4_args_of(w);
    if ((a.out + GEMV_WARPS - 1) / GEMV_WARPS > INT32_MAX)
        return ps_errf(err, PS_EINVAL, "linear: nf4 weight with %lld rows", (long long)a.out);
    bool fast = a.in % PS_NF4_BLOCK == 0 && ((uintptr_t)a.packed & 15) == 0 &&
                ((uintptr_t)x & 15) == 0;
    for (int64_t t0 = 0; t0 < T; t0 += GEMV_NB_MAX) {
        int nb = (int)(T - t0 < GEMV_NB_MAX ? T - t0 : GEMV_NB_MAX);
        nf4_gemv_chunk(p, y + t0 * a.out, x + t0 * a.in, nb, a, fast);
        CU_LAUNCH_CHECK(p);
    }
    return PS_OK;
}
