/* Internal header of the CUDA backend: the backend's private state, the check
 * macros every CUDA / cuBLAS call goes through, the device-side "bad index"
 * flag, and the entry points each kernels/cuda source provides.
 *
 * Errors: a failed CUDA or cuBLAS call becomes PS_EDEVICE naming the call and
 * file:line, and marks the backend dead (sticky): every later call answers
 * PS_EDEVICE with the first message, so the engine turns unhealthy instead of
 * computing wrong numbers. cudaMalloc running out of memory is PS_ENOMEM and
 * not sticky. Bad indices found on the device (token ids, rows, slots, pages)
 * are recorded in a small device flag and reported as PS_EINVAL by the next
 * sync or download; the kernels never read or write outside a buffer.
 *
 * Not for use outside kernels/cuda (C code sees ops.h and cuda_ext.h only). */
#ifndef PS_CUDA_COMMON_CUH
#define PS_CUDA_COMMON_CUH

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>

extern "C" {
#include "base/log.h"
#include "base/status.h"
#include "ops.h"
#include "cuda/cuda_ext.h"
}
#include "math/half.h"

/* ---- device flag: first bad index a kernel saw ---- */

enum {
    CUDA_FLAG_NONE = 0,
    CUDA_FLAG_EMBED_ID,   /* a = id, b = vocab, c = row */
    CUDA_FLAG_GATHER_ROW, /* a = row, b = rows of x, c = output row */
    CUDA_FLAG_KV_SLOT,    /* a = slot, b = slots in the cache, c = token */
    CUDA_FLAG_ATTN_META,  /* a = token, b = seq, c = kv_pos */
    CUDA_FLAG_ATTN_PAGE,  /* a = page id, b = pages in the cache, c = token */
};

/* cuBLAS workspace owned by the backend: a GEMM recorded into a step graph
 * (decode batches above gemv_max_t) then never asks for memory while the
 * stream is capturing, and every recording reuses the same buffer rather than
 * the library growing one per graph. 32 MiB: what cuBLAS itself takes on
 * Hopper by default. */
#define CUDA_BLAS_WORKSPACE ((size_t)32 << 20)

typedef struct {
    int code;
    int a, b, c;
} cuda_flag;

/* Records the first bad index; later ones are dropped (one message is enough). */
__device__ static inline void cuda_raise(cuda_flag *f, int code, int a, int b, int c) {
    if (atomicCAS(&f->code, 0, code) == 0) {
        f->a = a;
        f->b = b;
        f->c = c;
    }
}

/* ---- backend state ---- */

#define CUDA_GRAPH_CACHE 16 /* step graphs kept (graph.cu) */
#define CUDA_GRAPH_SEEN 64  /* keys remembered from their first (direct) run */

typedef struct {
    uint64_t key;
    cudaGraphExec_t exec; /* NULL = free entry */
    uint64_t used;        /* graph_clock at the last launch */
} cuda_graph_entry;

typedef struct {
    ps_backend be; /* first: be->impl points back here */
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    void *blas_ws; /* the handle's fixed workspace (CUDA_BLAS_WORKSPACE bytes) */
    char dev_name[256];
    int sm_count, cc_major, cc_minor;
    size_t total_mem, smem_optin, l2_bytes;
    cuda_flag *d_flag; /* device */
    cuda_flag *h_flag; /* pinned host copy read back at sync */
    bool dead;         /* sticky device error */
    cudaError_t launch_err; /* the first failed cuda_launch since the last CU_LAUNCH_CHECK */
    ps_err dead_err;
    /* 16-bit scratch for the cuBLAS paths, grown on demand (never per step
     * once the largest layer has been seen) */
    void *scratch_w;
    size_t scratch_w_bytes;
    void *scratch_x;
    size_t scratch_x_bytes;
    void *scratch_lora; /* (T, PS_LORA_MAX_RANK) f32 shrink results of lora_bgmv */
    size_t scratch_lora_bytes;
    /* split-K NF4 GEMV (nf4_gemv_v4.cu), grown on demand like the above:
     * partial sums (S, T, out) f32, and one int counter per row group that
     * every launch leaves at 0 (zeroed when (re)allocated) */
    void *gemv_part;
    size_t gemv_part_bytes;
    void *gemv_cnt;
    size_t gemv_cnt_bytes;
    /* RoPE inverse frequencies of the last (theta, D), computed on the host
     * with the shared ps_rope_inv_freq so they equal the CPU's bit for bit */
    float *rope_tab;
    float rope_theta;
    int rope_half; /* D / 2 the table holds; 0 = none */
    ps_cuda_tuning tune;
    void *att_part, *att_cnt; /* split decode attention: partials, ticket counters (attention.cu) */
    size_t att_part_bytes, att_cnt_bytes;
    /* step graphs (graph.cu) */
    cuda_graph_entry graphs[CUDA_GRAPH_CACHE];
    uint64_t graph_seen[CUDA_GRAPH_SEEN];
    int graph_seen_n;
    uint64_t graph_clock, capture_key;
    bool capturing;
    ps_cuda_counters counts; /* for tests and benchmarks (ps_cuda_get_counters) */
    struct cuda_prof *prof; /* per-op profiler state, NULL until first enabled (cuda_profile.cu) */
} cuda_impl;

#define CUDA_ROPE_MAX_HALF 2048 /* head dims up to 4096 */

static inline cuda_impl *cuda_of(ps_backend *be) { return (cuda_impl *)be->impl; }

/* Turns a failed call into PS_EDEVICE (sticky) or PS_ENOMEM (not sticky). */
ps_status cuda_fail(cuda_impl *p, cudaError_t e, const char *call, const char *file, int line,
                    ps_err *err);
ps_status cublas_fail(cuda_impl *p, cublasStatus_t s, const char *call, const char *file, int line,
                      ps_err *err);
/* PS_EDEVICE with the first sticky message when the backend is dead; makes the
 * backend's device current otherwise. Every entry point starts with it. */
ps_status cuda_enter(cuda_impl *p, ps_err *err);
/* Called after an op's launches: catches launch errors; in sync_each_op mode
 * also waits and checks the device flag so an error names its op. */
ps_status cuda_op_done(cuda_impl *p, const char *op, ps_err *err);
/* Waits for the stream and reports (then clears) the device flag. */
ps_status cuda_sync_and_check(cuda_impl *p, ps_err *err);
/* Step graphs (graph.cu): the backend table's graph_* entries, and dropping
 * every recorded graph (tuning change, destroy). */
ps_status cuda_graph_launch(ps_backend *be, uint64_t key, bool *launched, ps_err *err);
ps_status cuda_graph_begin(ps_backend *be, uint64_t key, bool *recording, ps_err *err);
ps_status cuda_graph_end(ps_backend *be, bool ok, bool *launched, ps_err *err);
void cuda_graphs_clear(cuda_impl *p);
/* Ensures *buf holds at least `bytes` (grows by reallocating; contents lost). */
ps_status cuda_scratch(cuda_impl *p, void **buf, size_t *have, size_t bytes, ps_err *err);

/* `err` must be in scope (every backend function has it as last parameter). */
#define CU_TRY(p, call)                                                                 \
    do {                                                                                \
        cudaError_t e_ = (call);                                                        \
        if (e_ != cudaSuccess) return cuda_fail((p), e_, #call, __FILE__, __LINE__, err); \
    } while (0)
#define CUBLAS_TRY(p, call)                                                                \
    do {                                                                                   \
        cublasStatus_t s_ = (call);                                                        \
        if (s_ != CUBLAS_STATUS_SUCCESS) return cublas_fail((p), s_, #call, __FILE__, __LINE__, err); \
    } while (0)
/* Checks the kernel launches since the last check right where they happened
 * (bad configuration): cuda_launch's own record, and the runtime's. */
static inline cudaError_t cuda_launch_result(cuda_impl *p) {
    cudaError_t e = p->launch_err, last = cudaGetLastError();
    p->launch_err = cudaSuccess;
    return e != cudaSuccess ? e : last;
}
#define CU_LAUNCH_CHECK(p) CU_TRY(p, cuda_launch_result(p))
#define PS_TRY(x)                      \
    do {                               \
        ps_status s_ = (x);            \
        if (s_ != PS_OK) return s_;    \
    } while (0)

/* ---- launches ----
 *
 * Programmatic dependent launch (Hopper; tune.pdl, PS_CUDA_PDL=1): a kernel
 * launched with the attribute may start while the kernel before it on the
 * stream is still running, once every block of that one has called
 * cudaTriggerProgrammaticLaunchCompletion(). Every kernel of the backend calls
 * it first thing, so the next one's blocks are placed, and its launch latency
 * spent, while this one works. In exchange every kernel launched through
 * cuda_launch must call cudaGridDependencySynchronize() (it returns when the
 * previous kernel has completed and its writes are visible) before it reads
 * anything an earlier kernel wrote or writes anything an earlier kernel reads:
 * cuda_pdl_enter() at the top, or, as the NF4 GEMVs do, after a prologue that
 * only reads the frozen weights, which then stream in while the previous
 * kernel finishes. Without the attribute the synchronisation returns at once.
 * The CPU emulator runs the first block of a PDL launch up to its
 * synchronisation before finishing the previous kernel, so reading too early
 * gives wrong numbers there (tests/gpu/emu). */
__device__ static inline void cuda_pdl_enter(void) {
    cudaTriggerProgrammaticLaunchCompletion();
    cudaGridDependencySynchronize();
}

/* kernel<<<grid, block, smem, p->stream>>>(args), with programmatic
 * dependent launch allowed when tune.pdl; a failure is recorded for the next
 * CU_LAUNCH_CHECK. */
template <typename... KArgs, typename... Args>
static inline void cuda_launch(cuda_impl *p, void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
                               Args &&...args) {
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = p->stream;
    cfg.attrs = attr;
    cfg.numAttrs = p->tune.pdl ? 1 : 0;
    cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, static_cast<Args &&>(args)...);
    if (e != cudaSuccess && p->launch_err == cudaSuccess) p->launch_err = e;
    p->counts.kernels++;
}

/* Lets `kernel` launch with `bytes` of dynamic shared memory: raises its
 * limit when bytes passes *allowed (the largest allowed so far, 0 at first;
 * a static per kernel instantiation), so the host call (~1 us) happens once
 * per kernel and size, not per launch. A failure shows in the launch check
 * that follows (cudaGetLastError). */
template <typename K> static inline void cuda_allow_smem(K kernel, int bytes, int *allowed) {
    if (bytes <= *allowed) return;
    (void)cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    *allowed = bytes;
}

/* ---- launch geometry ---- */

#define CUDA_EW_THREADS 256
/* Grid for a grid-stride loop over n items: enough blocks to fill the chip,
 * capped so the block count stays a valid grid dimension. */
static inline unsigned cuda_ew_blocks(const cuda_impl *p, int64_t n) {
    int64_t b = (n + CUDA_EW_THREADS - 1) / CUDA_EW_THREADS;
    int64_t cap = (int64_t)p->sm_count * 32;
    if (b > cap) b = cap;
    if (b < 1) b = 1;
    return (unsigned)b;
}

static inline int64_t cuda_last_dim(const ps_tensor *t) { return t->ndim ? t->shape[t->ndim - 1] : 1; }
static inline int64_t cuda_rows(const ps_tensor *t) {
    int64_t c = cuda_last_dim(t);
    return c ? ps_tensor_numel(t) / c : 0;
}

/* f16 -> f32 on the device in one instruction: half.h's ps_f16_to_f32
 * compiles to ~25 instructions with branches per element (the split
 * attention kernel over an F16 KV cache had 3609 SASS instructions against
 * 1970 for F32; 2071 with this). Widening is exact, so both give the same
 * value for every input but a NaN's payload. Off the device (the CPU
 * emulator of tests/gpu/emu) half.h itself. */
__device__ static __forceinline__ float cuda_f16_to_f32(uint16_t h) {
#ifdef __CUDA_ARCH__
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#else
    return ps_f16_to_f32(h);
#endif
}

/* Reads element i of a F32 / F16 / BF16 array (DT = ps_dtype) as float:
 * the exact widenings of kernels/math/half.h. */
template <int DT> __device__ static inline float cuda_ld(const void *p, int64_t i) {
    if constexpr (DT == PS_DT_F32) return ((const float *)p)[i];
    else if constexpr (DT == PS_DT_F16) return cuda_f16_to_f32(((const uint16_t *)p)[i]);
    else return ps_bf16_to_f32(((const uint16_t *)p)[i]);
}

/* ---- 16-byte vector access for the element-wise and row kernels ---- */

/* Four 16-bit values read in one 8-byte load (own type: the CPU emulator of
 * tests/gpu/emu has no ushort4). */
struct alignas(8) cuda_u16x4 {
    uint16_t v[4];
};

/* Elements 4*i4 .. 4*i4+3 of a F32 / F16 / BF16 array as floats, in one
 * 16-byte (F32) or 8-byte (16-bit) load; p must be aligned to that size
 * (cuda_ld4_ok). Same conversions as cuda_ld. */
template <int DT> __device__ static inline float4 cuda_ld4(const void *p, int64_t i4) {
    if constexpr (DT == PS_DT_F32) {
        return ((const float4 *)p)[i4];
    } else {
        cuda_u16x4 h = ((const cuda_u16x4 *)p)[i4];
        if constexpr (DT == PS_DT_F16)
            return make_float4(cuda_f16_to_f32(h.v[0]), cuda_f16_to_f32(h.v[1]), cuda_f16_to_f32(h.v[2]),
                               cuda_f16_to_f32(h.v[3]));
        else
            return make_float4(ps_bf16_to_f32(h.v[0]), ps_bf16_to_f32(h.v[1]), ps_bf16_to_f32(h.v[2]),
                               ps_bf16_to_f32(h.v[3]));
    }
}

/* The stores matching cuda_ld / cuda_ld4: v rounded to DT to nearest, ties
 * to even (ps_f32_to_f16 / ps_f32_to_bf16 of half.h; F32: as is). */
template <int DT> __device__ static inline void cuda_st(void *p, int64_t i, float v) {
    if constexpr (DT == PS_DT_F32) ((float *)p)[i] = v;
    else if constexpr (DT == PS_DT_F16) ((uint16_t *)p)[i] = ps_f32_to_f16(v);
    else ((uint16_t *)p)[i] = ps_f32_to_bf16(v);
}
template <int DT> __device__ static inline void cuda_st4(void *p, int64_t i4, float4 f) {
    if constexpr (DT == PS_DT_F32) {
        ((float4 *)p)[i4] = f;
    } else {
        cuda_u16x4 h;
        if constexpr (DT == PS_DT_F16)
            h.v[0] = ps_f32_to_f16(f.x), h.v[1] = ps_f32_to_f16(f.y), h.v[2] = ps_f32_to_f16(f.z),
            h.v[3] = ps_f32_to_f16(f.w);
        else
            h.v[0] = ps_f32_to_bf16(f.x), h.v[1] = ps_f32_to_bf16(f.y), h.v[2] = ps_f32_to_bf16(f.z),
            h.v[3] = ps_f32_to_bf16(f.w);
        ((cuda_u16x4 *)p)[i4] = h;
    }
}

static inline bool cuda_aligned(const void *p, size_t bytes) { return (uintptr_t)p % bytes == 0; }
/* Sum of v over the block, every thread gets it: warp trees, then the
 * warps' sums added in warp order (smem: blockDim.x / 32 entries, free to
 * reuse once the call returns). The row norms (norm.cu) and the v6 GEMV's
 * fused norm share it, so both give the same bits. */
template <typename T> __device__ static T cuda_block_sum(T v, T *smem) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
    __syncthreads(); /* smem may still be read from a previous call */
    if (lane == 0) smem[warp] = v;
    __syncthreads();
    T s = 0;
    for (int w = 0; w < nw; w++) s += smem[w];
    return s;
}

/* Whether cuda_ld4 may read an array of dtype dt at p (4 elements' alignment). */
static inline bool cuda_ld4_ok(const void *p, ps_dtype dt) { return cuda_aligned(p, 4 * ps_dtype_size(dt)); }

/* ---- op entry points (one file each, see the file headers) ---- */

ps_status cuda_embed(ps_backend *be, ps_tensor *out, const ps_tensor *table, const ps_tensor *ids,
                     ps_err *err);
ps_status cuda_add_bias(ps_backend *be, ps_tensor *y, const ps_tensor *bias, ps_err *err);
ps_status cuda_silu_mul(ps_backend *be, ps_tensor *out, const ps_tensor *gate, const ps_tensor *up,
                        ps_err *err);
ps_status cuda_activate(ps_backend *be, ps_tensor *x, int act, ps_err *err);
ps_status cuda_add(ps_backend *be, ps_tensor *x, const ps_tensor *y, ps_err *err);
ps_status cuda_gather_rows(ps_backend *be, ps_tensor *out, const ps_tensor *x,
                           const ps_tensor *rows, ps_err *err);
ps_status cuda_kv_store(ps_backend *be, ps_kv_layer *kv, const ps_tensor *k, const ps_tensor *v,
                        const ps_tensor *slots, ps_err *err);
ps_status cuda_rope_store(ps_backend *be, ps_tensor *q, ps_tensor *k, const ps_tensor *v,
                          const ps_tensor *pos, float theta, ps_kv_layer *kv, const ps_tensor *slots,
                          ps_err *err);
ps_status cuda_add_rmsnorm(ps_backend *be, ps_tensor *out, ps_tensor *x_out, const ps_tensor *x,
                           const ps_tensor *y, const ps_tensor *w, float eps, ps_err *err);
ps_status cuda_rmsnorm(ps_backend *be, ps_tensor *out, const ps_tensor *x, const ps_tensor *w,
                       float eps, ps_err *err);
ps_status cuda_layernorm(ps_backend *be, ps_tensor *out, const ps_tensor *x, const ps_tensor *w,
                         const ps_tensor *b, float eps, ps_err *err);
ps_status cuda_rope(ps_backend *be, ps_tensor *x, const ps_tensor *pos, float theta, ps_err *err);
ps_status cuda_attention(ps_backend *be, ps_tensor *out, const ps_tensor *q, const ps_kv_layer *kv,
                         const ps_attn_meta *meta, float scale, ps_err *err);
ps_status cuda_attention_dense(ps_backend *be, ps_tensor *out, const ps_tensor *q,
                               const ps_tensor *k, const ps_tensor *v, bool causal, float scale,
                               ps_err *err);
ps_status cuda_lora_bgmv(ps_backend *be, ps_tensor *y, const ps_tensor *x,
                         const ps_lora_batch *lb, ps_err *err);
ps_status cuda_lora_bgmv_n(ps_backend *be, int n, ps_tensor *const *ys, const ps_tensor *x,
                           const ps_lora_batch *const *lbs, ps_err *err);
ps_status cuda_attention_init(cuda_impl *p, ps_err *err); /* raises smem limits once */
ps_status cuda_linear(ps_backend *be, ps_tensor *y, const ps_tensor *x, const ps_weight *w,
                      ps_err *err);
/* The path cuda_linear takes for T rows under the current tuning: GEMV or GEMM
 * (never AUTO). The profiler keys linear calls by it. */
int cuda_linear_path(const cuda_impl *p, int64_t T);
ps_status cuda_linear_n(ps_backend *be, int n, ps_tensor *const *ys, const ps_tensor *x,
                        const ps_weight *const *ws, ps_err *err);
ps_status cuda_add_rmsnorm_linear_n(ps_backend *be, ps_tensor *h, ps_tensor *x_out, const ps_tensor *x,
                                    const ps_tensor *y, const ps_tensor *w, float eps, int n,
                                    ps_tensor *const *ys, const ps_weight *const *ws, ps_err *err);
ps_status cuda_add_rmsnorm_swiglu(ps_backend *be, ps_tensor *h, ps_tensor *x_out, const ps_tensor *x,
                                  const ps_tensor *y, const ps_tensor *w, float eps, const ps_weight *wg,
                                  const ps_weight *wu, ps_tensor *g, ps_tensor *u, ps_tensor *a, ps_err *err);

/* Linear building blocks (linear.cu dispatches between them). All F32 x/y. */
/* y (T, out) = x (T, in) W^T for an NF4 W, decoding on the fly; any T (chunks of 8). */
ps_status cuda_nf4_gemv(cuda_impl *p, float *y, const float *x, int64_t T, const ps_nf4 *w,
                        ps_err *err);
/* The same for n (1..3) weights of one x (op_linear_n), as one launch when the
 * configured kernel allows. */
ps_status cuda_nf4_gemv_n(cuda_impl *p, int n, float *const *ys, const float *x, int64_t T,
                          const ps_nf4 *const *ws, ps_err *err);
/* The residual add + RMSNorm of op_add_rmsnorm_linear_n / _swiglu, for a
 * GEMV that stages its x itself: rows of in floats. */
typedef struct {
    const float *x, *y;  /* (T, in): the residual stream and what joins it */
    const void *w;       /* the norm weight (in), dtype wdt: F32, F16 or BF16 */
    int wdt;
    float eps;
    float *x_out, *h;    /* (T, in): x + y, and rmsnorm(x + y) w */
} cuda_norm_args;
/* One v6 launch for n NF4 weights of one x with the ops around them fused in,
 * when the configured GEMV for T rows is a v6 with 8 warps and every tensor
 * takes the fused path (same bits as the separate kernels): nm != NULL, the
 * add + RMSNorm as its x staging (x unused; x staged must fit); glu (n = 2,
 * {gate, up} of one shape), ys[0] = silu(x gate^T) * (x up^T). *done = false:
 * nothing launched. Counted in p->counts. */
ps_status cuda_nf4_gemv_fused(cuda_impl *p, int n, float *const *ys, int64_t T, const ps_nf4 *const *ws,
                              const float *x, const cuda_norm_args *nm, bool glu, bool *done, ps_err *err);
/* The same through a bf16 copy of W in scratch and cublasGemmEx (x rounded to bf16). */
ps_status cuda_nf4_gemm(cuda_impl *p, float *y, const float *x, int64_t T, const ps_nf4 *w,
                        ps_err *err);
/* Dense W (out, in) F32/F16/BF16: GEMV kernels for small T, cuBLAS for large T. */
ps_status cuda_dense_gemv(cuda_impl *p, float *y, const float *x, int64_t T, const ps_tensor *w,
                          ps_err *err);
ps_status cuda_dense_gemm(cuda_impl *p, float *y, const float *x, int64_t T, const ps_tensor *w,
                          ps_err *err);
/* F32 -> 16-bit (bf16 or f16 bits, same rounding as kernels/math/half.h). */
ps_status cuda_f32_to_16(cuda_impl *p, uint16_t *dst, const float *src, int64_t n, bool bf16,
                         ps_err *err);

#endif
