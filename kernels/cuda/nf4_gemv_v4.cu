/* NF4 GEMV v4 (decode, 1..8 rows of x): split-K across blocks, so that a
 * decode-sized GEMV launches several waves of blocks with many bytes in
 * flight instead of the half wave v2 gets at 4096 x 4096. nf4_gemv.cu owns
 * the configuration table and the dispatch; element math from
 * kernels/math/nf4.h, as the oracle kernels/cpu/linear_ref.c.
 *
 * Grid (row groups, S). Block (g, s) owns rows g*W*R .. +W*R (R per warp,
 * W warps) over the K range of split s: NF4 blocks [s*nu/S, (s+1)*nu/S) of
 * the nu = in/64 per row (boundaries on 64-element multiples, sizes differing
 * by one block at most). Per block:
 *  1. every lane issues its first U x R independent 16-byte code loads (and
 *     their scale bytes) before anything else, so that their DRAM latency
 *     overlaps step 2;
 *  2. the block's x slice (its K range only, B tokens) is staged into shared
 *     memory once, in v2's conflict-free swizzle within 1024-element local
 *     tiles (float4 j of lane l's chunk at slot j*32 + (l ^ j));
 *  3. one barrier (the code tables), then a loop with no barrier: consume U
 *     chunks per row, load the next U. Lane l owns chunk l of each local tile,
 *     the scale multiplies the 32-code partial dot (as v1, v2, v5).
 * Each x float4 read from shared memory serves R rows, so shared-memory
 * traffic per code is B / (4R) 16-byte reads: at T = 8 with R = 2 it, not
 * DRAM, bounds the kernel on paper (hence the R = 4 configuration).
 * S = 1 stores y directly. S > 1: each block stores its partial sums
 * (B, rows) in a workspace (S, B, out) and takes a ticket from its row
 * group's counter; the block drawing the last ticket adds the S partials in
 * split order 0, 1, .., S-1 (bit-identical whichever block comes last) and
 * resets the counter to 0 for the next launch. No float atomics.
 *
 * Counter protocol under real concurrency (the emulator runs blocks one after
 * another and cannot show it): the partials are plain stores by lane 0 of
 * each warp; __syncthreads orders them before thread 0's __threadfence +
 * atomicAdd (a release at GPU scope, cumulative over what the barrier
 * ordered); the block that reads ticket S-1 has thread 0 fence again (the
 * acquire side), then a barrier, then every thread reads the partials with
 * __ldcg (L2; the non-coherent L1 is bypassed). All S increments happened
 * before the last ticket was drawn, so nobody touches the counter when it is
 * reset; the next launch on the stream sees the reset (kernel boundary).
 *
 * S does not depend on the number of tokens (auto: from the SM count and the
 * shape; either way raised until the x slice of 8 tokens fits), so a row of
 * x gives the same bits alone or in a batch. Needs in % 64 == 0 and 16-byte aligned codes
 * and x (the dispatcher checks). */
#include "cuda_common.cuh"
#include "nf4_gemv_common.cuh"
#include "nf4_tables.cuh"

/* the entry points nf4_gemv.cu calls (declared there too) */
typedef void (*cuda_gemv4_launch_fn)(cuda_impl *p, const gemv_set &s, const float *x, int S);
int cuda_gemv_v4_splits(const cuda_impl *p, int64_t out, int64_t in, int W, int R, int S_cfg);
ps_status cuda_gemv_v4_workspace(cuda_impl *p, int64_t out, int nb, int W, int R, int S, ps_err *err);
cuda_gemv4_launch_fn cuda_gemv_v4_fn(int W, int R, int U, int nb);

#define GEMV4_KT 1024  /* elements of a local x tile: 32 lanes x 32 codes */
#define GEMV4_UNIT 64  /* split boundaries: whole NF4 blocks */
#define GEMV4_S_MAX 64 /* splits at most (workspace: S * T * out floats) */
/* automatic S: aim at this many warps per SM (two waves at 32 resident) ... */
#define GEMV4_TARGET_WARPS 64
/* ... with at least one full local tile per split and an x slice of at most
 * 64 KB at 8 tokens (two tiles), so 3 blocks fit an SM even at T = 8 */
#define GEMV4_AUTO_SMEM ((size_t)64 << 10)
#define GEMV4_NB_MAX 8
/* static shared memory of the kernel, rounded up: s_nf4, s_dq, s_last */
#define GEMV4_STATIC_SMEM 2048

typedef struct {
    int S;
    float *part; /* (S, B, out) partial sums (S > 1) */
    int *cnt;    /* (row groups) tickets drawn; 0 between launches */
} gemv4_split;

/* Registers per thread a configuration needs, roughly (fitted to ptxas for
 * sm_90 so that no instantiation spills): codes and scale parts 6UR,
 * accumulators, partial dots and their x 10RB + 4B, ~32 of addresses and
 * indices. Bounds the compiler through __launch_bounds__: the blocks per SM
 * that many registers allow. */
template <int W, int R, int U, int B>
constexpr int gemv4_min_blocks() {
    int regs = (32 + 6 * U * R + 10 * R * B + 4 * B + 7) / 8 * 8;
    int m = 65536 / (W * 32 * regs);
    return m < 1 ? 1 : m > 16 ? 16 : m;
}

/* Float4s of the x slice [k0, k1) of B tokens into local tiles of GEMV4_KT:
 * float4 f of tile tt (lane f/8's chunk, its float4 f%8) at slot
 * (b*nts + tt)*256 + j*32 + (l ^ j). Eight consecutive threads (fixed l,
 * j = 0..7) write 8 different bank groups: conflict-free. */
template <int B, int W>
__device__ static inline void gemv4_stage_x(float4 *s_x, const float *__restrict__ x, int64_t in, int64_t k0,
                                            int64_t k1, int nts) {
    const int n4 = (int)((k1 - k0) / 4);
#pragma unroll 2
    for (int q = threadIdx.x; q < n4; q += W * 32) {
        int tt = q / (GEMV4_KT / 4), f = q % (GEMV4_KT / 4), l = f / 8, j = f % 8;
        float4 v[B];
#pragma unroll
        for (int b = 0; b < B; b++) v[b] = __ldg((const float4 *)(x + b * in + k0) + q);
#pragma unroll
        for (int b = 0; b < B; b++) s_x[(b * nts + tt) * (GEMV4_KT / 4) + j * 32 + (l ^ j)] = v[b];
    }
}

/* The U x R chunks (and scale parts) of slot group `it`: local chunk
 * (it*U + u)*32 + lane of each row, when inside the split's nc chunks. */
template <int R, int U>
__device__ static inline void gemv4_load(uint4 (&wv)[U][R], gemv_scale_raw (&raw)[U][R], const uint4 *const (&wrow)[R],
                                         const int64_t (&srow)[R], const cuda_nf4_args &w, int64_t cbeg,
                                         int64_t nc, int it, int lane) {
#pragma unroll
    for (int u = 0; u < U; u++) {
        int64_t lc = (int64_t)(it * U + u) * 32 + lane;
#pragma unroll
        for (int r = 0; r < R; r++)
            if (lc < nc) wv[u][r] = __ldg(wrow[r] + cbeg + lc);
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
        int64_t lc = (int64_t)(it * U + u) * 32 + lane;
#pragma unroll
        for (int r = 0; r < R; r++)
            if (lc < nc) raw[u][r] = gemv_scale_load(w, srow[r] + (cbeg + lc) / 2);
    }
}

/* S > 1, after the block stored its partials: the ticket, and for the block
 * with the last one the sum of the S partials in split order (see the file
 * comment for why this is safe under concurrency). */
template <int B, int W, int R>
__device__ static inline void gemv4_reduce(float *__restrict__ y, const gemv4_split &sp, int64_t out, int g) {
    __shared__ int s_last;
    __syncthreads(); /* every warp's partials stored */
    if (threadIdx.x == 0) {
        __threadfence(); /* release: the block's partials before its ticket */
        int ticket = atomicAdd(&sp.cnt[g], 1);
        __threadfence(); /* acquire: the other blocks' partials after their tickets */
        s_last = ticket == sp.S - 1;
    }
    __syncthreads();
    if (!s_last) return;
    const int64_t g0 = (int64_t)g * W * R;
    for (int i = threadIdx.x; i < B * W * R; i += W * 32) {
        int b = i / (W * R);
        int64_t row = g0 + i % (W * R);
        if (row >= out) continue;
        const float *pp = sp.part + b * out + row;
        float sum = __ldcg(pp);
        for (int s = 1; s < sp.S; s++) sum += __ldcg(pp + (int64_t)s * B * out);
        y[b * out + row] = sum;
    }
    if (threadIdx.x == 0) sp.cnt[g] = 0; /* all S tickets drawn: nobody else touches it */
}

template <int B, int W, int R, int U>
__global__ void __launch_bounds__(W * 32, (gemv4_min_blocks<W, R, U, B>()))
nf4_gemv_v4_kernel(gemv_set set, const float *__restrict__ x, gemv4_split sp) {
    cudaTriggerProgrammaticLaunchCompletion();
    __shared__ float s_nf4[16], s_dq[256];
    /* several weights (gemv_set) only without a split: the workspace and the
     * tickets are per row group of one weight */
    const int m = gemv_set_which(set, (int)blockIdx.x), g = (int)blockIdx.x - set.first[m];
    const cuda_nf4_args w = set.w[m];
    float *__restrict__ y = set.y[m];
    extern __shared__ float smem[]; /* x slice: B * nts tiles of GEMV4_KT floats (16-byte aligned) */
    float4 *s_x = (float4 *)smem;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, s = blockIdx.y;
    const int64_t in = w.in, nu = in / GEMV4_UNIT;
    const int64_t k0 = s * nu / sp.S * GEMV4_UNIT, k1 = (s + 1) * nu / sp.S * GEMV4_UNIT;
    const int64_t cbeg = k0 / 32, nc = (k1 - k0) / 32;
    const int nts = (int)((k1 - k0 + GEMV4_KT - 1) / GEMV4_KT), niter = (nts + U - 1) / U;
    const int64_t row0 = ((int64_t)g * W + warp) * R;
    const bool active = row0 < w.out; /* an idle warp still joins the barriers */
    const uint4 *wrow[R];
    int64_t srow[R];
    gemv_rows_at<R>(w, row0, wrow, srow); /* a tail row is computed, not stored */
    uint4 wv[U][R];
    gemv_scale_raw raw[U][R];
    /* frozen weights: in flight while the previous kernel finishes (PDL) and x is staged */
    if (active) gemv4_load<R, U>(wv, raw, wrow, srow, w, cbeg, nc, 0, lane);
    cudaGridDependencySynchronize(); /* x, the split workspace and tickets: after it (cuda_common.cuh) */
    gemv4_stage_x<B, W>(s_x, x, in, k0, k1, nts);
    cuda_nf4_tables_to_smem(s_nf4, s_dq, w.q8 != NULL); /* its barrier also publishes the x slice */

    float acc[R][B];
    gemv_zero<R, B>(acc);
    for (int it = 0; active && it < niter; it++) {
        if (it > 0) gemv4_load<R, U>(wv, raw, wrow, srow, w, cbeg, nc, it, lane);
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int tt = it * U + u; /* local tile: this lane's chunk is chunk `lane` of it */
            if ((int64_t)tt * 32 + lane >= nc) continue;
            const float4 *sx = s_x + (int64_t)tt * (GEMV4_KT / 4);
            float dot[R][B];
            gemv_chunk_dot_swizzled<R, B>(dot, wv[u], sx, (int64_t)nts * (GEMV4_KT / 4), lane, s_nf4);
#pragma unroll
            for (int r = 0; r < R; r++) {
                float sc = gemv_scale_finish(w, s_dq, raw[u][r]);
#pragma unroll
                for (int b = 0; b < B; b++) acc[r][b] += dot[r][b] * sc;
            }
        }
    }
    if (sp.S == 1) {
        gemv_warp_store<R, B>(acc, y, row0, w.out, lane);
        return;
    }
    gemv_warp_store<R, B>(acc, sp.part + (int64_t)s * B * w.out, row0, w.out, lane);
    gemv4_reduce<B, W, R>(y, sp, w.out, g);
}

/* ---- host side ---- */

static int64_t gemv4_groups(int64_t out, int W, int R) { return (out + W * R - 1) / (W * R); }

/* Dynamic shared memory of the x slice for B tokens: whole local tiles of
 * the largest split (a partial tile still spans its 256 swizzled slots). */
static size_t gemv4_smem(int B, int64_t in, int S) {
    int64_t nu = in / GEMV4_UNIT, ks = (nu + S - 1) / S * GEMV4_UNIT;
    int64_t nts = (ks + GEMV4_KT - 1) / GEMV4_KT;
    return sizeof(float) * (size_t)B * (size_t)nts * GEMV4_KT;
}

int cuda_gemv_v4_splits(const cuda_impl *p, int64_t out, int64_t in, int W, int R, int S_cfg) {
    int64_t nu = in / GEMV4_UNIT, cap = nu < GEMV4_S_MAX ? nu : GEMV4_S_MAX, S;
    size_t optin = p->smem_optin > 4096 ? p->smem_optin - 4096 : 0; /* room for the static tables */
    size_t budget = optin;
    if (S_cfg > 0) {
        S = S_cfg;
    } else {
        int64_t groups = gemv4_groups(out, W, R);
        int64_t target = (int64_t)p->sm_count * GEMV4_TARGET_WARPS / W;
        int64_t full = in / GEMV4_KT > 1 ? in / GEMV4_KT : 1; /* at least one full tile each */
        S = (target + groups - 1) / groups;
        if (S > full) S = full;
        if (GEMV4_AUTO_SMEM < budget) budget = GEMV4_AUTO_SMEM;
    }
    if (S > cap) S = cap;
    if (S < 1) S = 1;
    while (gemv4_smem(GEMV4_NB_MAX, in, (int)S) > budget) { /* at 8 tokens: S never depends on T */
        if (S >= cap) return 0;
        S++;
    }
    return (int)S;
}

/* The workspace lives in the backend (cuda_impl), grown on demand like the
 * cuBLAS scratch and never shrunk: the launches that share it are ordered by
 * the backend's one stream, so one buffer of the largest S * T * out serves
 * every weight (per weight it would cost that much for each of the ~224
 * linear layers of a 7B model). Growth happens the first time a larger
 * layer is seen, not per step; failure is PS_ENOMEM through cuda_scratch. */
ps_status cuda_gemv_v4_workspace(cuda_impl *p, int64_t out, int nb, int W, int R, int S, ps_err *err) {
    if (S <= 1) return PS_OK;
    size_t part = sizeof(float) * (size_t)S * (size_t)nb * (size_t)out;
    size_t cnt = sizeof(int) * (size_t)gemv4_groups(out, W, R);
    PS_TRY(cuda_scratch(p, &p->gemv_part, &p->gemv_part_bytes, part, err));
    size_t had = p->gemv_cnt_bytes;
    PS_TRY(cuda_scratch(p, &p->gemv_cnt, &p->gemv_cnt_bytes, cnt, err));
    if (p->gemv_cnt_bytes != had) /* new counters: zero once; every launch leaves them zero */
        CU_TRY(p, cudaMemsetAsync(p->gemv_cnt, 0, p->gemv_cnt_bytes, p->stream));
    return PS_OK;
}

/* S > 1 only for one weight (the dispatcher's rule) */
template <int B, int W, int R, int U>
static void nf4_gemv_v4_launch(cuda_impl *p, const gemv_set &s, const float *x, int S) {
    gemv4_split sp;
    sp.S = S;
    sp.part = (float *)p->gemv_part;
    sp.cnt = (int *)p->gemv_cnt;
    gemv_set set = s;
    dim3 grid((unsigned)gemv_set_blocks(&set, (int64_t)W * R), (unsigned)S);
    int smem = (int)gemv4_smem(B, set.w[0].in, S);
    /* The 48 KB default limit counts the static tables too (~1.1 KB): raise
     * it whenever the total may pass 48 KB (an x slice of exactly 48 KB
     * failed the launch on the H100). */
    static int allowed;
    if (smem + GEMV4_STATIC_SMEM > (48 << 10)) cuda_allow_smem(nf4_gemv_v4_kernel<B, W, R, U>, smem, &allowed);
    cuda_launch(p, nf4_gemv_v4_kernel<B, W, R, U>, grid, W * 32, smem, set, x, sp);
}

#define GEMV4_BY_B(W, R, U)                                                                         \
    {nf4_gemv_v4_launch<1, W, R, U>, nf4_gemv_v4_launch<2, W, R, U>, nf4_gemv_v4_launch<3, W, R, U>, \
     nf4_gemv_v4_launch<4, W, R, U>, nf4_gemv_v4_launch<5, W, R, U>, nf4_gemv_v4_launch<6, W, R, U>, \
     nf4_gemv_v4_launch<7, W, R, U>, nf4_gemv_v4_launch<8, W, R, U>}

/* The instantiated (W, R, U); the configuration table of nf4_gemv.cu names
 * only these. */
static const struct {
    int W, R, U;
    cuda_gemv4_launch_fn fn[8];
} k_gemv4_kernels[] = {
    {4, 1, 4, GEMV4_BY_B(4, 1, 4)}, {4, 1, 8, GEMV4_BY_B(4, 1, 8)}, {4, 2, 2, GEMV4_BY_B(4, 2, 2)},
    {4, 2, 4, GEMV4_BY_B(4, 2, 4)}, {4, 4, 2, GEMV4_BY_B(4, 4, 2)}, {8, 2, 4, GEMV4_BY_B(8, 2, 4)},
};

cuda_gemv4_launch_fn cuda_gemv_v4_fn(int W, int R, int U, int nb) {
    if (nb < 1 || nb > GEMV4_NB_MAX) return NULL;
    for (size_t i = 0; i < sizeof k_gemv4_kernels / sizeof k_gemv4_kernels[0]; i++)
        if (k_gemv4_kernels[i].W == W && k_gemv4_kernels[i].R == R && k_gemv4_kernels[i].U == U)
            return k_gemv4_kernels[i].fn[nb - 1];
    return NULL;
}
