/* Attention on CUDA: softmax(q k^T * scale) v in f32, as
 * kernels/cpu/ops_attention.c computes it in one pass over stored scores.
 * Three kernels:
 *  - decode (paged or dense): one block per (token, head); the keys are cut
 *    into parts (at most P, P from H and the chip only), each part walked in
 *    tiles of 64 keys with a whole tile of K and V loaded before use, scores
 *    by groups of 8 lanes, softmax max and sum per tile, then V weighed with
 *    lanes over the head dim; the parts are merged in order. Used for decode
 *    steps and the dense encoder attention (one part).
 *  - decode split (flash-decoding): the same parts, one block each, merged
 *    by the last block of the (token, head): the same bits as the decode
 *    kernel. Chosen automatically for decode when T * H < 2 * SMs.
 *  - prefill (paged): a block takes 16 consecutive tokens of one head; the
 *    tokens are walked as runs of the same sequence, and each run's keys are
 *    staged 32 at a time in shared memory and shared by all its queries;
 *    an online (streaming) softmax over the key tiles.
 * All are correct for any token/sequence layout (tests force each one); the
 * choice is speed only. GQA: query head h reads KV head h / (H / n_kv).
 * Metadata is read on the device; a bad sequence, position or page id is
 * flagged (PS_EINVAL at the next sync), its output row is zero, and no memory
 * outside the cache is read. Head dim up to 256.
 * The paged cache is F32, F16 or BF16 (the kernels' DT parameter): 16-bit
 * entries are widened exactly as they are loaded (cuda_ld / cuda_ld4: the
 * half.h conversions, or the equal conversion instruction), then the same
 * f32 math; so attention over a 16-bit cache gives the bits of attention
 * over an F32 cache holding the widened values (both aligned: the same
 * vector path), for half the bytes read. q, the output and the split
 * partials stay f32. */
#include <limits.h>

#include "cuda_common.cuh"

#define ATT_THREADS 128
#define ATT_WARPS (ATT_THREADS / 32)
#define ATT_DPL 8 /* head-dim elements per lane (prefill): D <= 256 */
#define ATT_DMAX (32 * ATT_DPL)
#define DEC_THREADS 256 /* decode kernels: 8 warps share the keys of one (token, head) part */
#define DEC_WARPS (DEC_THREADS / 32)
#define PF_QT 16  /* queries per block (prefill kernel), 4 per warp */
#define PF_QW (PF_QT / ATT_WARPS)
#define PF_KT 32  /* keys per shared-memory tile: one per lane */

__device__ static inline float att_warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ static inline float att_warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* ---- key sources for the decode kernel: off(j) = row offset of key j in K and V ---- */

/* Paged cache: entry j of this token's sequence. */
struct att_paged {
    const void *K, *V; /* F32, F16 or BF16 (the kernel's DT); offsets in elements */
    const int32_t *bt; /* this sequence's block-table row */
    int page_size;
    int64_t row, off0; /* elements per slot, offset of this KV head */
    __device__ int64_t off(int j) const {
        return ((int64_t)bt[j / page_size] * page_size + j % page_size) * row + off0;
    }
};

/* Dense (B, T, H, D) tensors: key j of this batch item and head. */
struct att_dense {
    const float *K, *V;
    int64_t first, stride; /* offset of key 0, floats between keys */
    __device__ int64_t off(int j) const { return first + j * stride; }
};

/* Checks one token's metadata; returns its kv length, or 0 (flagged, output zeroed). */
__device__ static int att_token_len(const int32_t *tok_seq, const int32_t *tok_kv_pos,
                                    const int32_t *bt_all, int t, int n_seqs, int max_pages,
                                    int page_size, int n_pages, cuda_flag *flag) {
    int seq = tok_seq[t], pos = tok_kv_pos[t];
    if (seq < 0 || seq >= n_seqs || pos < 0 || pos / page_size >= max_pages) {
        cuda_raise(flag, CUDA_FLAG_ATTN_META, t, seq, pos);
        return 0;
    }
    const int32_t *bt = bt_all + (int64_t)seq * max_pages;
    for (int pg = 0; pg <= pos / page_size; pg++)
        if (bt[pg] < 0 || bt[pg] >= n_pages) {
            cuda_raise(flag, CUDA_FLAG_ATTN_PAGE, bt[pg], n_pages, t);
            return 0;
        }
    return pos + 1;
}

typedef struct {
    float *out;
    const float *q;
    const void *K, *V; /* the cache, F32, F16 or BF16 (the kernel's DT) */
    const int32_t *tok_seq, *tok_kv_pos, *bt;
    int T, H, n_kv, D, n_seqs, max_pages, page_size, n_pages;
    float scale;
    cuda_flag *flag;
} att_paged_args;

/* ---- decode: key parts, two phases per tile ----
 * Why not one online-softmax update per key (the previous kernel): every key
 * then needs a 5-step shuffle reduction and a rescale before the next can be
 * used, and the block table lookup sits in front of each K load, so a block
 * has few bytes in flight and a long dependent chain per key. Here a block
 * walks its keys in tiles of ATT_TILE:
 *  - the row offsets of a tile (block table lookups) are computed one tile
 *    ahead into shared memory;
 *  - phase 1: groups of 8 lanes own keys (2 per group, 64 per tile), each
 *    lane loads NC float4 of every K row it owns, and in the same burst the
 *    V rows it will weigh in phase 2: a whole tile of K and V (64 KB at
 *    D = 128) is requested before the first use. A score needs a 3-step
 *    shuffle within the 8 lanes;
 *  - the tile max and sum come from one value per warp through shared
 *    memory (two barriers per tile, buffers alternate between tiles so no
 *    third barrier is needed), then phase 2 weighs the V rows already in
 *    registers (lanes over D, groups over keys).
 * Keys of a (token, head) are cut into at most P parts of at least
 * ATT_PART_MIN keys; P depends only on H and the chip (att_parts), the cut
 * only on the token's own length. Each part gives (M, L, O), merged in part
 * order by att_merge. The decode kernel does the parts one after another in
 * one block; the split kernel gives each part its own block and the last one
 * merges. Same parts, same code, same merge order: both give the same bits,
 * and a token gives the same bits alone or in any batch. */
#define ATT_TILE 64      /* keys per tile */
#define ATT_G 8          /* lanes per key in phase 1 */
#define ATT_U (ATT_TILE / (DEC_THREADS / ATT_G)) /* keys per phase-1 group: 2 */
#define ATT_PART_MIN 32  /* keys per part at least */
#define ATT_SPLIT_MAX 16 /* parts at most */
#define ATT_OMAX 2048    /* floats of the groups' partial outputs (NG2 * D, every NC) */

/* Loads this lane's elements of the D-element row at element `off` of an
 * array of dtype DT, as floats (cuda_ld / cuda_ld4: 16-bit values widened
 * exactly), for `lanes` lanes per row and `nc` groups of 4 per lane:
 * VEC = one load of 4 elements (16 bytes for F32, 8 for F16 / BF16) at dims
 * 4*sub + 4*lanes*c (D % 4 == 0, aligned rows), else scalars at
 * sub + lanes*e; past D: 0. */
template <int DT, int LANES, int NCH, bool VEC>
__device__ static __forceinline__ void att_load_row(const void *base, int64_t off, int sub, int D, float *v) {
    const void *p = (const char *)base + off * (DT == PS_DT_F32 ? 4 : 2);
    if constexpr (VEC) {
#pragma unroll
        for (int c = 0; c < NCH; c++) {
            int d4 = sub + LANES * c;
            float4 f = 4 * d4 < D ? cuda_ld4<DT>(p, d4) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            v[4 * c] = f.x, v[4 * c + 1] = f.y, v[4 * c + 2] = f.z, v[4 * c + 3] = f.w;
        }
    } else {
#pragma unroll
        for (int e = 0; e < 4 * NCH; e++) {
            int d = sub + LANES * e;
            v[e] = d < D ? cuda_ld<DT>(p, d) : 0.0f;
        }
    }
}
template <int LANES, bool VEC> __device__ static __forceinline__ int att_row_dim(int sub, int e) {
    return VEC ? 4 * sub + 4 * LANES * (e / 4) + e % 4 : sub + LANES * e;
}

/* Phase-2 layout for D <= 32 * NC: G2 lanes per V row, C2 float4 per lane,
 * NG2 groups in the block, KV2 keys of a tile per group. */
template <int NC> struct att_v_layout {
    static constexpr int G2 = 8 * NC < 32 ? 8 * NC : 32;
    static constexpr int C2 = NC / 4 > 1 ? NC / 4 : 1;
    static constexpr int NG2 = DEC_THREADS / G2;
    static constexpr int KV2 = ATT_TILE / NG2;
};

/* Key parts of a length-len row cut into at most P parts (len >= 1). */
__device__ static __forceinline__ int att_part_chunk(int len, int P) {
    return max((len + P - 1) / P, ATT_PART_MIN);
}

/* Attention of one query (qv: this lane's phase-1 elements) over keys
 * [lo, hi) (lo < hi): every thread gets the part's M (max score) and L (sum
 * of exp(score - M)); dst[0, D) = sum of exp(score - M) * v (not divided). */
template <int DT, int NC, bool VEC, class Src>
__device__ static void att_part(float *dst, float &M, float &L, const float *qv, const Src &src,
                                int lo, int hi, int D, float scale) {
    typedef att_v_layout<NC> VL;
    __shared__ int64_t s_off[2][ATT_TILE];
    __shared__ float s_p[2][ATT_TILE], s_wmax[2][DEC_WARPS], s_wsum[2][DEC_WARPS];
    __shared__ float s_o[ATT_OMAX];
    int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    int g = tid / ATT_G, sub = tid % ATT_G, g2 = tid / VL::G2, sub2 = tid % VL::G2;
    if (tid < ATT_TILE) s_off[0][tid] = lo + tid < hi ? src.off(lo + tid) : 0;
    __syncthreads();
    float m = -INFINITY, l = 0.0f, o[4 * VL::C2];
#pragma unroll
    for (int e = 0; e < 4 * VL::C2; e++) o[e] = 0.0f;
    for (int base = lo, buf = 0; base < hi; base += ATT_TILE, buf ^= 1) {
        int n = min(ATT_TILE, hi - base);
        /* phase 1: every K and V row of the tile in flight, then the scores */
        float kr[ATT_U][4 * NC], vr[VL::KV2][4 * VL::C2], sc[ATT_U];
#pragma unroll
        for (int u = 0; u < ATT_U; u++) {
            int kk = g + (DEC_THREADS / ATT_G) * u;
            if (kk < n) att_load_row<DT, ATT_G, NC, VEC>(src.K, s_off[buf][kk], sub, D, kr[u]);
            else
#pragma unroll
                for (int e = 0; e < 4 * NC; e++) kr[u][e] = 0.0f;
        }
#pragma unroll
        for (int i = 0; i < VL::KV2; i++) {
            int kk = g2 + VL::NG2 * i;
            if (kk < n) att_load_row<DT, VL::G2, VL::C2, VEC>(src.V, s_off[buf][kk], sub2, D, vr[i]);
            else
#pragma unroll
                for (int e = 0; e < 4 * VL::C2; e++) vr[i][e] = 0.0f;
        }
        float wmax = -INFINITY;
#pragma unroll
        for (int u = 0; u < ATT_U; u++) {
            float part = 0.0f;
#pragma unroll
            for (int e = 0; e < 4 * NC; e++) part += qv[e] * kr[u][e];
#pragma unroll
            for (int s = ATT_G / 2; s > 0; s >>= 1) part += __shfl_xor_sync(0xffffffffu, part, s);
            sc[u] = g + (DEC_THREADS / ATT_G) * u < n ? part * scale : -INFINITY;
            wmax = fmaxf(wmax, sc[u]);
        }
        wmax = att_warp_max(wmax);
        if (lane == 0) s_wmax[buf][warp] = wmax;
        __syncthreads(); /* A: the warps' maxima */
        int next = base + ATT_TILE; /* the next tile's row offsets, while this one is in use */
        if (tid < ATT_TILE && next < hi) s_off[buf ^ 1][tid] = next + tid < hi ? src.off(next + tid) : 0;
        float mn = m;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) mn = fmaxf(mn, s_wmax[buf][w]);
        float psum = 0.0f;
#pragma unroll
        for (int u = 0; u < ATT_U; u++) {
            float p = expf(sc[u] - mn); /* masked (-inf): 0 */
            if (sub == 0) s_p[buf][g + (DEC_THREADS / ATT_G) * u] = p, psum += p;
        }
        psum = att_warp_sum(psum);
        if (lane == 0) s_wsum[buf][warp] = psum;
        __syncthreads(); /* B: the weights and the warps' sums */
        float alpha = expf(m - mn); /* m = -inf at the start: 0 */
        l *= alpha;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) l += s_wsum[buf][w];
#pragma unroll
        for (int e = 0; e < 4 * VL::C2; e++) o[e] *= alpha;
#pragma unroll
        for (int i = 0; i < VL::KV2; i++) {
            float p = s_p[buf][g2 + VL::NG2 * i];
#pragma unroll
            for (int e = 0; e < 4 * VL::C2; e++) o[e] += p * vr[i][e];
        }
        m = mn;
    }
#pragma unroll
    for (int e = 0; e < 4 * VL::C2; e++) {
        int d = att_row_dim<VL::G2, VEC>(sub2, e);
        if (d < D) s_o[g2 * D + d] = o[e];
    }
    __syncthreads();
    for (int d = tid; d < D; d += DEC_THREADS) {
        float acc = 0.0f;
        for (int k = 0; k < VL::NG2; k++) acc += s_o[k * D + d];
        dst[d] = acc;
    }
    M = m;
    L = l;
}

/* Shared partials of the parts of one row, merged by att_merge. */
struct att_parts_smem {
    float m[ATT_SPLIT_MAX], l[ATT_SPLIT_MAX], o[ATT_SPLIT_MAX * ATT_DMAX];
};

/* out[0, D) = the n parts merged in part order (after a barrier). */
__device__ static void att_merge(float *out, const att_parts_smem &ps, int n, int D) {
    float Mg = -INFINITY, Lg = 0.0f, e[ATT_SPLIT_MAX];
    for (int k = 0; k < n; k++) Mg = fmaxf(Mg, ps.m[k]);
    for (int k = 0; k < n; k++) {
        e[k] = expf(ps.m[k] - Mg);
        Lg += ps.l[k] * e[k];
    }
    for (int d = threadIdx.x; d < D; d += DEC_THREADS) {
        float acc = 0.0f;
        for (int k = 0; k < n; k++) acc += ps.o[k * D + d] * e[k];
        out[d] = acc / Lg;
    }
}

/* This lane's phase-1 elements of q. */
template <int NC, bool VEC>
__device__ static __forceinline__ void att_load_q(float *qv, const float *q, int D) {
    att_load_row<PS_DT_F32, ATT_G, NC, VEC>(q, 0, threadIdx.x % ATT_G, D, qv);
}

/* out[0, D) = attention of q over keys [0, len) (len >= 1), its P parts one
 * after another in this block. */
template <int DT, int NC, bool VEC, class Src>
__device__ static void att_decode_row(float *out, const float *q, const Src &src, int len, int P,
                                      int D, float scale) {
    __shared__ att_parts_smem s_parts;
    float qv[4 * NC];
    att_load_q<NC, VEC>(qv, q, D);
    int chunk = att_part_chunk(len, P), n = 0;
    for (int lo = 0; lo < len; lo += chunk, n++) {
        float M, L;
        att_part<DT, NC, VEC>(s_parts.o + n * D, M, L, qv, src, lo, min(len, lo + chunk), D, scale);
        if (threadIdx.x == 0) s_parts.m[n] = M, s_parts.l[n] = L;
    }
    __syncthreads();
    att_merge(out, s_parts, n, D);
}

/* Checks token t's metadata with the whole block (its pages in parallel, not
 * one load after another); returns its kv length, or 0 (flagged by thread 0:
 * the first bad page), the same in every thread. Ends with a barrier. */
__device__ static int att_block_len(const att_paged_args &a, int t) {
    __shared__ int s_bad[DEC_WARPS];
    int seq = a.tok_seq[t], pos = a.tok_kv_pos[t];
    if (seq < 0 || seq >= a.n_seqs || pos < 0 || pos / a.page_size >= a.max_pages) {
        if (threadIdx.x == 0) cuda_raise(a.flag, CUDA_FLAG_ATTN_META, t, seq, pos);
        return 0;
    }
    const int32_t *bt = a.bt + (int64_t)seq * a.max_pages;
    int bad = INT_MAX;
    for (int pg = threadIdx.x; pg <= pos / a.page_size; pg += DEC_THREADS)
        if (bad == INT_MAX && (bt[pg] < 0 || bt[pg] >= a.n_pages)) bad = pg;
    for (int o = 16; o > 0; o >>= 1) bad = min(bad, __shfl_xor_sync(0xffffffffu, bad, o));
    if (threadIdx.x % 32 == 0) s_bad[threadIdx.x / 32] = bad;
    __syncthreads();
    for (int w = 0; w < DEC_WARPS; w++) bad = min(bad, s_bad[w]);
    __syncthreads(); /* s_bad read by all before any reuse */
    if (bad == INT_MAX) return pos + 1;
    if (threadIdx.x == 0) cuda_raise(a.flag, CUDA_FLAG_ATTN_PAGE, bt[bad], a.n_pages, t);
    return 0;
}

/* Key source of token t, query head h. */
__device__ static att_paged att_paged_src(const att_paged_args &a, int t, int h) {
    att_paged src;
    src.K = a.K;
    src.V = a.V;
    src.bt = a.bt + (int64_t)a.tok_seq[t] * a.max_pages;
    src.page_size = a.page_size;
    src.row = (int64_t)a.n_kv * a.D;
    src.off0 = (int64_t)(h / (a.H / a.n_kv)) * a.D;
    return src;
}

/* One block per (token, head); its P parts one after another. */
template <int DT, int NC, bool VEC>
__global__ void __launch_bounds__(DEC_THREADS) attn_decode_paged_kernel(att_paged_args a, int P) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    int t = blockIdx.x, h = blockIdx.y;
    int len = att_block_len(a, t);
    float *out = a.out + ((int64_t)t * a.H + h) * a.D;
    if (len == 0) {
        for (int d = threadIdx.x; d < a.D; d += blockDim.x) out[d] = 0.0f;
        return;
    }
    att_decode_row<DT, NC, VEC>(out, a.q + ((int64_t)t * a.H + h) * a.D, att_paged_src(a, t, h), len, P,
                                a.D, a.scale);
}

/* ---- decode split over the parts (flash-decoding) ----
 * The decode kernel has T * H blocks: at batch 1 that is 32 blocks for a
 * 7B-shaped model, a quarter of an H100, each streaming a whole context.
 * Here block (t, h, s) takes part s (blocks past the token's parts leave at
 * once, after one load), writes its (M, L, O) to a workspace; the block
 * drawing the last of the n tickets of (t, h) merges the n partials in part
 * order (the result does not depend on which block finishes last) and resets
 * the ticket counter, the protocol of the split-K GEMV (nf4_gemv_v4.cu):
 * partial stores, barrier, fence + atomicAdd by thread 0; the last block
 * fences again and reads with __ldcg. P depends only on H and the chip,
 * never on T or the context length, so a recorded step graph stays valid as
 * sequences grow and the bits equal the decode kernel's. */
template <int DT, int NC, bool VEC>
__global__ void __launch_bounds__(DEC_THREADS)
attn_decode_split_kernel(att_paged_args a, int P, float *part, int *tickets) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    __shared__ att_parts_smem s_parts;
    __shared__ int s_last;
    int t = blockIdx.x, h = blockIdx.y, sp = blockIdx.z, D = a.D;
    /* The length before the checks only decides whether this block has a part
     * (part 0 always runs: it writes the zero row of a flagged token). */
    int pos = a.tok_kv_pos[t];
    int len0 = pos >= 0 && pos / a.page_size < a.max_pages ? pos + 1 : 1;
    int chunk = att_part_chunk(len0, P);
    if (sp > 0 && sp * chunk >= len0) return;
    int len = att_block_len(a, t), n = (len + chunk - 1) / chunk;
    int64_t th = (int64_t)t * a.H + h;
    float *out = a.out + th * D;
    if (len == 0) { /* flagged: every block of (t, h) sees it, none draws a ticket */
        if (sp == 0)
            for (int d = threadIdx.x; d < D; d += blockDim.x) out[d] = 0.0f;
        return;
    }
    float *mine = part + (th * P + sp) * (D + 2); /* M, L, O[D] */
    float qv[4 * NC], M, L;
    att_load_q<NC, VEC>(qv, a.q + th * D, D);
    att_part<DT, NC, VEC>(mine + 2, M, L, qv, att_paged_src(a, t, h), sp * chunk,
                          min(len, sp * chunk + chunk), D, a.scale);
    if (threadIdx.x == 0) mine[0] = M, mine[1] = L;
    __syncthreads(); /* every partial store of this block before the ticket */
    if (threadIdx.x == 0) {
        __threadfence();
        s_last = atomicAdd(&tickets[th], 1) == n - 1;
        if (s_last) {
            __threadfence();
            tickets[th] = 0; /* all n tickets drawn: nobody else touches it this launch */
        }
    }
    __syncthreads();
    if (!s_last) return;
    const float *all = part + th * P * (D + 2);
    for (int k = threadIdx.x; k < n; k += blockDim.x) {
        s_parts.m[k] = __ldcg(all + k * (D + 2));
        s_parts.l[k] = __ldcg(all + k * (D + 2) + 1);
    }
    for (int e = threadIdx.x; e < n * D; e += blockDim.x) s_parts.o[e] = __ldcg(all + (e / D) * (D + 2) + 2 + e % D);
    __syncthreads();
    att_merge(out, s_parts, n, D);
}

/* Parts per (token, head): enough blocks for two waves of the chip at batch
 * 1. Depends on H and the chip only (see above). */
static int att_parts(const cuda_impl *p, int H) {
    int P = (int)((2 * (int64_t)p->sm_count + H - 1) / H);
    return P < 1 ? 1 : P > ATT_SPLIT_MAX ? ATT_SPLIT_MAX : P;
}

/* Groups of 4 per lane in phase 1: D <= 32 * NC (a power of two); 8 without
 * vector loads (any D <= 256). */
static int att_nc(int D, bool vec) {
    if (!vec) return 8;
    return D <= 32 ? 1 : D <= 64 ? 2 : D <= 128 ? 4 : 8;
}
#define ATT_DISPATCH(nc, vec, LAUNCH)                                                              \
    do {                                                                                           \
        if (!(vec)) LAUNCH(8, false);                                                              \
        else if ((nc) == 1) LAUNCH(1, true);                                                       \
        else if ((nc) == 2) LAUNCH(2, true);                                                       \
        else if ((nc) == 4) LAUNCH(4, true);                                                       \
        else LAUNCH(8, true);                                                                      \
    } while (0)

/* The workspace of P partials per (token, head) and their ticket counters
 * (zero when made; every launch leaves them zero), grown on demand. */
static ps_status att_split_workspace(cuda_impl *p, int64_t TH, int S, int D, ps_err *err) {
    size_t part = sizeof(float) * (size_t)(TH * S * (D + 2)), cnt = sizeof(int) * (size_t)TH;
    PS_TRY(cuda_scratch(p, &p->att_part, &p->att_part_bytes, part, err));
    if (p->att_cnt_bytes < cnt) {
        PS_TRY(cuda_scratch(p, &p->att_cnt, &p->att_cnt_bytes, cnt, err));
        CU_TRY(p, cudaMemsetAsync(p->att_cnt, 0, p->att_cnt_bytes, p->stream));
    }
    return PS_OK;
}

/* ---- prefill: query tiles sharing K/V tiles ---- */

template <int DT>
__global__ void __launch_bounds__(ATT_THREADS) attn_prefill_kernel(att_paged_args a) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    extern __shared__ float smem[];
    __shared__ int s_seq[PF_QT], s_pos[PF_QT];
    const int D = a.D, DP = a.D + 1; /* padded rows: lanes reading column d hit distinct banks */
    float *Ks = smem, *Vs = Ks + PF_KT * DP, *Qs = Vs + PF_KT * DP;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int h = blockIdx.y, kvh = h / (a.H / a.n_kv), t0 = blockIdx.x * PF_QT;
    int nq = min(PF_QT, a.T - t0);
    if ((int)threadIdx.x < PF_QT) {
        int qi = threadIdx.x, len = 0, seq = -1;
        if (qi < nq) {
            len = att_token_len(a.tok_seq, a.tok_kv_pos, a.bt, t0 + qi, a.n_seqs, a.max_pages,
                                a.page_size, a.n_pages, a.flag);
            seq = len ? a.tok_seq[t0 + qi] : -1;
        }
        s_seq[qi] = seq;
        s_pos[qi] = len - 1; /* -1: invalid or past the end */
    }
    for (int e = threadIdx.x; e < nq * D; e += blockDim.x)
        Qs[e] = a.q[((int64_t)(t0 + e / D) * a.H + h) * D + e % D];
    __syncthreads();
    int64_t row = (int64_t)a.n_kv * D;
    for (int r0 = 0; r0 < nq;) { /* block-uniform: every thread walks the same runs */
        int seq = s_seq[r0], r1 = r0 + 1, maxlen = s_pos[r0] + 1;
        while (r1 < nq && s_seq[r1] == seq) {
            maxlen = max(maxlen, s_pos[r1] + 1);
            r1++;
        }
        const int32_t *bt = a.bt + (int64_t)(seq < 0 ? 0 : seq) * a.max_pages;
        float m[PF_QW], l[PF_QW], o[PF_QW][ATT_DPL];
#pragma unroll
        for (int u = 0; u < PF_QW; u++) {
            m[u] = -INFINITY;
            l[u] = 0.0f;
#pragma unroll
            for (int i = 0; i < ATT_DPL; i++) o[u][i] = 0.0f;
        }
        for (int k0 = 0; k0 < maxlen; k0 += PF_KT) {
            __syncthreads(); /* the previous tile is consumed */
            for (int e = threadIdx.x; e < PF_KT * D; e += blockDim.x) {
                int j = e / D, d = e % D, key = k0 + j;
                float kv = 0.0f, vv = 0.0f;
                if (key < maxlen) { /* pages of keys < maxlen were checked by att_token_len */
                    int64_t slot = (int64_t)bt[key / a.page_size] * a.page_size + key % a.page_size;
                    kv = cuda_ld<DT>(a.K, slot * row + (int64_t)kvh * D + d);
                    vv = cuda_ld<DT>(a.V, slot * row + (int64_t)kvh * D + d);
                }
                Ks[j * DP + d] = kv;
                Vs[j * DP + d] = vv;
            }
            __syncthreads();
            float dot[PF_QW];
#pragma unroll
            for (int u = 0; u < PF_QW; u++) dot[u] = 0.0f;
            const float *kr = Ks + lane * DP;
            for (int d = 0; d < D; d++) {
                float kd = kr[d];
#pragma unroll
                for (int u = 0; u < PF_QW; u++) dot[u] += Qs[(warp * PF_QW + u) * D + d] * kd;
            }
#pragma unroll
            for (int u = 0; u < PF_QW; u++) {
                int qi = warp * PF_QW + u;
                /* warp-uniform: this query is in the run and sees at least key k0 */
                if (qi < r0 || qi >= r1 || s_pos[qi] < k0) continue;
                bool live = k0 + lane <= s_pos[qi];
                float s = live ? dot[u] * a.scale : -INFINITY;
                float mt = fmaxf(m[u], att_warp_max(s));
                float alpha = expf(m[u] - mt);
                float pj = live ? expf(s - mt) : 0.0f;
                l[u] = l[u] * alpha + att_warp_sum(pj);
#pragma unroll
                for (int i = 0; i < ATT_DPL; i++) o[u][i] *= alpha;
                for (int j = 0; j < PF_KT; j++) {
                    float pb = __shfl_sync(0xffffffffu, pj, j);
#pragma unroll
                    for (int i = 0; i < ATT_DPL; i++) {
                        int d = lane + 32 * i;
                        if (d < D) o[u][i] += pb * Vs[j * DP + d];
                    }
                }
                m[u] = mt;
            }
        }
#pragma unroll
        for (int u = 0; u < PF_QW; u++) {
            int qi = warp * PF_QW + u;
            if (qi < r0 || qi >= r1) continue;
            float *out = a.out + ((int64_t)(t0 + qi) * a.H + h) * D;
            bool ok = s_pos[qi] >= 0;
#pragma unroll
            for (int i = 0; i < ATT_DPL; i++) {
                int d = lane + 32 * i;
                if (d < D) out[d] = ok ? o[u][i] / l[u] : 0.0f;
            }
        }
        r0 = r1;
    }
}

static bool att_aligned(const void *p) { return ((uintptr_t)p & 15) == 0; }

static size_t att_prefill_smem(int D) {
    return sizeof(float) * ((size_t)2 * PF_KT * (D + 1) + (size_t)PF_QT * D);
}

ps_status cuda_attention_init(cuda_impl *p, ps_err *err) {
    size_t need = att_prefill_smem(ATT_DMAX);
    if (need > p->smem_optin)
        return ps_errf(err, PS_EDEVICE, "cuda: attention needs %zu bytes of shared memory per block, "
                       "%s allows %zu", need, p->dev_name, p->smem_optin);
    CU_TRY(p, cudaFuncSetAttribute(attn_prefill_kernel<PS_DT_F32>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize, (int)need));
    CU_TRY(p, cudaFuncSetAttribute(attn_prefill_kernel<PS_DT_F16>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize, (int)need));
    CU_TRY(p, cudaFuncSetAttribute(attn_prefill_kernel<PS_DT_BF16>,
                                   cudaFuncAttributeMaxDynamicSharedMemorySize, (int)need));
    return PS_OK;
}

/* Launches the kernel of `path` over a cache of dtype DT (the split
 * kernel's workspace is ready). */
template <int DT>
static void att_launch(cuda_impl *p, int path, const att_paged_args &a, int P, int nc, bool vec) {
    if (path == PS_CUDA_ATTN_PREFILL) {
        dim3 grid((unsigned)((a.T + PF_QT - 1) / PF_QT), (unsigned)a.H);
        cuda_launch(p, attn_prefill_kernel<DT>, grid, ATT_THREADS, att_prefill_smem(a.D), a);
    } else if (path == PS_CUDA_ATTN_SPLIT) {
        dim3 grid((unsigned)a.T, (unsigned)a.H, (unsigned)P);
        float *part = (float *)p->att_part;
        int *tickets = (int *)p->att_cnt;
#define ATT_LAUNCH_SPLIT(NC, VEC) \
    cuda_launch(p, attn_decode_split_kernel<DT, NC, VEC>, grid, DEC_THREADS, 0, a, P, part, tickets)
        ATT_DISPATCH(nc, vec, ATT_LAUNCH_SPLIT);
#undef ATT_LAUNCH_SPLIT
    } else {
        dim3 grid((unsigned)a.T, (unsigned)a.H);
#define ATT_LAUNCH_DECODE(NC, VEC) \
    cuda_launch(p, attn_decode_paged_kernel<DT, NC, VEC>, grid, DEC_THREADS, 0, a, P)
        ATT_DISPATCH(nc, vec, ATT_LAUNCH_DECODE);
#undef ATT_LAUNCH_DECODE
    }
}

ps_status cuda_attention(ps_backend *be, ps_tensor *out, const ps_tensor *q, const ps_kv_layer *kv,
                         const ps_attn_meta *meta, float scale, ps_err *err) {
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    ps_dtype dt = kv->k.dtype; /* F32, F16 or BF16: op_attention's check_kv admits no other */
    att_paged_args a;
    a.out = (float *)out->data;
    a.q = (const float *)q->data;
    a.K = kv->k.data;
    a.V = kv->v.data;
    a.tok_seq = (const int32_t *)meta->tok_seq.data;
    a.tok_kv_pos = (const int32_t *)meta->tok_kv_pos.data;
    a.bt = (const int32_t *)meta->block_tables.data;
    a.T = meta->n_tokens;
    a.H = (int)q->shape[1];
    a.n_kv = (int)kv->k.shape[2];
    a.D = (int)kv->k.shape[3];
    a.n_seqs = meta->n_seqs;
    a.max_pages = meta->max_pages;
    a.page_size = kv->page_size;
    a.n_pages = (int)kv->k.shape[0];
    a.scale = scale;
    a.flag = p->d_flag;
    if (a.D > ATT_DMAX)
        return ps_errf(err, PS_ENOTSUP, "attention: head dim %d over the cuda limit %d", a.D, ATT_DMAX);
    if (a.page_size <= 0 || a.H <= 0 || a.H > 65535)
        return ps_errf(err, PS_EINVAL, "attention: page_size %d, heads %d", a.page_size, a.H);
    if (a.T == 0) return PS_OK;
    /* Automatic: the prefill kernel when tokens average >= 4 per sequence;
     * else the split kernel while T * H blocks fill less than two waves of
     * the chip, the decode kernel (parts in one block, no workspace round
     * trip) past that. Both decode kernels give the same bits. */
    int path = p->tune.attn_path;
    if (path == PS_CUDA_ATTN_AUTO)
        path = a.T >= PF_QT && a.T >= 4 * (a.n_seqs > 0 ? a.n_seqs : 1) ? PS_CUDA_ATTN_PREFILL
               : (int64_t)a.T * a.H < 2 * (int64_t)p->sm_count         ? PS_CUDA_ATTN_SPLIT
                                                                         : PS_CUDA_ATTN_DECODE;
    /* vector loads (4 elements: 16 bytes of q, 16 or 8 of the cache) when
     * every row starts aligned to them */
    bool vec = a.D % 4 == 0 && att_aligned(a.q) && cuda_ld4_ok(a.K, dt) && cuda_ld4_ok(a.V, dt);
    int P = att_parts(p, a.H), nc = att_nc(a.D, vec);
    if (path == PS_CUDA_ATTN_SPLIT) PS_TRY(att_split_workspace(p, (int64_t)a.T * a.H, P, a.D, err));
    if (dt == PS_DT_F32) att_launch<PS_DT_F32>(p, path, a, P, nc, vec);
    else if (dt == PS_DT_F16) att_launch<PS_DT_F16>(p, path, a, P, nc, vec);
    else att_launch<PS_DT_BF16>(p, path, a, P, nc, vec);
    return cuda_op_done(p, "attention", err);
}

/* ---- dense (encoders): q, k, v, out (B, T, H, D) ---- */

template <int NC, bool VEC>
__global__ void __launch_bounds__(DEC_THREADS)
attn_dense_kernel(float *out, const float *q, const float *K, const float *V, int T, int H, int D,
                  bool causal, float scale) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
    int bt = blockIdx.x, h = blockIdx.y, t = bt % T, b = bt / T;
    att_dense src;
    src.K = K;
    src.V = V;
    src.first = ((int64_t)b * T * H + h) * D;
    src.stride = (int64_t)H * D;
    int64_t at = ((int64_t)bt * H + h) * D;
    att_decode_row<PS_DT_F32, NC, VEC>(out + at, q + at, src, causal ? t + 1 : T, 1, D, scale);
}

ps_status cuda_attention_dense(ps_backend *be, ps_tensor *out, const ps_tensor *q,
                               const ps_tensor *k, const ps_tensor *v, bool causal, float scale,
                               ps_err *err) {
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    int64_t B = q->shape[0], T = q->shape[1], H = q->shape[2], D = q->shape[3];
    if (D > ATT_DMAX)
        return ps_errf(err, PS_ENOTSUP, "attention_dense: head dim %lld over the cuda limit %d",
                       (long long)D, ATT_DMAX);
    if (H > 65535 || B * T > INT32_MAX)
        return ps_errf(err, PS_EINVAL, "attention_dense: %lld heads, %lld rows", (long long)H,
                       (long long)(B * T));
    if (B * T * H * D == 0) return PS_OK;
    dim3 grid((unsigned)(B * T), (unsigned)H);
    float *o = (float *)out->data;
    const float *qd = (const float *)q->data, *kd = (const float *)k->data, *vd = (const float *)v->data;
    bool vec = D % 4 == 0 && att_aligned(qd) && att_aligned(kd) && att_aligned(vd);
#define ATT_LAUNCH_DENSE(NC, VEC)                                                                   \
    cuda_launch(p, attn_dense_kernel<NC, VEC>, grid, DEC_THREADS, 0, o, qd, kd, vd, (int)T, (int)H, (int)D, \
                causal, scale)
    ATT_DISPATCH(att_nc((int)D, vec), vec, ATT_LAUNCH_DENSE);
#undef ATT_LAUNCH_DENSE
    return cuda_op_done(p, "attention_dense", err);
}
