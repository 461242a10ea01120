/* NF4 GEMV for decode: y (T, out) = x (T, in) W^T with W decoded on the fly
 * from its 4-bit codes and (double-quantised) block scales, never
 * materialised. Accumulates in f32; mirrors kernels/cpu/linear_ref.c (the
 * oracle) with the element math of kernels/math/nf4.h (ps_nf4_code_at,
 * ps_nf4_block_scale, ps_nf4_value).
 *
 * Fast kernels come in configurations (the table below, picked by
 * ps_cuda_tuning.gemv_kernel or PS_CUDA_GEMV=<name>), so one benchmark run
 * can sweep them: v1 (this file), v2 (nf4_gemv_v2.cu, x tiles in shared
 * memory), v4 (nf4_gemv_v4.cu, split-K across blocks with a one-launch
 * deterministic reduction, x slice staged once) and v5 (nf4_gemv_v5.cu, no
 * staging, codes streamed past L1, the next step's loads ahead of this
 * step's math) and v6 (nf4_gemv_v6.cu, tensor cores with bf16 operands:
 * its own numerics, ps_cuda_gemv_bf16). v4 without a split, v5 and v6 take
 * up to three weights of one x per launch (gemv_set, op_linear_n). The default "auto" picks
 * per call what the H100 sweep measured fastest. (A v3 family, x read
 * through L1 and a 256-entry pair table, was the slowest in both H100
 * sweeps and was removed.)
 * v1 (in % 64 == 0, 16-byte aligned codes and x): each warp owns R output
 * rows; every lane reads 16 bytes (32 codes, half a 64-block) of each of its
 * rows per step, two steps in flight, and applies them to up to 8 rows of x
 * held in registers, so one weight load serves the whole batch and one x
 * load serves R rows. The block scale multiplies the 32-code partial dot
 * rather than each element: the same product, rounded once instead of 32
 * times (well inside the f32 tolerance of the parity test).
 * Generic kernel (any shape, e.g. in = 17): one warp per row, one element per
 * lane step, ps_nf4_value per element. More than 8 rows of x: chunks of 8,
 * each rereading W (the linear dispatcher switches to dequant + cuBLAS when
 * T is large). */
#include "cuda_common.cuh"
#include "nf4_gemv_common.cuh"
#include "nf4_tables.cuh"

#define GEMV_THREADS 128
#define GEMV_WARPS (GEMV_THREADS / 32)
#define GEMV_U 2 /* 16-byte chunks per row in flight per lane */

template <int B, int R>
__global__ void __launch_bounds__(GEMV_THREADS)
nf4_gemv_fast_kernel(float *__restrict__ y, const float *__restrict__ x, cuda_nf4_args w) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
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
    gemv_zero<R, B>(acc);

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
            gemv_chunk_dot_global<R, B>(dot, wv[u], x, in, c, s_nf4);
#pragma unroll
            for (int r = 0; r < R; r++)
#pragma unroll
                for (int b = 0; b < B; b++) acc[r][b] += dot[r][b] * sc[u][r];
        }
    }
    gemv_warp_store<R, B>(acc, y, row0, w.out, lane);
}

#define GEMV_NB_MAX 8

__global__ void __launch_bounds__(GEMV_THREADS)
nf4_gemv_generic_kernel(float *__restrict__ y, const float *__restrict__ x, int nb, cuda_nf4_args w) {
    cuda_pdl_enter(); /* PDL: nothing before it (cuda_common.cuh) */
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
    cuda_launch(p, nf4_gemv_fast_kernel<B, R>, grid, GEMV_THREADS, 0, y, x, a);
}


#define GEMV1_BY_B(R)                                                                      \
    {nf4_gemv_fast_launch<1, R>, nf4_gemv_fast_launch<2, R>, nf4_gemv_fast_launch<3, R>,     \
     nf4_gemv_fast_launch<4, R>, nf4_gemv_fast_launch<5, R>, nf4_gemv_fast_launch<6, R>,     \
     nf4_gemv_fast_launch<7, R>, nf4_gemv_fast_launch<8, R>}

typedef void (*cuda_gemv_launch_fn)(cuda_impl *p, float *y, const float *x, const cuda_nf4_args &a);
cuda_gemv_launch_fn cuda_gemv_v2_fn(int warps, int R, int nb); /* nf4_gemv_v2.cu */
/* nf4_gemv_v4.cu: the splits S for a shape (0: the x slice cannot fit shared
 * memory), the workspace for S splits and nb rows of x, the launcher */
typedef void (*cuda_gemv4_launch_fn)(cuda_impl *p, const gemv_set &s, const float *x, int S);
int cuda_gemv_v4_splits(const cuda_impl *p, int64_t out, int64_t in, int W, int R, int S_cfg);
ps_status cuda_gemv_v4_workspace(cuda_impl *p, int64_t out, int nb, int W, int R, int S, ps_err *err);
cuda_gemv4_launch_fn cuda_gemv_v4_fn(int W, int R, int U, int nb);

static cuda_gemv_launch_fn cuda_gemv_v1_fn(int R, int nb) {
    static const cuda_gemv_launch_fn tab[3][8] = {GEMV1_BY_B(1), GEMV1_BY_B(2), GEMV1_BY_B(4)};
    int ri = R == 1 ? 0 : R == 2 ? 1 : R == 4 ? 2 : -1;
    return ri < 0 || nb < 1 || nb > 8 ? NULL : tab[ri][nb - 1];
}

/* The fast-kernel configurations (ps_cuda_tuning.gemv_kernel indexes this;
 * PS_CUDA_GEMV=<name>). R = 0: 4 rows per warp for a single token, 2 for
 * more (the first tuned choices of v1 and v2). v4 names: s<S> (0: automatic
 * from the SM count and the shape), [w<W>] (default 4), r<R>, u<U>. */
typedef struct {
    const char *name;
    int kind;  /* 1, 2, 4, 5, 6: the kernel family; 0: "auto", resolved per call by gemv_cfg_for */
    int warps; /* per block (v2, v4, v5, v6; v1 has 4) */
    int R;     /* rows per warp; v6: tiles of 16 rows per block */
    int U;     /* v4, v5: 16-byte chunks per row per lane in flight; v6: 64-blocks */
    int S;     /* v4: K splits (0: automatic) */
    int P;     /* v5: the next step's loads issued before this step's math; v6: a persistent grid */
} gemv_cfg;

static const gemv_cfg k_gemv_cfgs[] = {
    {"auto", 0, 0, 0, 0, 0, 0}, /* PS_CUDA_GEMV_DEFAULT */
    {"v2", 2, 8, 2, 1, 0, 0},
    {"v1", 1, 4, 0, 2, 0, 0},       {"v1r1", 1, 4, 1, 2, 0, 0},     {"v1r2", 1, 4, 2, 2, 0, 0},
    {"v1r4", 1, 4, 4, 2, 0, 0},     {"v2w4r1", 2, 4, 1, 1, 0, 0},   {"v2w4r2", 2, 4, 2, 1, 0, 0},
    {"v2w4r4", 2, 4, 4, 1, 0, 0},   {"v2w8r1", 2, 8, 1, 1, 0, 0},   {"v2w8r4", 2, 8, 4, 1, 0, 0},
    {"v4s0r1u4", 4, 4, 1, 4, 0, 0}, {"v4s0r1u8", 4, 4, 1, 8, 0, 0},
    {"v4s0r2u2", 4, 4, 2, 2, 0, 0}, {"v4s0r2u4", 4, 4, 2, 4, 0, 0}, {"v4s0r4u2", 4, 4, 4, 2, 0, 0},
    {"v4s0w8r2u4", 4, 8, 2, 4, 0, 0}, {"v4s1r2u4", 4, 4, 2, 4, 1, 0}, {"v4s2r2u4", 4, 4, 2, 4, 2, 0},
    {"v4s4r2u2", 4, 4, 2, 2, 4, 0}, {"v4s8r1u4", 4, 4, 1, 4, 8, 0},
    {"v5w4r1u4p1", 5, 4, 1, 4, 0, 1}, {"v5w4r2u2p1", 5, 4, 2, 2, 0, 1},
    {"v5w4r2u4p1", 5, 4, 2, 4, 0, 1}, {"v5w4r2u4p0", 5, 4, 2, 4, 0, 0},
    {"v5w4r4u2p1", 5, 4, 4, 2, 0, 1}, {"v5w4r4u2p0", 5, 4, 4, 2, 0, 0},
    {"v5w8r2u4p1", 5, 8, 2, 4, 0, 1}, {"v5w4r4u4p0", 5, 4, 4, 4, 0, 0},
    /* tensor cores, bf16 operands (ps_cuda_gemv_bf16) */
    {"v6w8r1u4", 6, 8, 1, 4, 0, 0}, {"v6w8r1u2", 6, 8, 1, 2, 0, 0}, {"v6w8r2u2", 6, 8, 2, 2, 0, 0},
    {"v6w4r1u4", 6, 4, 1, 4, 0, 0}, {"v6w4r2u4", 6, 4, 2, 4, 0, 0},
    {"v6w8r1u4p1", 6, 8, 1, 4, 0, 1}, {"v6w8r1u2p1", 6, 8, 1, 2, 0, 1}, {"v6w8r2u2p1", 6, 8, 2, 2, 0, 1},
};
#define GEMV_N_CFGS ((int)(sizeof k_gemv_cfgs / sizeof k_gemv_cfgs[0]))

extern "C" int ps_cuda_gemv_count(void) { return GEMV_N_CFGS; }

extern "C" const char *ps_cuda_gemv_name(int k) {
    return k >= 0 && k < GEMV_N_CFGS ? k_gemv_cfgs[k].name : NULL;
}

extern "C" bool ps_cuda_gemv_bf16(int k) { return k >= 0 && k < GEMV_N_CFGS && k_gemv_cfgs[k].kind == 6; }

extern "C" int ps_cuda_gemv_find(const char *name) {
    for (int k = 0; name && k < GEMV_N_CFGS; k++)
        if (!strcmp(name, k_gemv_cfgs[k].name)) return k;
    return -1;
}

/* Rows of a weight one block of configuration c (v4, v5, v6) covers. */
static int64_t gemv_block_rows(const gemv_cfg *c) { return c->kind == 6 ? 16 * c->R : (int64_t)c->warps * c->R; }

/* Rows of x one launch of configuration c takes (NULL: the generic kernel). */
static int64_t gemv_chunk_rows(const gemv_cfg *c) { return c && c->kind == 6 ? GEMV6_NB_MAX : GEMV_NB_MAX; }

extern "C" int ps_cuda_gemv_rows_per_launch(int k) {
    return k >= 0 && k < GEMV_N_CFGS ? (int)gemv_chunk_rows(&k_gemv_cfgs[k]) : 0;
}

/* One launch of a gemv_set family (v4 with S splits, v5, v6) for nb rows of x. */
static void gemv_set_launch(cuda_impl *p, const gemv_cfg *c, const gemv_set &set, const float *x, int nb, int S) {
    if (c->kind == 4) cuda_gemv_v4_fn(c->warps, c->R, c->U, nb)(p, set, x, S);
    else if (c->kind == 5) cuda_gemv_v5_fn(c->warps, c->R, c->U, c->P, nb)(p, set, x);
    else cuda_gemv_v6_fn(c->warps, c->R, c->U, c->P)(p, set, x, nb);
}

/* One chunk of nb (1..8; v6: 1..GEMV6_NB_MAX) rows of x with configuration c (NULL: the generic
 * kernel); S: the splits of a v4 configuration, its workspace ready. */
static void nf4_gemv_chunk(cuda_impl *p, float *y, const float *x, int nb, const cuda_nf4_args &a,
                           const gemv_cfg *c, int S) {
    if (!c) {
        unsigned grid = (unsigned)((a.out + GEMV_WARPS - 1) / GEMV_WARPS);
        cuda_launch(p, nf4_gemv_generic_kernel, grid, GEMV_THREADS, 0, y, x, nb, a);
        return;
    }
    if (c->kind >= 4) {
        gemv_set set = {{a}, {y}, {0}, 1};
        gemv_set_launch(p, c, set, x, nb, S);
        return;
    }
    int R = c->R ? c->R : nb == 1 ? 4 : 2;
    cuda_gemv_launch_fn fn = c->kind == 1 ? cuda_gemv_v1_fn(R, nb) : cuda_gemv_v2_fn(c->warps, R, nb);
    fn(p, y, x, a);
}

/* Configuration k for a call of T rows of x. "auto" (the default) takes what
 * the H100 sweep measured fastest (tests/gpu/sweep.sh; decode batch 1 end to
 * end 239.7 vs 228.4 tok/s): v4s1r2u4 (no split, the whole x staged once,
 * 4 chunks per lane in flight) for 1-2 rows, v2 above (v2 won T = 4; T = 8
 * was within 3% of the best). */
static const gemv_cfg *gemv_cfg_named(const char *name) { return &k_gemv_cfgs[ps_cuda_gemv_find(name)]; }

static const gemv_cfg *gemv_cfg_for(int k, int64_t T) {
    /* looked up once, not by name on every linear call (C++ statics: initialised once, thread-safe) */
    static const gemv_cfg *const small = gemv_cfg_named("v4s1r2u4"), *const v2 = gemv_cfg_named("v2");
    if (k < 0 || k >= GEMV_N_CFGS) k = PS_CUDA_GEMV_DEFAULT;
    return k_gemv_cfgs[k].kind != 0 ? &k_gemv_cfgs[k] : T <= 2 ? small : v2;
}

/* Whether the fast kernels take this weight and x (16-byte loads, whole
 * 64-blocks, block indices in 31 bits: v6 keeps them in 32-bit registers). */
static bool gemv_fast(const cuda_nf4_args &a, const float *x) {
    return a.in % PS_NF4_BLOCK == 0 && ((uintptr_t)a.packed & 15) == 0 && ((uintptr_t)x & 15) == 0 &&
           a.out * (a.in / PS_NF4_BLOCK) < ((int64_t)1 << 31);
}

ps_status cuda_nf4_gemv(cuda_impl *p, float *y, const float *x, int64_t T, const ps_nf4 *w,
                        ps_err *err) {
    cuda_nf4_args a = cuda_nf4_args_of(w);
    if ((a.out + GEMV_WARPS - 1) / GEMV_WARPS > INT32_MAX)
        return ps_errf(err, PS_EINVAL, "linear: nf4 weight with %lld rows", (long long)a.out);
    bool fast = gemv_fast(a, x);
    /* configuration k (checked by ps_cuda_set_tuning; anything else: the default) */
    const gemv_cfg *c = fast ? gemv_cfg_for(p->tune.gemv_kernel, T) : NULL;
    int S = 0;
    if (c && c->kind == 4) {
        S = cuda_gemv_v4_splits(p, a.out, a.in, c->warps, c->R, c->S);
        if (S > 0)
            PS_TRY(cuda_gemv_v4_workspace(p, a.out, (int)(T < GEMV_NB_MAX ? T : GEMV_NB_MAX), c->warps, c->R,
                                          S, err));
        else /* x slice too large even at 64 splits: in > ~390k (s1) or 131072 (s0) */
            c = gemv_cfg_named("v2");
    }
    const int64_t chunk = gemv_chunk_rows(c);
    for (int64_t t0 = 0; t0 < T; t0 += chunk) {
        int nb = (int)(T - t0 < chunk ? T - t0 : chunk);
        nf4_gemv_chunk(p, y + t0 * a.out, x + t0 * a.in, nb, a, c, S);
        CU_LAUNCH_CHECK(p);
    }
    return PS_OK;
}

/* n weights of the same x in one launch per 8 (v6: GEMV6_NB_MAX) rows of x when the configured
 * kernel is v5, v6, or v4 without a split, and each weight takes the fast path;
 * otherwise (or for a grid too large for one launch) one cuda_nf4_gemv each.
 * Same bits either way. */
ps_status cuda_nf4_gemv_n(cuda_impl *p, int n, float *const *ys, const float *x, int64_t T,
                          const ps_nf4 *const *ws, ps_err *err) {
    const gemv_cfg *c = gemv_cfg_for(p->tune.gemv_kernel, T);
    gemv_set set;
    set.n = n;
    bool one = c->kind >= 4 && n >= 1 && n <= 3;
    int64_t blocks = 0;
    for (int i = 0; one && i < n; i++) {
        set.w[i] = cuda_nf4_args_of(ws[i]);
        set.y[i] = ys[i];
        one = gemv_fast(set.w[i], x) && set.w[i].in == set.w[0].in &&
              (c->kind != 4 || cuda_gemv_v4_splits(p, set.w[i].out, set.w[i].in, c->warps, c->R, c->S) == 1);
        blocks += (set.w[i].out + gemv_block_rows(c) - 1) / gemv_block_rows(c);
    }
    if (!one || blocks > INT32_MAX / 2) {
        for (int i = 0; i < n; i++) PS_TRY(cuda_nf4_gemv(p, ys[i], x, T, ws[i], err));
        return PS_OK;
    }
    const int64_t chunk = gemv_chunk_rows(c);
    for (int64_t t0 = 0; t0 < T; t0 += chunk) {
        int nb = (int)(T - t0 < chunk ? T - t0 : chunk);
        gemv_set at = set;
        for (int i = 0; i < n; i++) at.y[i] = ys[i] + t0 * set.w[i].out;
        gemv_set_launch(p, c, at, x + t0 * set.w[0].in, nb, 1);
        CU_LAUNCH_CHECK(p);
    }
    return PS_OK;
}

ps_status cuda_nf4_gemv_fused(cuda_impl *p, int n, float *const *ys, int64_t T, const ps_nf4 *const *ws,
                              const float *x, const cuda_norm_args *nm, bool glu, bool *done, ps_err *err) {
    *done = false;
    const gemv_cfg *c = gemv_cfg_for(p->tune.gemv_kernel, T);
    if (!p->tune.fuse || c->kind != 6 || T < 1 || T > 8 || n < 1 || n > 3 || (glu && n != 2)) return PS_OK;
    cuda_gemv6_fused_fn fn = cuda_gemv_v6_fused_fn(c->warps, c->R, c->U, c->P);
    const int64_t in = ws[0]->in;
    const float *xr = nm ? nm->x : x;
    bool ok = fn != NULL;
    if (ok && nm) /* norm.cu's register path (the order the fused norm repeats) and v6's staging */
        ok = gemv6_xs_fits(T, in) && in <= 4 * 256 * GEMV6_NORM_NV && cuda_aligned(nm->h, 16) &&
             cuda_aligned(nm->x_out, 16) && cuda_aligned(nm->y, 16) &&
             (nm->wdt == PS_DT_F32 || nm->wdt == PS_DT_F16 || nm->wdt == PS_DT_BF16) &&
             cuda_ld4_ok(nm->w, (ps_dtype)nm->wdt);
    if (ok && glu) ok = ws[0]->out == ws[1]->out;
    gemv_set set;
    set.n = n;
    int64_t blocks = 0;
    for (int i = 0; ok && i < n; i++) {
        set.w[i] = cuda_nf4_args_of(ws[i]);
        set.y[i] = ys[i];
        ok = gemv_fast(set.w[i], xr) && set.w[i].in == in && (set.w[i].q8 != NULL) == (set.w[0].q8 != NULL);
        blocks += (set.w[i].out + gemv_block_rows(c) - 1) / gemv_block_rows(c);
    }
    if (!ok || blocks > INT32_MAX / 2) return PS_OK;
    fn(p, set, x, nm, glu, (int)T);
    CU_LAUNCH_CHECK(p);
    if (nm) p->counts.fused_norm++;
    if (glu) p->counts.fused_glu++;
    *done = true;
    return PS_OK;
}
