/* NF4 GEMV v3 (decode, aimed at T = 1..2): no x staging and no barrier in
 * the loop. One warp owns R rows (1 or 2), 128 threads per block; each lane
 * loads U (2 or 4) independent 16-byte code chunks (32 codes, half a 64-block)
 * per row per iteration, so U * R * 16 bytes per lane are in flight, and their
 * block scales are computed before any math. x is read with 128-bit __ldg
 * (L1/L2 resident: every warp reads the same x). One lookup in a 256-entry
 * pair table (two floats per code byte, built with ps_nf4_code_at) decodes two
 * codes. As in v1, the block scale multiplies the 32-code partial dot.
 * Instantiated for 1..8 rows of x (T > 2 only to compare). Element math from
 * kernels/math/nf4.h, as the oracle kernels/cpu/linear_ref.c. Needs
 * in % 64 == 0 and 16-byte aligned codes and x (the dispatcher checks). */
#include "cuda_common.cuh"
#include "nf4_gemv_common.cuh"
#include "nf4_tables.cuh"

typedef void (*cuda_gemv_launch_fn)(cuda_impl *p, float *y, const float *x, const cuda_nf4_args &a);
cuda_gemv_launch_fn cuda_gemv_v3_fn(int R, int U, int nb);

#define GEMV3_THREADS 128
#define GEMV3_WARPS (GEMV3_THREADS / 32)

/* two decoded codes: one 64-bit shared-memory load (own type rather than
 * float2, which the CPU emulator of tests/gpu/emu does not define) */
struct alignas(8) gemv3_pair {
    float first, second;
};

/* s_pair[v] = (value of the first code of byte v, value of the second) in
 * the packed order; s_dq as cuda_nf4_tables_to_smem. Ends with a barrier. */
__device__ static inline void gemv3_tables(gemv3_pair *s_pair, float *s_nf4, float *s_dq, bool dq) {
    cuda_nf4_tables_to_smem(s_nf4, s_dq, dq);
    for (int v = threadIdx.x; v < 256; v += blockDim.x) {
        uint8_t byte = (uint8_t)v;
        s_pair[v].first = s_nf4[ps_nf4_code_at(&byte, 0)];
        s_pair[v].second = s_nf4[ps_nf4_code_at(&byte, 1)];
    }
    __syncthreads();
}

template <int B, int R, int U>
__global__ void __launch_bounds__(GEMV3_THREADS)
nf4_gemv_v3_kernel(float *__restrict__ y, const float *__restrict__ x, cuda_nf4_args w) {
    __shared__ gemv3_pair s_pair[256];
    __shared__ float s_nf4[16], s_dq[256];
    gemv3_tables(s_pair, s_nf4, s_dq, w.q8 != NULL);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int64_t row0 = ((int64_t)blockIdx.x * GEMV3_WARPS + warp) * R;
    if (row0 >= w.out) return;
    const int64_t in = w.in, nchunk = in / 32;
    const uint4 *wrow[R];
    int64_t srow[R];
    gemv_rows_at<R>(w, row0, wrow, srow); /* a tail row is computed, not stored */
    float acc[R][B];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int b = 0; b < B; b++) acc[r][b] = 0.0f;

    for (int64_t c0 = lane; c0 < nchunk; c0 += 32 * U) {
        uint4 wv[U][R];
        float sc[U][R];
#pragma unroll
        for (int u = 0; u < U; u++) { /* all loads first: U * R chunks in flight */
            int64_t c = c0 + 32 * u;
#pragma unroll
            for (int r = 0; r < R; r++)
                if (c < nchunk) wv[u][r] = __ldg(wrow[r] + c);
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            int64_t c = c0 + 32 * u;
#pragma unroll
            for (int r = 0; r < R; r++)
                if (c < nchunk) sc[u][r] = cuda_nf4_scale(w, s_dq, srow[r] + c / 2);
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
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
                gemv_load_x8<B>(xv, x, in, c * 32 + j * 8);
#pragma unroll
                for (int r = 0; r < R; r++) {
                    uint32_t word = gemv_word(wv[u][r], j);
                    uint8_t bytes[4];
                    memcpy(bytes, &word, 4); /* memory order: the packed layout */
#pragma unroll
                    for (int e = 0; e < 4; e++) { /* byte e: codes 2e, 2e+1 of the word */
                        gemv3_pair v = s_pair[bytes[e]];
#pragma unroll
                        for (int b = 0; b < B; b++) {
                            dot[r][b] += v.first * xv[b][2 * e];
                            dot[r][b] += v.second * xv[b][2 * e + 1];
                        }
                    }
                }
            }
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int b = 0; b < B; b++) acc[r][b] += dot[r][b] * sc[u][r];
        }
    }
    gemv_warp_store<R, B>(acc, y, row0, w.out, lane);
}

template <int B, int R, int U>
static void nf4_gemv_v3_launch(cuda_impl *p, float *y, const float *x, const cuda_nf4_args &a) {
    int64_t rows_per_block = (int64_t)GEMV3_WARPS * R;
    unsigned grid = (unsigned)((a.out + rows_per_block - 1) / rows_per_block);
    nf4_gemv_v3_kernel<B, R, U><<<grid, GEMV3_THREADS, 0, p->stream>>>(y, x, a);
}

#define GEMV3_BY_B(R, U)                                                                  \
    {nf4_gemv_v3_launch<1, R, U>, nf4_gemv_v3_launch<2, R, U>, nf4_gemv_v3_launch<3, R, U>, \
     nf4_gemv_v3_launch<4, R, U>, nf4_gemv_v3_launch<5, R, U>, nf4_gemv_v3_launch<6, R, U>, \
     nf4_gemv_v3_launch<7, R, U>, nf4_gemv_v3_launch<8, R, U>}

/* The launcher of v3 with R rows per warp and U chunks per lane in flight
 * for nb (1..8) rows of x; NULL for a combination not instantiated. */
cuda_gemv_launch_fn cuda_gemv_v3_fn(int R, int U, int nb) {
    static const cuda_gemv_launch_fn tab[2][2][8] = {{GEMV3_BY_B(1, 2), GEMV3_BY_B(1, 4)},
                                                     {GEMV3_BY_B(2, 2), GEMV3_BY_B(2, 4)}};
    if ((R != 1 && R != 2) || (U != 2 && U != 4) || nb < 1 || nb > 8) return NULL;
    return tab[R - 1][U / 4][nb - 1];
}
