/* NF4 GEMV v5 (decode, T = 1..8): every byte of the weight in flight as
 * early as possible, nothing else in the way.
 *
 * The first H100 timings showed all earlier variants at 17-33% of the
 * device bandwidth at T = 1 while twice the tokens cost only ~18% more time:
 * the kernels were waiting on memory latency, not computing. A 4096 x 4096
 * NF4 matrix is 8.4 MB, about three "latency x bandwidth" products of the
 * chip, so the kernel must keep most of it in flight at once. v5:
 *  - one warp owns R rows (no split-K, no reduction between blocks); each
 *    lane loads U independent 16-byte code chunks (32 codes, half a 64-block)
 *    of each row per step, with their block scales, and the next step's
 *    loads are issued before the current step is computed (P = 1), so
 *    U * R * 16 bytes per lane are always in flight (at K = 4096 and U = 4
 *    a lane's whole share is one step);
 *  - the first step's loads are issued before the block fills its decode
 *    tables, so their latency overlaps the table fill and its barrier (the
 *    only barrier of the kernel);
 *  - the codes are streamed past L1 (ld.global.nc.L1::no_allocate): they are
 *    read once, and must not evict x, which every warp reads through L1 with
 *    16-byte __ldg (at most 8 x 11008 floats, L1/L2 resident); a v3
 *    family that read x the same way but let the codes through L1 was the
 *    slowest measured;
 *  - the 16-entry code table in shared memory is read conflict-free (16
 *    distinct words in 16 banks), unlike v3's 256-entry pair table.
 * Measured on the H100 (before the one-permute decode): no faster than v2
 * (4096 x 4096 at T = 1: 12.9-17 us vs 12.3), slower at T >= 2.
 * As v1: the block scale multiplies each 32-code partial dot (one rounding
 * instead of 32). Element math from kernels/math/nf4.h, as the oracle
 * kernels/cpu/linear_ref.c. Needs in % 64 == 0 and 16-byte aligned codes and
 * x (the dispatcher checks). nf4_gemv.cu owns the configuration table.
 * One launch may cover up to three weights reading the same x (gemv_set). */
#include "cuda_common.cuh"
#include "nf4_gemv_common.cuh"
#include "nf4_tables.cuh"


/* 16 bytes of codes, read once: not allocated in L1 (keeps x there), with a
 * 256-byte L2 prefetch hint (a lane's neighbours read the rest of the line). */
__device__ static inline uint4 gemv5_ld_codes(const uint4 *p) {
#ifdef __CUDA_ARCH__
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
    return v;
#else
    return __ldg(p);
#endif
}

/* One step's loads: chunk c0 + 32u of each row (u < U), when inside the row. */
template <int R, int U>
__device__ static inline void gemv5_load(uint4 (&wv)[U][R], gemv_scale_raw (&sr)[U][R], const cuda_nf4_args &w,
                                         const uint4 *const (&wrow)[R], const int64_t (&srow)[R], int c0,
                                         int nchunk) {
#pragma unroll
    for (int u = 0; u < U; u++) {
        int c = c0 + 32 * u;
        if (c < nchunk) {
#pragma unroll
            for (int r = 0; r < R; r++) {
                wv[u][r] = gemv5_ld_codes(wrow[r] + c);
                sr[u][r] = gemv_scale_load(w, srow[r] + c / 2);
            }
        }
    }
}

/* acc[r][b] += scale * (chunk c of row r) . x[b][32c .. 32c + 32) for one step. */
template <int B, int R, int U>
__device__ static inline void gemv5_compute(float (&acc)[R][B], const uint4 (&wv)[U][R],
                                            const gemv_scale_raw (&sr)[U][R], const cuda_nf4_args &w,
                                            const float *__restrict__ x, int c0, int nchunk,
                                            const float *s_nf4, const float *s_dq) {
#pragma unroll
    for (int u = 0; u < U; u++) {
        int c = c0 + 32 * u;
        if (c >= nchunk) continue;
        float dot[R][B];
        gemv_chunk_dot_global<R, B>(dot, wv[u], x, w.in, c, s_nf4);
#pragma unroll
        for (int r = 0; r < R; r++) {
            float sc = gemv_scale_finish(w, s_dq, sr[u][r]);
#pragma unroll
            for (int b = 0; b < B; b++) acc[r][b] += dot[r][b] * sc;
        }
    }
}

template <int B, int W, int R, int U, int P>
__global__ void __launch_bounds__(W * 32)
nf4_gemv_v5_kernel(gemv_set set, const float *__restrict__ x) {
    cudaTriggerProgrammaticLaunchCompletion();
    __shared__ float s_nf4[16], s_dq[256];
    const int m = gemv_set_which(set, (int)blockIdx.x);
    const cuda_nf4_args w = set.w[m];
    float *__restrict__ y = set.y[m];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    /* may be >= out: joins the barrier, stores nothing */
    int64_t row0 = ((int64_t)((int)blockIdx.x - set.first[m]) * W + warp) * R;
    const int nchunk = (int)(w.in / 32);
    const uint4 *wrow[R];
    int64_t srow[R];
    gemv_rows_at<R>(w, row0, wrow, srow); /* rows past out clamped to the last */
    uint4 wv[U][R];
    gemv_scale_raw sr[U][R];
    gemv5_load<R, U>(wv, sr, w, wrow, srow, lane, nchunk); /* frozen weights: in flight before the wait */
    cudaGridDependencySynchronize(); /* x is the previous kernel's output (cuda_common.cuh, PDL) */
    cuda_nf4_tables_to_smem(s_nf4, s_dq, w.q8 != NULL);

    float acc[R][B];
    gemv_zero<R, B>(acc);
    for (int c0 = lane; c0 < nchunk; c0 += 32 * U) {
        if (P) {
            uint4 cw[U][R];
            gemv_scale_raw cs[U][R];
#pragma unroll
            for (int u = 0; u < U; u++)
#pragma unroll
                for (int r = 0; r < R; r++) cw[u][r] = wv[u][r], cs[u][r] = sr[u][r];
            if (c0 + 32 * U < nchunk) gemv5_load<R, U>(wv, sr, w, wrow, srow, c0 + 32 * U, nchunk);
            gemv5_compute<B, R, U>(acc, cw, cs, w, x, c0, nchunk, s_nf4, s_dq);
        } else {
            if (c0 != lane) gemv5_load<R, U>(wv, sr, w, wrow, srow, c0, nchunk);
            gemv5_compute<B, R, U>(acc, wv, sr, w, x, c0, nchunk, s_nf4, s_dq);
        }
    }
    if (row0 < w.out) gemv_warp_store<R, B>(acc, y, row0, w.out, lane);
}

/* (the dispatcher checked that the grid fits an int) */
template <int B, int W, int R, int U, int P>
static void nf4_gemv_v5_launch(cuda_impl *p, const gemv_set &s, const float *x) {
    gemv_set set = s;
    int64_t blocks = gemv_set_blocks(&set, (int64_t)W * R);
    cuda_launch(p, nf4_gemv_v5_kernel<B, W, R, U, P>, (unsigned)blocks, W * 32, 0, set, x);
}

#define GEMV5_BY_B(W, R, U, P)                                                                          \
    {nf4_gemv_v5_launch<1, W, R, U, P>, nf4_gemv_v5_launch<2, W, R, U, P>, nf4_gemv_v5_launch<3, W, R, U, P>, \
     nf4_gemv_v5_launch<4, W, R, U, P>, nf4_gemv_v5_launch<5, W, R, U, P>, nf4_gemv_v5_launch<6, W, R, U, P>, \
     nf4_gemv_v5_launch<7, W, R, U, P>, nf4_gemv_v5_launch<8, W, R, U, P>}

/* The instantiated (W, R, U, P); the configuration table of nf4_gemv.cu
 * names only these. */
static const struct {
    int W, R, U, P;
    cuda_gemv5_launch_fn fn[8];
} k_gemv5_kernels[] = {
    {4, 1, 4, 1, GEMV5_BY_B(4, 1, 4, 1)}, {4, 2, 2, 1, GEMV5_BY_B(4, 2, 2, 1)},
    {4, 2, 4, 1, GEMV5_BY_B(4, 2, 4, 1)}, {4, 2, 4, 0, GEMV5_BY_B(4, 2, 4, 0)},
    {4, 4, 2, 1, GEMV5_BY_B(4, 4, 2, 1)}, {4, 4, 2, 0, GEMV5_BY_B(4, 4, 2, 0)},
    {8, 2, 4, 1, GEMV5_BY_B(8, 2, 4, 1)}, {4, 4, 4, 0, GEMV5_BY_B(4, 4, 4, 0)},
};

cuda_gemv5_launch_fn cuda_gemv_v5_fn(int W, int R, int U, int P, int nb) {
    if (nb < 1 || nb > 8) return NULL;
    for (size_t i = 0; i < sizeof k_gemv5_kernels / sizeof k_gemv5_kernels[0]; i++)
        if (k_gemv5_kernels[i].W == W && k_gemv5_kernels[i].R == R && k_gemv5_kernels[i].U == U &&
            k_gemv5_kernels[i].P == P)
            return k_gemv5_kernels[i].fn[nb - 1];
    return NULL;
}
