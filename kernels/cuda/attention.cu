/* Attention on CUDA: softmax(q k^T * scale) v with an online (streaming)
 * softmax in f32, as kernels/cpu/ops_attention.c computes it in one pass over
 * stored scores. Three kernels:
 *  - decode (paged or dense): one block per (token, head); its 8 warps take
 *    interleaved groups of 4 keys, lanes split the head dim (16-byte loads of
 *    coalesced rows when D % 4 == 0), then the warps' partial (max, sum,
 *    output) are merged. Used for decode steps and the dense encoder attention.
 *  - prefill (paged): a block takes 16 consecutive tokens of one head; the
 *    tokens are walked as runs of the same sequence, and each run's keys are
 *    staged 32 at a time in shared memory and shared by all its queries.
 * Both are correct for any token/sequence layout (tests force each one); the
 * choice is speed only. GQA: query head h reads KV head h / (H / n_kv).
 * Metadata is read on the device; a bad sequence, position or page id is
 * flagged (PS_EINVAL at the next sync), its output row is zero, and no memory
 * outside the cache is read. Head dim up to 256.
 *  - decode split (PS_CUDA_ATTN_SPLIT, opt-in until timed on a GPU): the
 *    decode kernel with the keys split over S blocks per (token, head) and
 *    the partials merged by the last block (flash-decoding), for batches too
 *    small to fill the chip. */
#include "cuda_common.cuh"

#define ATT_THREADS 128
#define ATT_WARPS (ATT_THREADS / 32)
#define ATT_DPL 8 /* head-dim elements per lane: D <= 256 */
#define ATT_DMAX (32 * ATT_DPL)
#define ATT_KU 4  /* keys in flight per warp (decode kernel) */
#define DEC_THREADS 256 /* decode kernel: 8 warps split the keys of one (token, head) */
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

/* ---- key sources for the decode kernel ---- */

/* Paged cache: entry j of this token's sequence. */
struct att_paged {
    const float *K, *V;
    const int32_t *bt; /* this sequence's block-table row */
    int page_size;
    int64_t row, off; /* floats per slot, offset of this KV head */
    __device__ int64_t base(int j) const {
        return ((int64_t)bt[j / page_size] * page_size + j % page_size) * row + off;
    }
    __device__ const float *k(int j) const { return K + base(j); }
    __device__ const float *v(int j) const { return V + base(j); }
};

/* Dense (B, T, H, D) tensors: key j of this batch item and head. */
struct att_dense {
    const float *K, *V;
    int64_t first, stride; /* offset of key 0, floats between keys */
    __device__ const float *k(int j) const { return K + first + j * stride; }
    __device__ const float *v(int j) const { return V + first + j * stride; }
};

/* Loads this lane's 8 elements of a D-float row: VEC = two 16-byte loads at
 * dims 4*lane + 128*j (D % 4 == 0, aligned rows), else 8 scalars at
 * lane + 32*i; elements past D are 0. att_dim gives element i's dim. */
template <bool VEC> __device__ static __forceinline__ int att_dim(int lane, int i) {
    return VEC ? 4 * lane + 128 * (i / 4) + i % 4 : lane + 32 * i;
}
template <bool VEC>
__device__ static __forceinline__ void att_load8(const float *p, int lane, int D, float *v) {
    if constexpr (VEC) {
#pragma unroll
        for (int j = 0; j < 2; j++) {
            int d = 4 * lane + 128 * j;
            float4 f = d < D ? *(const float4 *)(p + d) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            v[4 * j] = f.x, v[4 * j + 1] = f.y, v[4 * j + 2] = f.z, v[4 * j + 3] = f.w;
        }
    } else {
#pragma unroll
        for (int i = 0; i < ATT_DPL; i++) {
            int d = lane + 32 * i;
            v[i] = d < D ? p[d] : 0.0f;
        }
    }
}

/* Streams keys [lo, hi) of one (token, head) through the block's DEC_WARPS
 * warps (interleaved groups of ATT_KU keys, all loads of a group in flight
 * together), then merges the warps' partial (max, sum, output): every thread
 * gets the block's M and L, and dst[0, D) = O / L (normalize) or O, the
 * output weighted by exp(score - M) but not yet divided (a split's partial).
 * q points at this query's D floats. Needs lo < hi. */
template <bool VEC, class Src>
__device__ static __forceinline__ void att_decode_part(float *dst, bool normalize, float &M, float &L,
                                                       const float *q, const Src &src, int lo, int hi,
                                                       int D, float scale) {
    __shared__ float s_m[DEC_WARPS], s_l[DEC_WARPS], s_o[DEC_WARPS][ATT_DMAX];
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float qv[ATT_DPL], o[ATT_DPL];
    att_load8<VEC>(q, lane, D, qv);
#pragma unroll
    for (int i = 0; i < ATT_DPL; i++) o[i] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (int j0 = lo + warp * ATT_KU; j0 < hi; j0 += DEC_WARPS * ATT_KU) {
        float kv[ATT_KU][ATT_DPL], vv[ATT_KU][ATT_DPL], sc[ATT_KU];
#pragma unroll
        for (int u = 0; u < ATT_KU; u++) {
            int j = j0 + u < hi ? j0 + u : hi - 1; /* clamp: masked below */
            att_load8<VEC>(src.k(j), lane, D, kv[u]);
            att_load8<VEC>(src.v(j), lane, D, vv[u]);
        }
        float mt = m;
#pragma unroll
        for (int u = 0; u < ATT_KU; u++) {
            float part = 0.0f;
#pragma unroll
            for (int i = 0; i < ATT_DPL; i++) part += qv[i] * kv[u][i];
            sc[u] = j0 + u < hi ? att_warp_sum(part) * scale : -INFINITY;
            mt = fmaxf(mt, sc[u]);
        }
        float alpha = expf(m - mt); /* m = -inf at the start: 0 */
        l *= alpha;
#pragma unroll
        for (int i = 0; i < ATT_DPL; i++) o[i] *= alpha;
#pragma unroll
        for (int u = 0; u < ATT_KU; u++) {
            float pu = expf(sc[u] - mt); /* -inf (masked): 0 */
            l += pu;
#pragma unroll
            for (int i = 0; i < ATT_DPL; i++) o[i] += pu * vv[u][i];
        }
        m = mt;
    }
    if (lane == 0) {
        s_m[warp] = m;
        s_l[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < ATT_DPL; i++) s_o[warp][att_dim<VEC>(lane, i)] = o[i];
    __syncthreads();
    M = -INFINITY;
#pragma unroll
    for (int w = 0; w < DEC_WARPS; w++) M = fmaxf(M, s_m[w]);
    L = 0.0f;
    float f[DEC_WARPS];
#pragma unroll
    for (int w = 0; w < DEC_WARPS; w++) {
        f[w] = s_m[w] == -INFINITY ? 0.0f : expf(s_m[w] - M); /* idle warps weigh 0 */
        L += s_l[w] * f[w];
    }
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = 0.0f;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) acc += s_o[w][d] * f[w];
        dst[d] = normalize ? acc / L : acc;
    }
}

/* out[0, D) = attention of q over keys [0, len) (len >= 1). */
template <bool VEC, class Src>
__device__ static __forceinline__ void att_decode_row(float *out, const float *q, const Src &src,
                                                      int len, int D, float scale) {
    float M, L;
    att_decode_part<VEC>(out, true, M, L, q, src, 0, len, D, scale);
}

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
    const float *q, *K, *V;
    const int32_t *tok_seq, *tok_kv_pos, *bt;
    int T, H, n_kv, D, n_seqs, max_pages, page_size, n_pages;
    float scale;
    cuda_flag *flag;
} att_paged_args;

template <bool VEC>
__global__ void __launch_bounds__(DEC_THREADS) attn_decode_paged_kernel(att_paged_args a) {
    __shared__ int s_len;
    int t = blockIdx.x, h = blockIdx.y;
    if (threadIdx.x == 0)
        s_len = att_token_len(a.tok_seq, a.tok_kv_pos, a.bt, t, a.n_seqs, a.max_pages,
                              a.page_size, a.n_pages, a.flag);
    __syncthreads();
    int len = s_len;
    float *out = a.out + ((int64_t)t * a.H + h) * a.D;
    if (len == 0) {
        for (int d = threadIdx.x; d < a.D; d += blockDim.x) out[d] = 0.0f;
        return;
    }
    int kvh = h / (a.H / a.n_kv);
    att_paged src;
    src.K = a.K;
    src.V = a.V;
    src.bt = a.bt + (int64_t)a.tok_seq[t] * a.max_pages;
    src.page_size = a.page_size;
    src.row = (int64_t)a.n_kv * a.D;
    src.off = (int64_t)kvh * a.D;
    att_decode_row<VEC>(out, a.q + ((int64_t)t * a.H + h) * a.D, src, len, a.D, a.scale);
}

/* ---- decode split over the keys (flash-decoding) ----
 * The decode kernel has T * H blocks: at batch 1 that is 32 blocks for a
 * 7B-shaped model, a quarter of an H100, each streaming a whole context.
 * Here block (t, h, s) takes split s of the keys, at least ATT_SPLIT_MIN of
 * them (short contexts leave later splits empty), and writes its (M, L, O)
 * to a workspace; the block drawing the last of the S tickets of (t, h)
 * merges the S partials in split order (the result does not depend on which
 * block finishes last) and resets the ticket counter, the protocol of the
 * split-K GEMV (nf4_gemv_v4.cu): partial stores, barrier, fence + atomicAdd
 * by thread 0; the last block fences again and reads with __ldcg. S depends
 * only on T and H, never on the context length, so a recorded step graph
 * stays valid as sequences grow. */
#define ATT_SPLIT_MAX 16
#define ATT_SPLIT_MIN 32 /* keys per split at least: one pass of the block's warps */

template <bool VEC>
__global__ void __launch_bounds__(DEC_THREADS)
attn_decode_split_kernel(att_paged_args a, int S, float *part, int *tickets) {
    __shared__ int s_len, s_last;
    int t = blockIdx.x, h = blockIdx.y, sp = blockIdx.z;
    if (threadIdx.x == 0)
        s_len = att_token_len(a.tok_seq, a.tok_kv_pos, a.bt, t, a.n_seqs, a.max_pages,
                              a.page_size, a.n_pages, a.flag);
    __syncthreads();
    int len = s_len, D = a.D;
    int64_t th = (int64_t)t * a.H + h;
    float *mine = part + (th * S + sp) * (D + 2); /* M, L, O[D] */
    int chunk = max((len + S - 1) / S, ATT_SPLIT_MIN);
    int lo = min(len, sp * chunk), hi = min(len, lo + chunk);
    float M = -INFINITY, L = 0.0f;
    if (lo < hi) {
        att_paged src;
        src.K = a.K;
        src.V = a.V;
        src.bt = a.bt + (int64_t)a.tok_seq[t] * a.max_pages;
        src.page_size = a.page_size;
        src.row = (int64_t)a.n_kv * D;
        src.off = (int64_t)(h / (a.H / a.n_kv)) * D;
        att_decode_part<VEC>(mine + 2, false, M, L, a.q + th * D, src, lo, hi, D, a.scale);
    } else {
        for (int d = threadIdx.x; d < D; d += blockDim.x) mine[2 + d] = 0.0f;
    }
    if (threadIdx.x == 0) mine[0] = M, mine[1] = L;
    __syncthreads(); /* every partial store of this block before the ticket */
    if (threadIdx.x == 0) {
        __threadfence();
        s_last = atomicAdd(&tickets[th], 1) == S - 1;
        if (s_last) {
            __threadfence();
            tickets[th] = 0; /* all S tickets drawn: nobody else touches it this launch */
        }
    }
    __syncthreads();
    if (!s_last) return;
    float *out = a.out + th * D;
    const float *all = part + th * S * (D + 2);
    float Mg = -INFINITY, Lg = 0.0f, e[ATT_SPLIT_MAX];
    for (int k = 0; k < S; k++) Mg = fmaxf(Mg, __ldcg(all + k * (D + 2)));
    for (int k = 0; k < S; k++) {
        float Mk = __ldcg(all + k * (D + 2));
        e[k] = Mk == -INFINITY ? 0.0f : expf(Mk - Mg); /* empty splits weigh 0 */
        Lg += __ldcg(all + k * (D + 2) + 1) * e[k];
    }
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = 0.0f;
        for (int k = 0; k < S; k++) acc += __ldcg(all + k * (D + 2) + 2 + d) * e[k];
        out[d] = len == 0 ? 0.0f : acc / Lg; /* len 0: bad metadata, flagged */
    }
}

/* Splits for T tokens of H heads: enough blocks for two waves of the chip,
 * 1 (the plain decode kernel) when T * H already fills it; forced >= 2. */
static int att_splits(const cuda_impl *p, int T, int H, bool forced) {
    int64_t blocks = (int64_t)T * H, want = 2 * (int64_t)p->sm_count;
    int S = blocks >= want ? 1 : (int)((want + blocks - 1) / blocks);
    if (S > ATT_SPLIT_MAX) S = ATT_SPLIT_MAX;
    return forced && S < 2 ? 2 : S;
}

/* The workspace of S partials per (token, head) and their ticket counters
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

__global__ void __launch_bounds__(ATT_THREADS) attn_prefill_kernel(att_paged_args a) {
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
                    kv = a.K[slot * row + (int64_t)kvh * D + d];
                    vv = a.V[slot * row + (int64_t)kvh * D + d];
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
    CU_TRY(p, cudaFuncSetAttribute(attn_prefill_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)need));
    return PS_OK;
}

ps_status cuda_attention(ps_backend *be, ps_tensor *out, const ps_tensor *q, const ps_kv_layer *kv,
                         const ps_attn_meta *meta, float scale, ps_err *err) {
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    if (kv->k.dtype != PS_DT_F32)
        return ps_errf(err, PS_ENOTSUP, "attention: cuda kv cache dtype %s, only F32 is supported",
                       ps_dtype_name(kv->k.dtype));
    att_paged_args a;
    a.out = (float *)out->data;
    a.q = (const float *)q->data;
    a.K = (const float *)kv->k.data;
    a.V = (const float *)kv->v.data;
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
    int path = p->tune.attn_path;
    if (path == PS_CUDA_ATTN_AUTO)
        path = a.T >= PF_QT && a.T >= 4 * (a.n_seqs > 0 ? a.n_seqs : 1) ? PS_CUDA_ATTN_PREFILL
                                                                          : PS_CUDA_ATTN_DECODE;
    /* 16-byte loads when every row starts 16-byte aligned */
    bool vec = a.D % 4 == 0 && att_aligned(a.q) && att_aligned(a.K) && att_aligned(a.V);
    int S = path == PS_CUDA_ATTN_SPLIT ? att_splits(p, a.T, a.H, true) : 1;
    if (path == PS_CUDA_ATTN_PREFILL) {
        dim3 grid((unsigned)((a.T + PF_QT - 1) / PF_QT), (unsigned)a.H);
        attn_prefill_kernel<<<grid, ATT_THREADS, att_prefill_smem(a.D), p->stream>>>(a);
    } else if (S > 1) {
        PS_TRY(att_split_workspace(p, (int64_t)a.T * a.H, S, a.D, err));
        dim3 grid((unsigned)a.T, (unsigned)a.H, (unsigned)S);
        float *part = (float *)p->att_part;
        int *tickets = (int *)p->att_cnt;
        if (vec) attn_decode_split_kernel<true><<<grid, DEC_THREADS, 0, p->stream>>>(a, S, part, tickets);
        else attn_decode_split_kernel<false><<<grid, DEC_THREADS, 0, p->stream>>>(a, S, part, tickets);
    } else {
        dim3 grid((unsigned)a.T, (unsigned)a.H);
        if (vec) attn_decode_paged_kernel<true><<<grid, DEC_THREADS, 0, p->stream>>>(a);
        else attn_decode_paged_kernel<false><<<grid, DEC_THREADS, 0, p->stream>>>(a);
    }
    return cuda_op_done(p, "attention", err);
}

/* ---- dense (encoders): q, k, v, out (B, T, H, D) ---- */

template <bool VEC>
__global__ void __launch_bounds__(DEC_THREADS)
attn_dense_kernel(float *out, const float *q, const float *K, const float *V, int T, int H, int D,
                  bool causal, float scale) {
    int bt = blockIdx.x, h = blockIdx.y, t = bt % T, b = bt / T;
    att_dense src;
    src.K = K;
    src.V = V;
    src.first = ((int64_t)b * T * H + h) * D;
    src.stride = (int64_t)H * D;
    int64_t at = ((int64_t)bt * H + h) * D;
    att_decode_row<VEC>(out + at, q + at, src, causal ? t + 1 : T, D, scale);
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
    if (D % 4 == 0 && att_aligned(qd) && att_aligned(kd) && att_aligned(vd))
        attn_dense_kernel<true><<<grid, DEC_THREADS, 0, p->stream>>>(o, qd, kd, vd, (int)T, (int)H, (int)D, causal, scale);
    else
        attn_dense_kernel<false><<<grid, DEC_THREADS, 0, p->stream>>>(o, qd, kd, vd, (int)T, (int)H, (int)D, causal, scale);
    return cuda_op_done(p, "attention_dense", err);
}
