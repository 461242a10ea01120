/* NF4 GEMV v6 (decode, 1..16 rows of x): tensor cores, bf16 operands.
 *
 * Why: ncu on the H100 found the f32 GEMVs (v1-v5) bound by instruction
 * issue, not memory, and the SASS of the default one (tests/gpu/sass.sh)
 * has ~5.3 instructions and ~1.5 shared-memory wavefronts per weight element
 * (a byte permute, a table load and an FMA per element, plus x from shared
 * memory). Here the multiply-add goes to mma.sync m16n8k16 (one instruction
 * per 16 x 16 weights and up to 8 tokens), and the decode is one byte
 * permute and one conflict-free shared load per TWO elements: the table maps
 * a code byte (two codes) to the bf16 pair of their NF4 values, with one copy
 * per lane so that 32 lanes looking up 32 different bytes hit 32 different
 * banks. About 2.8 instructions and 0.6 wavefronts per element (SASS); the 8
 * token columns of an mma cost the same as one; 9..16 rows of x take a
 * second mma per decoded fragment and 17..32 four (NH = 2 or 4 groups of 8
 * columns), so up to 32 tokens read the weights once: a decode batch of 32
 * needs no dequantised copy for cuBLAS (which writes and reads ~4x the NF4
 * bytes in bf16 every step).
 *
 * Numerics (not the f32 path's): y[n][r] = sum over 64-blocks b of
 * scale(r, b) * sum_{k in b} bf16(code value) * bf16(x[n][k]), the inner sum
 * accumulated in f32 by the tensor cores, the outer in f32 FMAs - the
 * compute-dtype semantics of bitsandbytes' 4-bit inference with bf16
 * (expected rel. error vs f32 ~2e-3). test_cuda_linear checks it against the
 * f32 oracle and, tightly, against a host emulation of exactly this rounding.
 * Opt-in (PS_CUDA_GEMV=v6...) until timed on a GPU.
 *
 * Layout. Block = W warps on one tile of 16 * RT rows; warp w takes the
 * 64-blocks [w nb / W, (w + 1) nb / W) of the nb = in / 64 per row and U of
 * them in flight. Lane (g = lane / 4, t = lane % 4) loads 8 code bytes of
 * rows g and g + 8 of each row tile per 64-block: bytes 8t .. 8t + 7, i.e.
 * elements 16t .. 16t + 15 of the block. The mma's k index is a permutation
 * of the block's elements (any permutation applied to A and B alike gives
 * the same dot product): in k-step s (0..3), A's k = 2t, 2t+1 are elements
 * 16t + 4s + {0, 1} (code byte 2s) and k = 2t + 8, 2t + 9 are elements
 * 16t + 4s + {2, 3} (byte 2s + 1), so B's lane (n = g, t) supplies x[n][16t +
 * 4s .. + 4): one float4, two bf16 pairs. All of a k-step lies in one
 * 64-block, so the 4 steps accumulate the block's partial dot in f32 and one
 * FMA per output applies the block scale. The W warps' partial sums meet in
 * shared memory (two buffers after the table, alternating between tiles)
 * and are added in warp order: the bits do not depend on T (each output
 * column is its own dot product) nor on the grid (one tile per block, or a
 * persistent grid looping over them).
 *
 * With PDL (cuda_common.cuh) the table fill, the first U steps of codes and
 * their scales happen before the dependency wait: none of them reads what an
 * earlier kernel writes. Needs in % 64 == 0, 8-byte aligned codes and 16-byte
 * aligned x (the dispatcher checks). nf4_gemv.cu owns the configurations. */
#include "cuda_common.cuh"
#include "nf4_gemv_common.cuh"
#include "nf4_tables.cuh"

/* The pair table: entry e (a code byte) of lane l at byte e * 256 + 4 l, so
 * one byte permute of the code word and the lane offset makes the address.
 * 64 KB, half of each 256-byte row unused (the other half would need a shift
 * per lookup). */
#define GEMV6_LUT_BYTES (256 * 256)

/* Two floats as a bf16 pair, lo in the low half (round to nearest even, the
 * shared rounding of kernels/math/half.h on the host). */
__device__ static inline uint32_t gemv6_bf16x2(float lo, float hi) {
#ifdef __CUDA_ARCH__
    uint32_t r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
#else
    return (uint32_t)ps_f32_to_bf16(lo) | (uint32_t)ps_f32_to_bf16(hi) << 16;
#endif
}

/* d (16 x 8, f32) = A (16 x 16, bf16, row-major fragments) B (16 x 8, bf16,
 * column-major) + c, the fragment layout of PTX mma.m16n8k16 (lane = 4 g + t:
 * a[0] = A[g][2t, 2t+1], a[1] = A[g+8][2t, 2t+1], a[2] = A[g][2t+8, 2t+9],
 * a[3] = A[g+8][2t+8, 2t+9]; b[0] = B[2t, 2t+1][g], b[1] = B[2t+8, 2t+9][g];
 * c/d[0, 1] = D[g][2t, 2t+1], c/d[2, 3] = D[g+8][2t, 2t+1]). Off the device
 * (the CPU emulator of tests/gpu/emu) the same sum through warp shuffles. */
__device__ static inline void gemv6_mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                        const float (&c)[4]) {
#ifdef __CUDA_ARCH__
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%10, %11, %12, %13};"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]),
                   "f"(c[2]), "f"(c[3]));
#else
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    float s[4] = {c[0], c[1], c[2], c[3]};
    for (int j = 0; j < 4; j++) { /* k pairs 2j, 2j+1 and 2j+8, 2j+9 come from lane 4 g' + j */
        uint32_t ag[4], bn[2][2];
        for (int i = 0; i < 4; i++) ag[i] = __shfl_sync(0xffffffffu, a[i], 4 * g + j);
        for (int q = 0; q < 2; q++)
            for (int i = 0; i < 2; i++) bn[q][i] = __shfl_sync(0xffffffffu, b[i], 4 * (2 * t + q) + j);
        for (int i = 0; i < 4; i++) { /* output i: row g (+8 for i >= 2), column 2t + (i & 1) */
            const uint32_t *bc = bn[i & 1];
            for (int h = 0; h < 2; h++)      /* k in the low (0..7) or high (8..15) half */
                for (int e = 0; e < 2; e++) { /* the pair's element */
                    uint32_t av = ag[(i >> 1) + 2 * h], bv = bc[h];
                    s[i] += ps_bf16_to_f32((uint16_t)(av >> (16 * e))) * ps_bf16_to_f32((uint16_t)(bv >> (16 * e)));
                }
        }
    }
    for (int i = 0; i < 4; i++) d[i] = s[i];
#endif
}

/* Fills the pair table and s_dq; the caller's barrier publishes them. Entry
 * e holds the bf16 values of its high nibble (the earlier element, low half)
 * and low nibble; its 32 identical copies take 8 16-byte stores. Thread i
 * stores copies 4 (i % 8) .. + 3 of entries e = i / 8 + 4 W k: the low
 * nibble of e, (i / 8) % 16, is the same for all its k and the high one,
 * (i / 8) / 16 + k W / 4, is the same across a warp, so each store costs a
 * uniform constant load, a convert and the store. Shared memory only. */
template <int W>
__device__ static inline void gemv6_fill(uint32_t *lut, float *s_dq, bool dq) {
    static_assert(W % 4 == 0, "entries e = i / 8 + 4 W k keep their low nibble only when 4 W % 16 == 0");
    const int f = threadIdx.x / 8;
    const float second = cuda_nf4_code[f % 16];
    uint4 *dst = (uint4 *)lut + f * 16 + threadIdx.x % 8;
#pragma unroll
    for (int k = 0; k < 256 / (4 * W); k++) {
        uint32_t v = gemv6_bf16x2(cuda_nf4_code[f / 16 + k * W / 4], second);
        dst[k * 4 * W * 16] = make_uint4(v, v, v, v);
    }
    if (dq)
        for (int i = threadIdx.x; i < 256; i += W * 32) s_dq[i] = cuda_dq_code[i];
}

/* The code bytes and scale parts of U 64-blocks from kb (those below kend)
 * for rows g and g + 8 of each row tile: crow points at this lane's 8 bytes
 * of a row's first block, srow is the row's first block index. */
/* The rows of one tile (a gemv_set block index: 16 RT rows of weight m from
 * row0) that this lane (g, t) loads: rows g and g + 8 of each 16-row part,
 * past `out` clamped (computed, not stored). crow points at the lane's 8
 * bytes of a row's first 64-block, srow is the row's first block index. */
template <int RT> struct gemv6_tile {
    int m;
    int64_t row0;
    const uint2 *crow[RT][2];
    int64_t srow[RT][2];
};

template <int RT>
__device__ static inline void gemv6_tile_at(gemv6_tile<RT> &tl, const gemv_set &set, int tile, int g, int t) {
    tl.m = gemv_set_which(set, tile);
    const cuda_nf4_args &w = set.w[tl.m];
    tl.row0 = (int64_t)(tile - set.first[tl.m]) * 16 * RT;
#pragma unroll
    for (int r = 0; r < RT; r++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int64_t rr = tl.row0 + 16 * r + g + 8 * h;
            rr = rr < w.out ? rr : w.out - 1;
            tl.crow[r][h] = (const uint2 *)(w.packed + rr * (w.in / 2)) + t;
            tl.srow[r][h] = rr * (w.in / 64);
        }
}

/* 8 code bytes streamed past L1 (read once: they must not evict x, which
 * every block rereads through L1, T x 16 bytes per weight row of 16; at
 * T = 8 that is 4x the code bytes), with a 256-byte L2 prefetch (the next
 * 64-blocks of the row are the next loads). The emulator: a plain load. */
__device__ static inline uint2 gemv6_ld_codes(const uint2 *p) {
#ifdef __CUDA_ARCH__
    uint2 v;
    asm("ld.global.nc.L1::no_allocate.L2::256B.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
    return v;
#else
    return __ldg(p);
#endif
}

/* The code bytes and scale parts of U 64-blocks from kb (those below kend)
 * of a tile's rows. */
template <int RT, int U>
__device__ static inline void gemv6_load(uint2 (&cw)[U][RT][2], gemv_scale_raw (&sr)[U][RT][2],
                                         const cuda_nf4_args &w, const gemv6_tile<RT> &tl, int kb, int kend) {
#pragma unroll
    for (int u = 0; u < U; u++)
        if (kb + u < kend)
#pragma unroll
            for (int r = 0; r < RT; r++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    cw[u][r][h] = gemv6_ld_codes(tl.crow[r][h] + 4 * (kb + u)); /* 32 bytes a block */
                    sr[u][r][h] = gemv_scale_load(w, tl.srow[r][h] + kb + u);
                }
}

/* The pair-table word at byte offset off (in the SASS of sm_90 one LDS
 * [R+UR]: the table base stays in a uniform register). */
__device__ static inline uint32_t gemv6_lut_at(const uint32_t *lut, uint32_t off) {
    return *(const uint32_t *)((const char *)lut + off);
}

/* acc += one 64-block of every row tile against the B fragments of each
 * half of 8 token columns (the A fragment decoded once for both). */
template <int RT, int NH>
__device__ static inline void gemv6_block(float (&acc)[RT][NH][4], const uint2 (&cw)[RT][2],
                                          const float (&sc)[RT][2], const uint32_t (&bf)[NH][4][2],
                                          const uint32_t *lut, uint32_t lane4) {
    const float zero[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int r = 0; r < RT; r++) {
        float part[NH][4];
#pragma unroll
        for (int s = 0; s < 4; s++) { /* bytes 2s, 2s + 1 of each row's 8 */
            uint32_t a[4];
#pragma unroll
            for (int h = 0; h < 2; h++) { /* row g, row g + 8 */
                uint32_t word = s < 2 ? cw[r][h].x : cw[r][h].y, j = 2 * (s & 1);
                a[h] = gemv6_lut_at(lut, __byte_perm(word, lane4, 0x5504u | (j << 4)));
                a[h + 2] = gemv6_lut_at(lut, __byte_perm(word, lane4, 0x5504u | ((j + 1) << 4)));
            }
#pragma unroll
            for (int q = 0; q < NH; q++) {
                if (s == 0) gemv6_mma(part[q], a, bf[q][s], zero);
                else gemv6_mma(part[q], a, bf[q][s], part[q]);
            }
        }
#pragma unroll
        for (int q = 0; q < NH; q++)
#pragma unroll
            for (int i = 0; i < 4; i++) acc[r][q][i] += part[q][i] * sc[r][i >> 1];
    }
}

/* Floats of one reduction buffer: the W warps' partial fragments of a tile. */
#define GEMV6_RED_FLOATS(W, RT, NH) ((W) * (RT) * (NH) * 128)

/* Whether any weight of the set is double-quantised (s_dq is then needed). */
__device__ static inline bool gemv6_any_dq(const gemv_set &set) {
    bool dq = false;
    for (int i = 0; i < set.n; i++) dq |= set.w[i].q8 != NULL;
    return dq;
}

/* Tiles tile, tile + gridDim.x, ... of the ntiles: one each when the grid is
 * ntiles blocks, several for a persistent grid (as many blocks as fit the
 * chip at once), which fills the table once per block and issues the next
 * tile's first loads before this tile's reduction, so the codes keep
 * streaming across tiles. A tile's arithmetic does not depend on the grid:
 * same bits either way. */
template <int W, int RT, int U, int NH>
__global__ void __launch_bounds__(W * 32)
nf4_gemv_v6_kernel(gemv_set set, const float *__restrict__ x, int T, int ntiles) { /* T <= 8 NH */
    cudaTriggerProgrammaticLaunchCompletion();
    /* the pair table (GEMV6_LUT_BYTES), then two reduction buffers: tile i
     * uses buffer i % 2, so a tile needs one barrier (the readers of buffer
     * i % 2 at tile i - 2 passed tile i - 1's barrier before anyone writes it) */
    extern __shared__ float smem[];
    uint32_t *lut = (uint32_t *)smem;
    float *red_all = smem + GEMV6_LUT_BYTES / 4;
    __shared__ float s_dq[256];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int64_t in = set.w[0].in; /* the same for every weight of a set */
    const int nb = (int)(in / 64), kb0 = warp * nb / W, kb1 = (warp + 1) * nb / W;

    int tile = (int)blockIdx.x;
    gemv6_tile<RT> tl;
    gemv6_tile_at<RT>(tl, set, tile, g, t);
    uint2 cw[U][RT][2];
    gemv_scale_raw sr[U][RT][2];
    const cuda_nf4_args w0 = set.w[tl.m];
    gemv6_load<RT, U>(cw, sr, w0, tl, kb0, kb1);         /* frozen weights: in flight first */
    gemv6_fill<W>(lut, s_dq, gemv6_any_dq(set));       /* overlaps their latency */
    cudaGridDependencySynchronize();                    /* x is the previous kernel's output (PDL) */
    __syncthreads();                                    /* the table and s_dq */

    const uint32_t lane4 = 4u * (uint32_t)lane;
    /* B lane (n = 8 q + g, t) of half q: x[n][64 kb + 16 t + 4 s ..] */
    const float *xr = x + (int64_t)g * in + 16 * t;
    for (int buf = 0; tile < ntiles; tile += (int)gridDim.x, buf ^= 1) {
        const cuda_nf4_args w = set.w[tl.m];
        float acc[RT][NH][4];
#pragma unroll
        for (int r = 0; r < RT; r++)
#pragma unroll
            for (int q = 0; q < NH; q++)
#pragma unroll
                for (int i = 0; i < 4; i++) acc[r][q][i] = 0.0f;
        for (int kb = kb0; kb < kb1; kb += U) {
            uint2 cn[U][RT][2];
            gemv_scale_raw sn[U][RT][2];
            if (kb + U < kb1) gemv6_load<RT, U>(cn, sn, w, tl, kb + U, kb1); /* the next U, in flight */
#pragma unroll
            for (int u = 0; u < U; u++) {
                if (kb + u >= kb1) break;
                uint32_t bf[NH][4][2];
#pragma unroll
                for (int q = 0; q < NH; q++)
#pragma unroll
                    for (int s = 0; s < 4; s++) {
                        bf[q][s][0] = bf[q][s][1] = 0u;
                        if (8 * q + g < T) { /* columns past T stay zero */
                            float4 v = __ldg((const float4 *)(xr + (int64_t)8 * q * in + (int64_t)(kb + u) * 64) + s);
                            bf[q][s][0] = gemv6_bf16x2(v.x, v.y), bf[q][s][1] = gemv6_bf16x2(v.z, v.w);
                        }
                    }
                float sc[RT][2];
#pragma unroll
                for (int r = 0; r < RT; r++)
#pragma unroll
                    for (int h = 0; h < 2; h++) sc[r][h] = gemv_scale_finish(w, s_dq, sr[u][r][h]);
                gemv6_block<RT, NH>(acc, cw[u], sc, bf, lut, lane4);
            }
            if (kb + U < kb1)
#pragma unroll
                for (int u = 0; u < U; u++)
#pragma unroll
                    for (int r = 0; r < RT; r++)
#pragma unroll
                        for (int h = 0; h < 2; h++) cw[u][r][h] = cn[u][r][h], sr[u][r][h] = sn[u][r][h];
        }
        float *__restrict__ y = set.y[tl.m];
        const int64_t row0 = tl.row0;
        if (tile + (int)gridDim.x < ntiles) { /* the next tile's first loads, before this one's reduction */
            gemv6_tile_at<RT>(tl, set, tile + (int)gridDim.x, g, t);
            const cuda_nf4_args wn = set.w[tl.m];
            gemv6_load<RT, U>(cw, sr, wn, tl, kb0, kb1);
        }

        /* the W warps' partials, added in warp order */
        float *red = red_all + buf * GEMV6_RED_FLOATS(W, RT, NH);
#pragma unroll
        for (int r = 0; r < RT; r++)
#pragma unroll
            for (int q = 0; q < NH; q++)
#pragma unroll
                for (int i = 0; i < 4; i++) red[(((warp * RT + r) * NH + q) * 32 + lane) * 4 + i] = acc[r][q][i];
        __syncthreads();
        for (int o = threadIdx.x; o < RT * NH * 128; o += W * 32) { /* o = ((r NH + q) 32 + lane') 4 + i */
            int r = o / (NH * 128), q = (o / 128) % NH, l = (o / 4) % 32, i = o % 4;
            int n = 8 * q + 2 * (l % 4) + (i & 1);
            int64_t rr = row0 + 16 * r + l / 4 + 8 * (i >> 1);
            if (n >= T || rr >= w.out) continue;
            float sum = 0.0f;
            for (int v = 0; v < W; v++) sum += red[v * RT * NH * 128 + o];
            y[(int64_t)n * w.out + rr] = sum;
        }
    }
}

/* Blocks of this kernel that fit on the chip at once (0: unknown). */
template <typename K> static int gemv6_resident(const cuda_impl *p, K kernel, int threads, size_t smem, int *cached) {
    if (*cached < 0) {
        int per_sm = 0;
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem) != cudaSuccess) {
            (void)cudaGetLastError(); /* not sticky: the launch check must not see it */
            per_sm = 0;
        }
        *cached = per_sm;
    }
    return *cached * p->sm_count;
}

template <int W, int RT, int U, int NH, bool PERSIST>
static void nf4_gemv_v6_launch_nh(cuda_impl *p, const gemv_set &s, const float *x, int T) {
    auto kernel = nf4_gemv_v6_kernel<W, RT, U, NH>;
    const size_t smem = GEMV6_LUT_BYTES + 2 * GEMV6_RED_FLOATS(W, RT, NH) * sizeof(float);
    static int allowed, resident = -1; /* the table is above the 48 KB default */
    cuda_allow_smem(kernel, (int)smem, &allowed);
    gemv_set set = s;
    int64_t tiles = gemv_set_blocks(&set, 16 * RT), blocks = tiles;
    if (PERSIST) {
        int fit = gemv6_resident(p, kernel, W * 32, smem, &resident);
        if (fit > 0 && fit < blocks) blocks = fit;
    }
    cuda_launch(p, kernel, (unsigned)blocks, W * 32, smem, set, x, T, (int)tiles);
}

/* T (1 .. GEMV6_NB_MAX) rows of x: one mma per decoded fragment up to 8,
 * two up to 16, four up to 32 */
template <int W, int RT, int U, bool PERSIST>
static void nf4_gemv_v6_launch(cuda_impl *p, const gemv_set &s, const float *x, int T) {
    if (T <= 8) nf4_gemv_v6_launch_nh<W, RT, U, 1, PERSIST>(p, s, x, T);
    else if (T <= 16) nf4_gemv_v6_launch_nh<W, RT, U, 2, PERSIST>(p, s, x, T);
    else nf4_gemv_v6_launch_nh<W, RT, U, 4, PERSIST>(p, s, x, T);
}

static const struct {
    int W, RT, U, P;
    cuda_gemv6_launch_fn fn;
} k_gemv6_kernels[] = {
    {8, 1, 2, 0, nf4_gemv_v6_launch<8, 1, 2, false>}, {8, 1, 4, 0, nf4_gemv_v6_launch<8, 1, 4, false>},
    {8, 2, 2, 0, nf4_gemv_v6_launch<8, 2, 2, false>}, {4, 1, 4, 0, nf4_gemv_v6_launch<4, 1, 4, false>},
    {4, 2, 4, 0, nf4_gemv_v6_launch<4, 2, 4, false>}, {8, 1, 2, 1, nf4_gemv_v6_launch<8, 1, 2, true>},
    {8, 1, 4, 1, nf4_gemv_v6_launch<8, 1, 4, true>},  {8, 2, 2, 1, nf4_gemv_v6_launch<8, 2, 2, true>},
};

cuda_gemv6_launch_fn cuda_gemv_v6_fn(int W, int RT, int U, int P) {
    for (size_t i = 0; i < sizeof k_gemv6_kernels / sizeof k_gemv6_kernels[0]; i++)
        if (k_gemv6_kernels[i].W == W && k_gemv6_kernels[i].RT == RT && k_gemv6_kernels[i].U == U &&
            k_gemv6_kernels[i].P == P)
            return k_gemv6_kernels[i].fn;
    return NULL;
}
