/* NF4 GEMV v6 (decode, 1..32 rows of x): tensor cores, bf16 operands.
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
 * banks. The main loop of v6w8r1u4 at T <= 8 issues 60 instructions per warp
 * and 64-block (16 rows x 64 = 1024 weights: 32 of them decode, 4 mma, 4
 * scale FMAs; tests/gpu/sass.sh KERNEL | tests/gpu/sass_loops.py: the loop
 * with 32 HMMA, two groups of U blocks per trip), 17 weights per
 * issued instruction against ~6 for the f32 GEMVs; the 8
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
 * Fused variants (8 warps, up to 8 rows of x; nf4_gemv.cu decides, tests
 * in test_cuda_linear hold them to the bits of the separate kernels):
 *  - NORM: op_add_rmsnorm_linear_n's residual add + RMSNorm is the x
 *    staging: each block normalises all of x itself (reading x and y from
 *    L2 while its first code loads are in flight) in the order of norm.cu's
 *    register path, and writes its share of x_out and h;
 *  - GLU: the set {gate, up}: a tile's 16 fragment rows are 8 gate rows and
 *    the same 8 up rows, so the thread that sums a gate output also sums its
 *    up output and stores silu(gate) * up (op_add_rmsnorm_swiglu), and the
 *    silu_mul kernel and the g and u round trip go.
 * At batch 1 a layer is then q/k/v (+ norm), rope_store, attention, o,
 * gate/up (+ norm, + silu), down: 6 launches instead of 9.
 *
 * With PDL (cuda_common.cuh) the table fill, the first U steps of codes and
 * their scales happen before the dependency wait: none of them reads what an
 * earlier kernel writes. Needs in % 64 == 0, 8-byte aligned codes and 16-byte
 * aligned x (the dispatcher checks). nf4_gemv.cu owns the configurations. */
#include "cuda_common.cuh"
#include "math/act.h"
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

/* The rows of one tile (a gemv_set block index: 16 RT rows of weight m from
 * row0) that this lane (g, t) reads: rows g and g + 8 of each 16-row part,
 * past `out` clamped (computed, not stored). crow points at the lane's 8
 * bytes of a row's first 64-block.
 *
 * Scales are shared out. The 4 lanes t = 0..3 of a row group g need the
 * same RT x 2 (rows g, g + 8) x U block scales per group of U 64-blocks;
 * slot j = (u RT + r) 2 + h of them is loaded and finished by lane t = j % 4
 * alone (its i = j / 4-th slot) and read by the other three through a
 * shuffle: a quarter of the scale instructions of every lane computing every
 * scale (the SASS of that had ~24 instructions per 64-block on scales, a
 * sixth of the loop). sidx[i]: the block index of this lane's slot i at
 * kb = 0 (row * in / 64 + u; 32 bits, gemv_fast checks the weight's size). */
#define GEMV6_SL(RT, U) ((RT) * (U) / 2)

template <int RT, int U> struct gemv6_tile {
    int m;  /* the weight whose rows these are (GLU: 0, the gate, for the output bounds) */
    int sm; /* the weight of this lane's scale slots (GLU: gate for t even, up for t odd) */
    int64_t row0;
    const uint2 *crow[RT][2];
    uint32_t sidx[GEMV6_SL(RT, U)];
};

/* slot i of lane t: u = (2 i + t / 2) / RT, r = (2 i + t / 2) % RT, h = t % 2 */
template <int RT> __device__ static inline int gemv6_slot_u(int i, int t) { return (2 * i + t / 2) / RT; }

/* GLU (op_add_rmsnorm_swiglu, the set {gate, up} of equal shapes): a tile
 * is 8 RT output rows, and each 16-row part of it holds rows g of the gate
 * (fragment row g) and of the up projection (row g + 8) for the same output
 * row, so one thread ends up with both sums of an output; each row's dot
 * product is computed as it would be in its own weight's tile. */
template <int RT, int U, bool GLU>
__device__ static inline void gemv6_tile_at(gemv6_tile<RT, U> &tl, const gemv_set &set, int tile, int g, int t) {
    static_assert(RT * U % 2 == 0, "4 lanes share a row group's 2 RT U scale slots evenly");
    tl.m = GLU ? 0 : gemv_set_which(set, tile);
    tl.sm = GLU ? t % 2 : tl.m;
    const int64_t out = set.w[tl.m].out, in = set.w[0].in;
    const int rows = GLU ? 8 : 16; /* output rows per 16-row part */
    tl.row0 = (int64_t)(tile - (GLU ? 0 : set.first[tl.m])) * rows * RT;
    const uint32_t nb = (uint32_t)(in / 64);
    /* the weight row of fragment rows g (h = 0) and g + 8 (h = 1) of part r */
    auto row = [&](int r, int h) {
        int64_t rr = tl.row0 + rows * r + g + (GLU ? 0 : 8 * h);
        return rr < out ? rr : out - 1;
    };
#pragma unroll
    for (int r = 0; r < RT; r++)
#pragma unroll
        for (int h = 0; h < 2; h++)
            tl.crow[r][h] = (const uint2 *)(set.w[GLU ? h : tl.m].packed + row(r, h) * (in / 2)) + t;
#pragma unroll
    for (int i = 0; i < GEMV6_SL(RT, U); i++) {
        const int ur = 2 * i + t / 2;
        tl.sidx[i] = (uint32_t)row(ur % RT, t % 2) * nb + (uint32_t)(ur / RT);
    }
}

/* 8 code bytes streamed past L1 (read once: they must not evict x, which
 * every block rereads through L1 when it is not staged, T x 16 bytes per
 * weight row of 16; at T = 8 that is 4x the code bytes), with a 256-byte L2
 * prefetch (the next 64-blocks of the row are the next loads). The emulator:
 * a plain load. */
__device__ static inline uint2 gemv6_ld_codes(const uint2 *p) {
#ifdef __CUDA_ARCH__
    uint2 v;
    asm("ld.global.nc.L1::no_allocate.L2::256B.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
    return v;
#else
    return __ldg(p);
#endif
}

/* One group of U 64-blocks in registers: the code bytes of every row the
 * lane reads, and the raw parts of its scale slots (absmax, or absmax2 and
 * the 8-bit code q when double-quantised: DQ). */
template <int RT, int U> struct gemv6_stage {
    uint2 c[U][RT][2];
    float a[GEMV6_SL(RT, U)];
    uint32_t q[GEMV6_SL(RT, U)];
};

/* Loads the blocks kb .. kb + U - 1 of a tile's rows (those below kend). */
template <int RT, int U, bool DQ>
__device__ static inline void gemv6_load(gemv6_stage<RT, U> &st, const cuda_nf4_args &w,
                                         const gemv6_tile<RT, U> &tl, int kb, int kend, int t) {
#pragma unroll
    for (int u = 0; u < U; u++)
        if (kb + u < kend)
#pragma unroll
            for (int r = 0; r < RT; r++)
#pragma unroll
                for (int h = 0; h < 2; h++) st.c[u][r][h] = gemv6_ld_codes(tl.crow[r][h] + 4 * (kb + u));
#pragma unroll
    for (int i = 0; i < GEMV6_SL(RT, U); i++) {
        const uint32_t b = tl.sidx[i] + (uint32_t)kb;
        st.q[i] = 0; /* a slot past kend is finished too: keep its table index in range */
        if (kb + gemv6_slot_u<RT>(i, t) < kend) {
            if (DQ) st.q[i] = __ldg(w.q8 + b), st.a[i] = __ldg(w.absmax2 + b / 256);
            else st.a[i] = __ldg(w.absmax + b);
        }
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

/* Where a lane's B fragments come from. XS: x staged once per block in
 * shared memory as bf16 pairs (row n at xs + n * xstride bytes; stride
 * 2 in + 16 so the 8 row groups of a warp fall on different banks), two
 * 16-byte loads per 64-block; otherwise from global memory through L1, four
 * float4 loads and 8 conversions per 64-block and column group. The rounding
 * is the same either way. Token column n = 8 q + g past T reads row T - 1:
 * mma columns are independent and those outputs are never stored, so the
 * lanes need neither zeroing nor predicates. */
template <int NH> struct gemv6_xsrc {
    const char *xs;      /* XS (NH == 1): this lane's 32 bytes of block 0 of its row */
    const float *xr[NH]; /* global: x + n in + 16 t of each column group's row n */
};

template <int NH>
__device__ static inline void gemv6_xsrc_at(gemv6_xsrc<NH> &xa, const float *x, const char *xs, int64_t in, int T,
                                            int g, int t) {
#pragma unroll
    for (int q = 0; q < NH; q++) {
        const int64_t n = 8 * q + g < T ? 8 * q + g : T - 1;
        xa.xr[q] = x + n * in + 16 * t;
        if (q == 0) xa.xs = xs + n * GEMV6_XS_STRIDE(in) + 32 * t;
    }
}

/* B fragments of 64-block kb. */
template <int NH, bool XS>
__device__ static inline void gemv6_x_frag(uint32_t (&bf)[NH][4][2], const gemv6_xsrc<NH> &xa, int kb) {
#pragma unroll
    for (int q = 0; q < NH; q++) {
        if (XS) { /* NH == 1 */
            const uint4 lo = *(const uint4 *)(xa.xs + 128 * kb), hi = *(const uint4 *)(xa.xs + 128 * kb + 16);
            bf[q][0][0] = lo.x, bf[q][0][1] = lo.y, bf[q][1][0] = lo.z, bf[q][1][1] = lo.w;
            bf[q][2][0] = hi.x, bf[q][2][1] = hi.y, bf[q][3][0] = hi.z, bf[q][3][1] = hi.w;
        } else {
#pragma unroll
            for (int s = 0; s < 4; s++) {
                float4 v = __ldg((const float4 *)(xa.xr[q] + (int64_t)kb * 64) + s);
                bf[q][s][0] = gemv6_bf16x2(v.x, v.y), bf[q][s][1] = gemv6_bf16x2(v.z, v.w);
            }
        }
    }
}

/* acc += the blocks kb .. kb + nu - 1 of a loaded group (FULL: nu = U, no
 * checks). First each lane finishes its scale slots, then each block takes
 * its row scales from the slots' lanes by shuffle (all lanes, so nu is
 * warp-uniform). */
template <int RT, int U, int NH, bool DQ, bool XS, bool FULL>
__device__ static inline void gemv6_group(float (&acc)[RT][NH][4], const gemv6_stage<RT, U> &st, int nu,
                                          const gemv6_xsrc<NH> &xa, int kb, int lane,
                                          const uint32_t *lut, const float *s_dq, float offset) {
    float sv[GEMV6_SL(RT, U)];
#pragma unroll
    for (int i = 0; i < GEMV6_SL(RT, U); i++) sv[i] = DQ ? ps_nf4_dq_scale(s_dq[st.q[i]], st.a[i], offset) : st.a[i];
    const int lane0 = lane & ~3;
#pragma unroll
    for (int u = 0; u < U; u++) {
        if (!FULL && u >= nu) break;
        uint32_t bf[NH][4][2];
        gemv6_x_frag<NH, XS>(bf, xa, kb + u);
        float sc[RT][2];
#pragma unroll
        for (int r = 0; r < RT; r++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int j = (u * RT + r) * 2 + h;
                sc[r][h] = __shfl_sync(0xffffffffu, sv[j / 4], lane0 | (j % 4));
            }
        gemv6_block<RT, NH>(acc, st.c[u], sc, bf, lut, 4u * (uint32_t)lane);
    }
}

/* Floats of one reduction buffer: the W warps' partial fragments of a tile. */
#define GEMV6_RED_FLOATS(W, RT, NH) ((W) * (RT) * (NH) * 128)

/* Stages 4 floats of x row n (elements 4 k4 .. + 3) as two bf16 pairs. */
__device__ static inline void gemv6_stage4(char *xs, int64_t in, int64_t n, int64_t k4, const float4 &v) {
    *(uint2 *)(xs + n * GEMV6_XS_STRIDE(in) + 8 * k4) = make_uint2(gemv6_bf16x2(v.x, v.y), gemv6_bf16x2(v.z, v.w));
}

/* norm weight chunk i4 of dtype dt (the fused norm's weight keeps its stored dtype) */
__device__ static inline float4 gemv6_ld4_any(const void *w, int dt, int64_t i4) {
    return dt == PS_DT_F16    ? cuda_ld4<PS_DT_F16>(w, i4)
           : dt == PS_DT_BF16 ? cuda_ld4<PS_DT_BF16>(w, i4)
                              : cuda_ld4<PS_DT_F32>(w, i4);
}

/* op_add_rmsnorm_linear_n's norm as the x staging. For each row n < T:
 * s = x + y, inv = 1 / sqrt(mean(s^2) + eps), h = w (s inv), in the order of
 * norm.cu's rmsnorm_vec_kernel (256 threads, thread tid on float4 chunks
 * tid, tid + 256, ...; its chunks past the row add zeros, which leave the
 * sum as it is; cuda_block_sum), so h has the bits of op_add_rmsnorm's, and
 * is staged as bf16 like any x. Every block computes all of it (x and y come
 * from L2, while the first code loads are in flight); block b writes the
 * chunks j = n GEMV6_NORM_NV + k with j % gridDim.x == b of x_out and h, so
 * each element is written once, and no block writes what another reads. */
template <int W>
__device__ static void gemv6_stage_norm(char *xs, const gemv6_norm &nm, int64_t in, int T, float *red) {
    static_assert(W * 32 == 256, "the order of rmsnorm_vec_kernel's 256 threads");
    const int C4 = (int)(in / 4), tid = (int)threadIdx.x;
    for (int n = 0; n < T; n++) {
        const float4 *x4 = (const float4 *)nm.x + (int64_t)n * C4, *y4 = (const float4 *)nm.y + (int64_t)n * C4;
        float4 sv[GEMV6_NORM_NV];
        float ss = 0.0f;
#pragma unroll
        for (int k = 0; k < GEMV6_NORM_NV; k++) {
            const int c = k * 256 + tid;
            if (c >= C4) continue;
            const float4 a = __ldg(x4 + c), b = __ldg(y4 + c);
            sv[k] = make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
            ss += sv[k].x * sv[k].x;
            ss += sv[k].y * sv[k].y;
            ss += sv[k].z * sv[k].z;
            ss += sv[k].w * sv[k].w;
        }
        ss = cuda_block_sum(ss, red);
        const float inv = 1.0f / sqrtf(ss / (float)(4 * C4) + nm.eps);
#pragma unroll
        for (int k = 0; k < GEMV6_NORM_NV; k++) {
            const int c = k * 256 + tid;
            if (c >= C4) continue;
            const float4 wv = gemv6_ld4_any(nm.w, nm.wdt, c);
            const float4 h = make_float4(wv.x * (sv[k].x * inv), wv.y * (sv[k].y * inv), wv.z * (sv[k].z * inv),
                                         wv.w * (sv[k].w * inv));
            gemv6_stage4(xs, in, n, c, h);
            if ((n * GEMV6_NORM_NV + k) % (int)gridDim.x == (int)blockIdx.x) {
                ((float4 *)nm.x_out)[(int64_t)n * C4 + c] = sv[k];
                ((float4 *)nm.h)[(int64_t)n * C4 + c] = h;
            }
        }
    }
}

/* Tiles tile, tile + gridDim.x, ... of the ntiles: one each when the grid is
 * ntiles blocks, several for a persistent grid (as many blocks as fit the
 * chip at once), which fills the table (and stages x) once per block and
 * issues the next tile's first loads before this tile's reduction, so the
 * codes keep streaming across tiles. A tile's arithmetic does not depend on
 * the grid, on XS or on how the set mixes weights: same bits either way.
 * DQ: every weight of the set is double-quantised (else none is; the
 * launcher splits a mixed set). Within a tile each warp walks its 64-blocks
 * in groups of U with two register stages, the next group's loads issued
 * before this group's math (no copies between the stages), and the group
 * that reaches kb1 checked block by block. */
template <int W, int RT, int U, int NH, bool DQ, bool XS, bool NORM, bool GLU>
__global__ void __launch_bounds__(W * 32)
nf4_gemv_v6_kernel(gemv_set set, const float *__restrict__ x, int T, int ntiles, gemv6_norm nm) { /* T <= 8 NH */
    static_assert(!NORM || (XS && NH == 1), "the fused norm is a way of staging x");
    static_assert(!GLU || NH == 1, "the gate/up pairing is built for up to 8 rows of x");
    cudaTriggerProgrammaticLaunchCompletion();
    /* the pair table (GEMV6_LUT_BYTES), two reduction buffers (tile i uses
     * buffer i % 2, so a tile needs one barrier: the readers of buffer i % 2
     * at tile i - 2 passed tile i - 1's barrier before anyone writes it),
     * then (XS) x in bf16 */
    extern __shared__ float smem[];
    uint32_t *lut = (uint32_t *)smem;
    float *red_all = smem + GEMV6_LUT_BYTES / 4;
    char *xs = (char *)(red_all + 2 * GEMV6_RED_FLOATS(W, RT, NH));
    __shared__ float s_dq[256];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int64_t in = set.w[0].in; /* the same for every weight of a set */
    const int nb = (int)(in / 64), kb0 = warp * nb / W, kb1 = (warp + 1) * nb / W;

    int tile = (int)blockIdx.x;
    gemv6_tile<RT, U> tl;
    gemv6_tile_at<RT, U, GLU>(tl, set, tile, g, t);
    gemv6_stage<RT, U> sa, sb;
    gemv6_load<RT, U, DQ>(sa, set.w[tl.sm], tl, kb0, kb1, t); /* frozen weights: in flight first */
    gemv6_fill<W>(lut, s_dq, DQ);                            /* overlaps their latency */
    cudaGridDependencySynchronize();                         /* x is the previous kernel's output (PDL) */
    gemv6_xsrc<NH> xa;
    gemv6_xsrc_at<NH>(xa, x, xs, in, T, g, t);
    if constexpr (NORM) gemv6_stage_norm<W>(xs, nm, in, T, red_all);
    else if (XS) /* x (T <= 8 rows) as bf16 pairs, 4 floats a step */
        for (int64_t i = threadIdx.x; i < T * (in / 4); i += W * 32) {
            const int64_t n = i / (in / 4), k4 = i % (in / 4);
            const float4 v = __ldg((const float4 *)(x + n * in) + k4);
            gemv6_stage4(xs, in, n, k4, v);
        }
    __syncthreads(); /* the table, s_dq and x (and the norm's use of red_all) */

    for (int buf = 0; tile < ntiles; tile += (int)gridDim.x, buf ^= 1) {
        const cuda_nf4_args w = set.w[tl.sm]; /* this lane's scales */
        const int64_t out = set.w[tl.m].out;
        float acc[RT][NH][4];
#pragma unroll
        for (int r = 0; r < RT; r++)
#pragma unroll
            for (int q = 0; q < NH; q++)
#pragma unroll
                for (int i = 0; i < 4; i++) acc[r][q][i] = 0.0f;
        for (int kb = kb0;;) { /* sa holds the group at kb */
            if (kb + U >= kb1) {
                gemv6_group<RT, U, NH, DQ, XS, false>(acc, sa, kb1 - kb, xa, kb, lane, lut, s_dq, w.offset);
                break;
            }
            gemv6_load<RT, U, DQ>(sb, w, tl, kb + U, kb1, t);
            gemv6_group<RT, U, NH, DQ, XS, true>(acc, sa, U, xa, kb, lane, lut, s_dq, w.offset);
            kb += U; /* sb holds the group at kb */
            if (kb + U >= kb1) {
                gemv6_group<RT, U, NH, DQ, XS, false>(acc, sb, kb1 - kb, xa, kb, lane, lut, s_dq, w.offset);
                break;
            }
            gemv6_load<RT, U, DQ>(sa, w, tl, kb + U, kb1, t);
            gemv6_group<RT, U, NH, DQ, XS, true>(acc, sb, U, xa, kb, lane, lut, s_dq, w.offset);
            kb += U;
        }
        float *__restrict__ y = set.y[tl.m];
        const int64_t row0 = tl.row0;
        if (tile + (int)gridDim.x < ntiles) { /* the next tile's first loads, before this one's reduction */
            gemv6_tile_at<RT, U, GLU>(tl, set, tile + (int)gridDim.x, g, t);
            gemv6_load<RT, U, DQ>(sa, set.w[tl.sm], tl, kb0, kb1, t);
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
        if (GLU) /* o' = (r 32 + lane') 2 + i: gate (fragment entry i) and up (i + 2) of one output */
            for (int o2 = threadIdx.x; o2 < RT * 64; o2 += W * 32) {
                int r = o2 / 64, l = (o2 / 2) % 32, i = o2 % 2, o = (r * 32 + l) * 4 + i;
                int n = 2 * (l % 4) + i;
                int64_t rr = row0 + 8 * r + l / 4;
                if (n >= T || rr >= out) continue;
                float gate = 0.0f, up = 0.0f;
                for (int v = 0; v < W; v++) gate += red[v * RT * 128 + o], up += red[v * RT * 128 + o + 2];
                y[(int64_t)n * out + rr] = ps_silu(gate) * up; /* op_silu_mul's expression */
            }
        else
            for (int o = threadIdx.x; o < RT * NH * 128; o += W * 32) { /* o = ((r NH + q) 32 + lane') 4 + i */
                int r = o / (NH * 128), q = (o / 128) % NH, l = (o / 4) % 32, i = o % 4;
                int n = 8 * q + 2 * (l % 4) + (i & 1);
                int64_t rr = row0 + 16 * r + l / 4 + 8 * (i >> 1);
                if (n >= T || rr >= out) continue;
                float sum = 0.0f;
                for (int v = 0; v < W; v++) sum += red[v * RT * NH * 128 + o];
                y[(int64_t)n * out + rr] = sum;
            }
    }
}

/* Blocks of this kernel that fit on the chip at once with smem bytes of
 * shared memory (0: unknown); cached for the last smem asked about. */
template <typename K>
static int gemv6_resident(const cuda_impl *p, K kernel, int threads, size_t smem, size_t *cached_smem, int *cached) {
    if (*cached < 0 || *cached_smem != smem) {
        int per_sm = 0;
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem) != cudaSuccess) {
            (void)cudaGetLastError(); /* not sticky: the launch check must not see it */
            per_sm = 0;
        }
        *cached = per_sm, *cached_smem = smem;
    }
    return *cached * p->sm_count;
}

template <int W, int RT, int U, int NH, bool DQ, bool XS, bool PERSIST, bool NORM = false, bool GLU = false>
static void nf4_gemv_v6_launch_k(cuda_impl *p, const gemv_set &s, const float *x, int T,
                                 const gemv6_norm &nm = gemv6_norm()) {
    auto kernel = nf4_gemv_v6_kernel<W, RT, U, NH, DQ, XS, NORM, GLU>;
    const size_t smem = GEMV6_LUT_BYTES + 2 * GEMV6_RED_FLOATS(W, RT, NH) * sizeof(float) +
                        (XS ? (size_t)T * GEMV6_XS_STRIDE(s.w[0].in) : 0);
    static int allowed, resident = -1; /* the table is above the 48 KB default */
    static size_t resident_smem;
    cuda_allow_smem(kernel, (int)smem, &allowed);
    gemv_set set = s;
    int64_t tiles = GLU ? (s.w[0].out + 8 * RT - 1) / (8 * RT) : gemv_set_blocks(&set, 16 * RT), blocks = tiles;
    if (PERSIST) {
        int fit = gemv6_resident(p, kernel, W * 32, smem, &resident_smem, &resident);
        if (fit > 0 && fit < blocks) blocks = fit;
    }
    cuda_launch(p, kernel, (unsigned)blocks, W * 32, smem, set, x, T, (int)tiles, nm);
}

/* T (1 .. GEMV6_NB_MAX) rows of x: one mma per decoded fragment up to 8,
 * two up to 16, four up to 32. A set whose weights differ in double
 * quantisation goes one weight a launch (same bits). */
template <int W, int RT, int U, bool PERSIST>
static void nf4_gemv_v6_launch(cuda_impl *p, const gemv_set &s, const float *x, int T) {
    const bool dq = s.w[0].q8 != NULL;
    for (int i = 1; i < s.n; i++)
        if ((s.w[i].q8 != NULL) != dq) {
            for (int j = 0; j < s.n; j++) {
                gemv_set one = {{s.w[j]}, {s.y[j]}, {0}, 1};
                nf4_gemv_v6_launch<W, RT, U, PERSIST>(p, one, x, T);
            }
            return;
        }
    const bool xs = gemv6_xs_fits(T, s.w[0].in);
    if (T <= 8) {
        if (dq) xs ? nf4_gemv_v6_launch_k<W, RT, U, 1, true, true, PERSIST>(p, s, x, T)
                   : nf4_gemv_v6_launch_k<W, RT, U, 1, true, false, PERSIST>(p, s, x, T);
        else xs ? nf4_gemv_v6_launch_k<W, RT, U, 1, false, true, PERSIST>(p, s, x, T)
                : nf4_gemv_v6_launch_k<W, RT, U, 1, false, false, PERSIST>(p, s, x, T);
    } else if (T <= 16) {
        dq ? nf4_gemv_v6_launch_k<W, RT, U, 2, true, false, PERSIST>(p, s, x, T)
           : nf4_gemv_v6_launch_k<W, RT, U, 2, false, false, PERSIST>(p, s, x, T);
    } else {
        dq ? nf4_gemv_v6_launch_k<W, RT, U, 4, true, false, PERSIST>(p, s, x, T)
           : nf4_gemv_v6_launch_k<W, RT, U, 4, false, false, PERSIST>(p, s, x, T);
    }
}

/* The fused launches (the caller checked the conditions of
 * cuda_gemv_v6_fused_fn): NORM, the add + RMSNorm as the x staging (nm; x
 * for the kernel's pointer set-up is then h, a valid address it never reads
 * as x); GLU, the set {gate, up} into silu(gate) * up. */
template <int W, int RT, int U, bool PERSIST>
static void nf4_gemv_v6_launch_fused(cuda_impl *p, const gemv_set &s, const float *x, const gemv6_norm *nm, bool glu,
                                     int T) {
    const bool dq = s.w[0].q8 != NULL, xs = gemv6_xs_fits(T, s.w[0].in);
    const gemv6_norm none = gemv6_norm();
#define GEMV6_F(DQ, XS, NORM, GLU) nf4_gemv_v6_launch_k<W, RT, U, 1, DQ, XS, PERSIST, NORM, GLU>(p, s, NORM ? nm->h : x, T, \
                                                                                              NORM ? *nm : none)
    if (nm) dq ? (glu ? GEMV6_F(true, true, true, true) : GEMV6_F(true, true, true, false))
               : (glu ? GEMV6_F(false, true, true, true) : GEMV6_F(false, true, true, false));
    else if (xs) dq ? GEMV6_F(true, true, false, true) : GEMV6_F(false, true, false, true);
    else dq ? GEMV6_F(true, false, false, true) : GEMV6_F(false, false, false, true);
#undef GEMV6_F
}

/* The fused launcher of a configuration; none for W != 8. */
template <int W, int RT, int U, bool PERSIST> static cuda_gemv6_fused_fn gemv6_fused_launcher() {
    if constexpr (W == 8) return nf4_gemv_v6_launch_fused<W, RT, U, PERSIST>;
    else return NULL;
}

static const struct {
    int W, RT, U, P;
    cuda_gemv6_launch_fn fn;
    cuda_gemv6_fused_fn fused; /* W = 8 only */
} k_gemv6_kernels[] = {
#define GEMV6_K(W, RT, U, P) {W, RT, U, P, nf4_gemv_v6_launch<W, RT, U, P != 0>, gemv6_fused_launcher<W, RT, U, P != 0>()}
    GEMV6_K(8, 1, 2, 0), GEMV6_K(8, 1, 4, 0), GEMV6_K(8, 2, 2, 0), GEMV6_K(4, 1, 4, 0),
    GEMV6_K(4, 2, 4, 0), GEMV6_K(8, 1, 2, 1), GEMV6_K(8, 1, 4, 1), GEMV6_K(8, 2, 2, 1),
#undef GEMV6_K
};

static int gemv6_index(int W, int RT, int U, int P) {
    for (int i = 0; i < (int)(sizeof k_gemv6_kernels / sizeof k_gemv6_kernels[0]); i++)
        if (k_gemv6_kernels[i].W == W && k_gemv6_kernels[i].RT == RT && k_gemv6_kernels[i].U == U &&
            k_gemv6_kernels[i].P == P)
            return i;
    return -1;
}

cuda_gemv6_launch_fn cuda_gemv_v6_fn(int W, int RT, int U, int P) {
    int i = gemv6_index(W, RT, U, P);
    return i < 0 ? NULL : k_gemv6_kernels[i].fn;
}

cuda_gemv6_fused_fn cuda_gemv_v6_fused_fn(int W, int RT, int U, int P) {
    int i = gemv6_index(W, RT, U, P);
    return i < 0 ? NULL : k_gemv6_kernels[i].fused;
}
