/* Pieces the NF4 GEMV variants (nf4_gemv.cu v1, nf4_gemv_v2.cu, nf4_gemv_v4.cu,
 * nf4_gemv_v5.cu, nf4_gemv_v6.cu) share: picking a 32-bit word of a 16-byte code chunk,
 * decoding its codes, loading 8 floats of x per token, a chunk's dot against
 * x staged in shared memory (v2, v4) or read from global memory (v1, v5), a
 * warp's row pointers (v4, v5), a block scale loaded early and finished
 * later, and the warp reduction + store that ends every variant. */
#ifndef PS_CUDA_NF4_GEMV_COMMON_CUH
#define PS_CUDA_NF4_GEMV_COMMON_CUH

#include "cuda_common.cuh"
#include "nf4_tables.cuh"

/* a[r][b] = 0: the accumulators every variant starts from */
template <int R, int B>
__device__ static inline void gemv_zero(float (&a)[R][B]) {
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int b = 0; b < B; b++) a[r][b] = 0.0f;
}

/* Word j (0..3) of a chunk, in memory order (the packed layout). */
__device__ static inline uint32_t gemv_word(const uint4 &v, int j) {
    return j == 0 ? v.x : j == 1 ? v.y : j == 2 ? v.z : v.w;
}

/* xv[b][0..8) = x[b * in + off .. + 8) for B tokens (16-byte aligned loads). */
template <int B>
__device__ static inline void gemv_load_x8(float (&xv)[B][8], const float *x, int64_t in, int64_t off) {
#pragma unroll
    for (int b = 0; b < B; b++) {
        const float4 *xp = (const float4 *)(x + b * in + off);
        float4 lo = __ldg(xp), hi = __ldg(xp + 1);
        xv[b][0] = lo.x, xv[b][1] = lo.y, xv[b][2] = lo.z, xv[b][3] = lo.w;
        xv[b][4] = hi.x, xv[b][5] = hi.y, xv[b][6] = hi.z, xv[b][7] = hi.w;
    }
}

/* The 8 codes of a 32-bit word (packed order: byte k holds element 2k in its
 * high nibble and 2k+1 in its low one) as byte offsets into the 16-float code
 * table: byte k of hi4 is 4 * code(2k), of lo4 4 * code(2k + 1). Two ALU ops
 * per word; each element's lookup address is then one byte permute (PRMT)
 * instead of a shift, a mask and an address add (ncu on the H100 counted
 * ~8 instructions per element in the GEMV, which ran at 43% issue efficiency
 * and, with weights in L2, no faster than from DRAM: bound on the chip). */
struct gemv_codes4 {
    uint32_t hi4, lo4;
};
__device__ static inline gemv_codes4 gemv_codes_of(uint32_t word) {
    gemv_codes4 c;
    c.hi4 = (word >> 2) & 0x3C3C3C3Cu;
    c.lo4 = (word << 2) & 0x3C3C3C3Cu;
    return c;
}
/* value of element e (0..7) of the word: s_nf4[code] through its byte offset */
__device__ static inline float gemv_code_value(const gemv_codes4 &c, int e, const float *s_nf4) {
    uint32_t off = __byte_perm((e & 1) ? c.lo4 : c.hi4, 0u, 0x4440u + (unsigned)(e >> 1));
    return *(const float *)((const char *)s_nf4 + off);
}

/* dot[r][b] = this lane's 16-byte chunk (32 codes) of each of the R rows
 * against x staged in shared memory in v2's conflict-free layout: float4 j
 * of the lane's 32 elements of token b at sx[b * stride + j * 32 + (lane ^ j)]
 * (the inner step of the shared-memory variants v2 and v4). */
template <int R, int B>
__device__ static inline void gemv_chunk_dot_swizzled(float (&dot)[R][B], const uint4 (&wv)[R],
                                                      const float4 *sx, int64_t stride, int lane,
                                                      const float *s_nf4) {
    gemv_zero<R, B>(dot);
#pragma unroll
    for (int j = 0; j < 8; j++) { /* float4 j: codes 4j .. 4j+3 of the chunk */
        float xv[B][4];
#pragma unroll
        for (int b = 0; b < B; b++) {
            float4 v = sx[b * stride + j * 32 + (lane ^ j)];
            xv[b][0] = v.x, xv[b][1] = v.y, xv[b][2] = v.z, xv[b][3] = v.w;
        }
#pragma unroll
        for (int r = 0; r < R; r++) {
            gemv_codes4 codes = gemv_codes_of(gemv_word(wv[r], j / 2));
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float v = gemv_code_value(codes, (j & 1) * 4 + e, s_nf4);
#pragma unroll
                for (int b = 0; b < B; b++) dot[r][b] += v * xv[b][e];
            }
        }
    }
}

/* dot[r][b] = this lane's chunk c (32 codes) of each of the R rows against
 * x[b][32c .. 32c + 32) read from global memory with 16-byte loads (v1, v5;
 * x is small and every warp reads it, so it stays in L1/L2). */
template <int R, int B>
__device__ static inline void gemv_chunk_dot_global(float (&dot)[R][B], const uint4 (&wv)[R], const float *x,
                                                   int64_t in, int64_t c, const float *s_nf4) {
    gemv_zero<R, B>(dot);
#pragma unroll
    for (int j = 0; j < 4; j++) { /* 32-bit word j: codes 8j .. 8j+7 of the chunk */
        float xv[B][8];
        gemv_load_x8<B>(xv, x, in, c * 32 + j * 8);
#pragma unroll
        for (int r = 0; r < R; r++) {
            gemv_codes4 codes = gemv_codes_of(gemv_word(wv[r], j));
#pragma unroll
            for (int e = 0; e < 8; e++) {
                float v = gemv_code_value(codes, e, s_nf4);
#pragma unroll
                for (int b = 0; b < B; b++) dot[r][b] += v * xv[b][e];
            }
        }
    }
}

/* Row r of a warp's R rows from row0 (a tail past `out` clamped to the last
 * row: computed, not stored): its 16-byte code chunks and first block index. */
template <int R>
__device__ static inline void gemv_rows_at(const cuda_nf4_args &w, int64_t row0, const uint4 *(&wrow)[R],
                                           int64_t (&srow)[R]) {
#pragma unroll
    for (int r = 0; r < R; r++) {
        int64_t row = row0 + r < w.out ? row0 + r : w.out - 1;
        wrow[r] = (const uint4 *)(w.packed + row * (w.in / 2));
        srow[r] = row * (w.in / 64);
    }
}

/* The global-memory part of a block scale, loaded with the codes (before the
 * tables are in shared memory) so its latency overlaps theirs: absmax[b], or
 * absmax_q8[b] and absmax2[b / 256] when double-quantised. */
struct gemv_scale_raw {
    float a;    /* absmax[b], or absmax2[b / 256] */
    uint32_t q; /* absmax_q8[b] (double-quantised only) */
};

__device__ static inline gemv_scale_raw gemv_scale_load(const cuda_nf4_args &w, int64_t b) {
    gemv_scale_raw s;
    if (w.absmax) {
        s.a = __ldg(w.absmax + b);
        s.q = 0;
    } else {
        s.q = __ldg(w.q8 + b);
        s.a = __ldg(w.absmax2 + b / 256);
    }
    return s;
}

/* The scale from its loaded parts: ps_nf4_block_scale's two cases, the
 * double-quantised one through the shared formula ps_nf4_dq_scale. */
__device__ static inline float gemv_scale_finish(const cuda_nf4_args &w, const float *s_dq, gemv_scale_raw s) {
    return w.absmax ? s.a : ps_nf4_dq_scale(s_dq[s.q], s.a, w.offset);
}

/* Sums each lane's partial dot over the warp; lane 0 stores rows row0 ..
 * row0 + R - 1 of y (T, out) for the B tokens (tail rows past `out` were
 * computed on a clamped row and are dropped here). */
template <int R, int B>
__device__ static inline void gemv_warp_store(float (&acc)[R][B], float *y, int64_t row0, int64_t out,
                                              int lane) {
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int b = 0; b < B; b++)
            for (int o = 16; o > 0; o >>= 1) acc[r][b] += __shfl_xor_sync(0xffffffffu, acc[r][b], o);
    if (lane == 0) {
#pragma unroll
        for (int r = 0; r < R; r++)
            if (row0 + r < out)
#pragma unroll
                for (int b = 0; b < B; b++) y[b * out + row0 + r] = acc[r][b];
    }
}

/* Up to three weights of the same `in` read by one launch (op_linear_n: q, k,
 * v; gate, up; v4 without a split, v5 and v6): the grid is their row groups one
 * after another. A warp's arithmetic does not depend on which other weights
 * share the launch, so the results equal separate launches bit for bit, and
 * one launch of a larger grid fills the chip better than three small ones
 * (ncu: the 4096-row GEMV ran half a wave). */
typedef struct {
    cuda_nf4_args w[3];
    float *y[3];
    int first[3]; /* the first block of each weight (INT32_MAX past n): gemv_set_blocks */
    int n;
} gemv_set;

/* Fills first[] for row groups of `rows` rows per block; the total blocks. */
static inline int64_t gemv_set_blocks(gemv_set *s, int64_t rows) {
    int64_t blocks = 0;
    for (int i = 0; i < 3; i++) {
        s->first[i] = i < s->n ? (int)blocks : INT32_MAX;
        if (i < s->n) blocks += (s->w[i].out + rows - 1) / rows;
    }
    return blocks;
}

/* The weight block b of the grid belongs to. */
__device__ static inline int gemv_set_which(const gemv_set &s, int b) {
    return b >= s.first[1] ? (b >= s.first[2] ? 2 : 1) : 0;
}

typedef void (*cuda_gemv5_launch_fn)(cuda_impl *p, const gemv_set &s, const float *x);
/* the launcher of v5 with W warps, R rows per warp, U chunks per lane in
 * flight, P (prefetch) for nb (1..8) rows of x; NULL: not instantiated */
cuda_gemv5_launch_fn cuda_gemv_v5_fn(int W, int R, int U, int P, int nb);
typedef void (*cuda_gemv6_launch_fn)(cuda_impl *p, const gemv_set &s, const float *x, int T);
#define GEMV6_NB_MAX 32 /* rows of x one v6 launch takes (four mma column quarters) */
/* the launcher of v6 (nf4_gemv_v6.cu: tensor cores, bf16) with W warps, RT
 * tiles of 16 rows, U 64-blocks in flight, P = 1 for a persistent grid, for
 * 1..GEMV6_NB_MAX rows of x; NULL: not instantiated */
cuda_gemv6_launch_fn cuda_gemv_v6_fn(int W, int RT, int U, int P);

/* v6 stages x in shared memory as bf16 rows of this many bytes (the 16
 * extra spread a warp's 8 row groups over the banks) when T <= 8 rows fit
 * beside the 64 KB table with two blocks per SM still resident: at most
 * ~40 KB of x, one row of in <= 20k at T = 1. */
#define GEMV6_XS_STRIDE(in) (2 * (in) + 16)
#define GEMV6_XS_MAX_BYTES (40 * 1024)
static inline bool gemv6_xs_fits(int64_t T, int64_t in) {
    return T <= 8 && T * GEMV6_XS_STRIDE(in) <= GEMV6_XS_MAX_BYTES;
}

/* op_add_rmsnorm_linear_n fused into v6's x staging (cuda_norm_args). */
#define GEMV6_NORM_NV 8 /* float4 chunks per thread: in <= 8 * 4 * 256, norm.cu's register path */
typedef cuda_norm_args gemv6_norm;
/* The fused v6 launches of a configuration (T <= 8 rows; every weight of
 * the set double-quantised or none): nm != NULL, op_add_rmsnorm_linear_n's
 * add + RMSNorm as the x staging (T rows that gemv6_xs_fits, in <= 4 * 256 *
 * GEMV6_NORM_NV; x unused); glu, the set {gate, up} (equal shapes) into
 * y[0] = silu(x gate^T) * (x up^T) (op_add_rmsnorm_swiglu). NULL: W != 8
 * (the norm's order needs 256 threads). */
typedef void (*cuda_gemv6_fused_fn)(cuda_impl *p, const gemv_set &s, const float *x, const gemv6_norm *nm, bool glu,
                                    int T);
cuda_gemv6_fused_fn cuda_gemv_v6_fused_fn(int W, int RT, int U, int P);

#endif
