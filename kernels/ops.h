/* The one op interface: tensors (views), weights, the backend table and the
 * public op_* entry points that check once and dispatch.
 *
 * Every model (llama, clip, ...) is written against op_* only, so it runs on
 * any backend that fills the table: kernels/cpu (plain C, the test oracle and
 * its fast variants) and kernels/cuda. A NULL table entry means "not
 * supported": op_* answers PS_ENOTSUP naming the op and the backend.
 *
 * Conventions
 *  - Tensors are contiguous row-major views; they never own memory. Shapes are
 *    written outermost first, as in comments: (T, C) = T rows of C.
 *  - Activations are F32 unless a backend documents otherwise; weights may be
 *    F32/F16/BF16 (dense) or NF4 with double quantisation (ps_nf4).
 *  - Index tensors (ids, positions, block tables) are I32 on the backend's
 *    device: the engine uploads one step's metadata once, ops just read it.
 *  - Ops are asynchronous on devices that queue (CUDA): call ps_backend_sync
 *    or download (which syncs) before reading results on the host.
 *
 * Usage:
 *   ps_backend *be; ps_backend_cpu_create(2, &be, &err);
 *   op_rmsnorm(be, &h, &x, &w, 1e-5f, &err);
 *   ps_backend_destroy(be);
 */
#ifndef PS_KERNELS_OPS_H
#define PS_KERNELS_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef enum { PS_DT_F32 = 0, PS_DT_F16, PS_DT_BF16, PS_DT_I32, PS_DT_U8 } ps_dtype;
typedef enum { PS_DEV_CPU = 0, PS_DEV_CUDA } ps_device;

size_t ps_dtype_size(ps_dtype dt);
const char *ps_dtype_name(ps_dtype dt);

#define PS_MAX_DIMS 4

/* A contiguous row-major view. Never owns `data`. */
typedef struct {
    ps_dtype dtype;
    int ndim;
    int64_t shape[PS_MAX_DIMS];
    void *data;
    ps_device dev;
} ps_tensor;

ps_tensor ps_tensor_1d(ps_dtype dt, int64_t n, void *data, ps_device dev);
ps_tensor ps_tensor_2d(ps_dtype dt, int64_t rows, int64_t cols, void *data, ps_device dev);
ps_tensor ps_tensor_3d(ps_dtype dt, int64_t a, int64_t b, int64_t c, void *data, ps_device dev);
int64_t ps_tensor_numel(const ps_tensor *t);
size_t ps_tensor_nbytes(const ps_tensor *t);
/* Rows [row0, row0+n) of the outermost dimension, as a view. */
ps_tensor ps_tensor_rows(const ps_tensor *t, int64_t row0, int64_t n);

/* NF4 weight W (out, in) with bitsandbytes semantics: the row-major flattening
 * of W is cut into blocks of 64 consecutive elements (blocks may span rows);
 * codes are packed two per byte, FIRST element in the HIGH nibble. The block
 * scale is either plain (absmax != NULL) or double-quantised:
 *   absmax'[b] = dq_code[absmax_q8[b]] * absmax2[b / 256] + offset
 * Never owns its arrays. Math lives in kernels/math/nf4.h. */
typedef struct {
    int64_t out, in;
    const uint8_t *packed;    /* (ceil(out*in/2)) */
    const uint8_t *absmax_q8; /* (nblocks) DQ codes, NULL without DQ */
    const float *absmax2;     /* (ceil(nblocks/256)) DQ block scales */
    float offset;             /* DQ mean offset */
    const float *absmax;      /* (nblocks) plain scales, NULL with DQ */
    ps_device dev;
} ps_nf4;

#define PS_NF4_BLOCK 64
#define PS_NF4_DQ_BLOCK 256

typedef enum { PS_WEIGHT_DENSE = 0, PS_WEIGHT_NF4 } ps_weight_kind;

/* A linear layer's weight (out, in): y = x W^T. */
typedef struct {
    ps_weight_kind kind;
    ps_tensor dense; /* (out, in) F32/F16/BF16 when kind == DENSE */
    ps_nf4 nf4;      /* when kind == NF4 */
} ps_weight;

int64_t ps_weight_out(const ps_weight *w);
int64_t ps_weight_in(const ps_weight *w);

/* One layer's paged KV cache: pages of `page_size` token slots. Slot s of the
 * cache is page s / page_size, row s % page_size. Entries are F32, F16 or
 * BF16 (both tensors alike): kv_store / rope_store round the f32 k and v to
 * the cache dtype (to nearest, ties to even: ps_f32_to_f16 / ps_f32_to_bf16
 * of math/half.h), attention widens them back exactly and computes in f32. */
typedef struct {
    int page_size;
    ps_tensor k; /* (n_pages, page_size, n_kv, D) */
    ps_tensor v; /* (n_pages, page_size, n_kv, D) */
} ps_kv_layer;

/* Per-step attention metadata (all I32 on the backend's device).
 * Token t belongs to sequence tok_seq[t]; its own KV entry is at index
 * tok_kv_pos[t] of that sequence and it attends to entries 0..tok_kv_pos[t]
 * (prefix-tuning entries included: they sit at indices 0..P-1). Entry i of
 * sequence s lives at slot block_tables[s, i / page_size] * page_size + i % page_size. */
typedef struct {
    int n_tokens, n_seqs, max_pages;
    ps_tensor tok_seq;      /* (T) */
    ps_tensor tok_kv_pos;   /* (T) */
    ps_tensor block_tables; /* (S, max_pages) page ids */
    int max_kv_len;         /* max over tokens of tok_kv_pos + 1 (host-side hint) */
} ps_attn_meta;

/* Multi-adapter LoRA for one projection of one layer (the BGMV/SGMV idea of
 * Punica and S-LoRA): the tokens of one step may each use a different LoRA
 * adapter, or none, and the deltas are added next to the frozen base output
 * y = x W^T, never merged into W and never by splitting the batch per adapter.
 *
 * The engine builds, per step, one slot per distinct adapter in the batch and
 * gives every token its slot (or -1); per (layer, projection) it fills the
 * slots' A/B pointers (A == NULL when that adapter leaves the projection
 * alone). Semantics (PEFT tuners/lora/layer.py Linear.forward):
 *   for every token t with s = tok_slot[t] >= 0 and slots[s].A != NULL:
 *     v = A_s x[t]          (r_s values, fp32 accumulation; 16-bit A/B widened exactly)
 *     y[t] += scale_s * (B_s v)   (B_s as PEFT's (out, r); stored transposed, see below)
 * Rows of tokens with no LoRA are left bit-identical. The result for token t
 * depends only on x[t] and its slot (batch invariant): a backend may group
 * tokens by slot (SGMV segments) or gather per token (BGMV), but the sum order
 * inside one token's dot products must not depend on T or on the grouping. */
#define PS_LORA_MAX_RANK 512

typedef struct {
    const void *A;  /* (r, in) row-major on the backend's device; NULL = not adapted */
    const void *B;  /* (r, out) row-major: lora_B.weight (out, r) TRANSPOSED, so the
                     * expand streams contiguous rows (CPU vectors, coalesced GPU loads) */
    ps_dtype dtype; /* of A and B: F32, F16 or BF16 (an adapter keeps its file's
                     * 16-bit dtype: half the bytes a step reads); math is F32 */
    int r;          /* 1..PS_LORA_MAX_RANK when A != NULL */
    float scale;    /* lora_alpha / r, or lora_alpha / sqrt(r) with rsLoRA */
} ps_lora_slot;

typedef struct {
    int n_slots;
    const ps_lora_slot *slots; /* (n_slots) host array; device pointers inside */
    const int32_t *tok_slot;   /* (T) host: slot of token t, -1 = no LoRA */
    ps_tensor tok_slot_dev;    /* (T) I32 copy on the device for device backends
                                * (uploaded once per step); unused by the CPU backend */
} ps_lora_batch;

typedef struct ps_backend ps_backend;

/* The backend table. Entries below "ops" may be NULL (not supported).
 * Backend code may assume op_* already checked dtypes, shapes and devices. */
struct ps_backend {
    const char *name;
    ps_device dev;
    void *impl;

    ps_status (*alloc)(ps_backend *be, size_t nbytes, void **out, ps_err *err);
    void (*free)(ps_backend *be, void *ptr);
    ps_status (*upload)(ps_backend *be, void *dst, const void *src, size_t n, ps_err *err);
    ps_status (*download)(ps_backend *be, void *dst, const void *src, size_t n, ps_err *err);
    ps_status (*sync)(ps_backend *be, ps_err *err);
    void (*destroy)(ps_backend *be);

    /* ---- step graphs (optional, see ps_graph_run below) ---- */
    /* launches the graph recorded under key; *launched = false when there is none */
    ps_status (*graph_launch)(ps_backend *be, uint64_t key, bool *launched, ps_err *err);
    /* starts recording under key, or answers *recording = false (not now: disabled,
     * first sighting of the key, cache policy); while recording, ops are recorded
     * and NOT run */
    ps_status (*graph_begin)(ps_backend *be, uint64_t key, bool *recording, ps_err *err);
    /* stops recording; ok: keeps the graph under its key and launches it once (the
     * recorded step has not run yet), *launched = true; !ok, or a recording the
     * device refused (logged; graphs are then switched off): dropped, *launched =
     * false and the caller runs the step directly */
    ps_status (*graph_end)(ps_backend *be, bool ok, bool *launched, ps_err *err);

    /* ---- ops ---- */
    /* out (T, C) F32 = table[ids[t]] ; table (V, C) F32/F16/BF16, ids (T) I32 */
    ps_status (*embed)(ps_backend *be, ps_tensor *out, const ps_tensor *table,
                       const ps_tensor *ids, ps_err *err);
    /* y (T, out) = x (T, in) W^T, F32 in and out */
    ps_status (*linear)(ps_backend *be, ps_tensor *y, const ps_tensor *x, const ps_weight *w,
                        ps_err *err);
    /* n (<= PS_LINEAR_N_MAX) linears of one x in one call (optional; NULL:
     * op_linear_n calls linear n times); each ys[i] as linear(ys[i], x, ws[i]) */
    ps_status (*linear_n)(ps_backend *be, int n, ps_tensor *const *ys, const ps_tensor *x,
                          const ps_weight *const *ws, ps_err *err);
    /* y (T, N) += bias (N) */
    ps_status (*add_bias)(ps_backend *be, ps_tensor *y, const ps_tensor *bias, ps_err *err);
    /* out (T, C) = w * x / sqrt(mean(x^2) + eps); w (C) any float dtype */
    ps_status (*rmsnorm)(ps_backend *be, ps_tensor *out, const ps_tensor *x, const ps_tensor *w,
                         float eps, ps_err *err);
    /* x_out (T, C) = x + y, then out = rmsnorm(x_out) as above, in one pass
     * (the residual add before a norm; x_out may be x); NULL: op_add_rmsnorm
     * runs add, then rmsnorm */
    ps_status (*add_rmsnorm)(ps_backend *be, ps_tensor *out, ps_tensor *x_out, const ps_tensor *x,
                             const ps_tensor *y, const ps_tensor *w, float eps, ps_err *err);
    /* add_rmsnorm into x_out (never x or y), then linear_n of its output
     * (optional; NULL: op_add_rmsnorm_linear_n runs the two): a backend may
     * run the three as one launch whose every block reads all of x and y */
    ps_status (*add_rmsnorm_linear_n)(ps_backend *be, ps_tensor *h, ps_tensor *x_out, const ps_tensor *x,
                                      const ps_tensor *y, const ps_tensor *w, float eps, int n,
                                      ps_tensor *const *ys, const ps_weight *const *ws, ps_err *err);
    /* add_rmsnorm into x_out, then a = silu(h wg^T) * (h wu^T) (optional;
     * NULL: op_add_rmsnorm_swiglu runs add_rmsnorm_linear_n into g and u,
     * then silu_mul); g and u are scratch a fused backend may leave as they were */
    ps_status (*add_rmsnorm_swiglu)(ps_backend *be, ps_tensor *h, ps_tensor *x_out, const ps_tensor *x,
                                    const ps_tensor *y, const ps_tensor *w, float eps, const ps_weight *wg,
                                    const ps_weight *wu, ps_tensor *g, ps_tensor *u, ps_tensor *a, ps_err *err);
    /* out (T, C) = (x - mean) / sqrt(var + eps) * w + b */
    ps_status (*layernorm)(ps_backend *be, ps_tensor *out, const ps_tensor *x,
                           const ps_tensor *w, const ps_tensor *b, float eps, ps_err *err);
    /* x (T, H, D) rotated in place, HF rotate_half layout, angle pos[t] * theta^(-2i/D) */
    ps_status (*rope)(ps_backend *be, ps_tensor *x, const ps_tensor *pos, float theta,
                      ps_err *err);
    /* rope(q), rope(k), then kv_store(k, v) in one pass (optional; NULL: op_rope_store
     * runs the three ops) */
    ps_status (*rope_store)(ps_backend *be, ps_tensor *q, ps_tensor *k, const ps_tensor *v,
                            const ps_tensor *pos, float theta, ps_kv_layer *kv,
                            const ps_tensor *slots, ps_err *err);
    /* writes k, v (T, n_kv, D) into the cache at slots (T) I32 */
    ps_status (*kv_store)(ps_backend *be, ps_kv_layer *kv, const ps_tensor *k, const ps_tensor *v,
                          const ps_tensor *slots, ps_err *err);
    /* out (T, H, D) = softmax(q k^T * scale) v over the paged cache (see ps_attn_meta);
     * query head h reads KV head h / (H / n_kv) */
    ps_status (*attention)(ps_backend *be, ps_tensor *out, const ps_tensor *q,
                           const ps_kv_layer *kv, const ps_attn_meta *meta, float scale,
                           ps_err *err);
    /* dense attention for encoders: q, k, v (B, T, H, D) -> out (B, T, H, D); causal or full */
    ps_status (*attention_dense)(ps_backend *be, ps_tensor *out, const ps_tensor *q,
                                 const ps_tensor *k, const ps_tensor *v, bool causal, float scale,
                                 ps_err *err);
    /* out (T, N) = silu(gate) * up */
    ps_status (*silu_mul)(ps_backend *be, ps_tensor *out, const ps_tensor *gate,
                          const ps_tensor *up, ps_err *err);
    /* x = act(x) in place; act: PS_ACT_* */
    ps_status (*activate)(ps_backend *be, ps_tensor *x, int act, ps_err *err);
    /* x += y (same shape) */
    ps_status (*add)(ps_backend *be, ps_tensor *x, const ps_tensor *y, ps_err *err);
    /* out (R, C) = x[rows[r]] ; x (T, C), rows (R) I32 */
    ps_status (*gather_rows)(ps_backend *be, ps_tensor *out, const ps_tensor *x,
                             const ps_tensor *rows, ps_err *err);
    /* y (T, out) += per-token LoRA deltas, see ps_lora_batch */
    ps_status (*lora_bgmv)(ps_backend *be, ps_tensor *y, const ps_tensor *x,
                           const ps_lora_batch *lb, ps_err *err);
    /* lora_bgmv of n projections of one x (optional; NULL: n lora_bgmv calls) */
    ps_status (*lora_bgmv_n)(ps_backend *be, int n, ps_tensor *const *ys, const ps_tensor *x,
                             const ps_lora_batch *const *lbs, ps_err *err);
};

enum { PS_ACT_SILU = 0, PS_ACT_GELU, PS_ACT_QUICK_GELU, PS_ACT_RELU };

/* Backends. `threads` <= 0 means all online CPUs. */
ps_status ps_backend_cpu_create(int threads, ps_backend **out, ps_err *err);
/* Returns PS_ENOTSUP when built without CUDA, PS_EDEVICE when no usable GPU. */
ps_status ps_backend_cuda_create(int device_index, ps_backend **out, ps_err *err);
void ps_backend_destroy(ps_backend *be);

/* Buffer helpers (checked wrappers over the table). */
ps_status ps_buf_alloc(ps_backend *be, size_t nbytes, void **out, ps_err *err);
void ps_buf_free(ps_backend *be, void *ptr);
ps_status ps_buf_upload(ps_backend *be, void *dst, const void *src, size_t n, ps_err *err);
ps_status ps_buf_download(ps_backend *be, void *dst, const void *src, size_t n, ps_err *err);
ps_status ps_backend_sync(ps_backend *be, ps_err *err);

/* Step graphs: a device backend can record the ops of one step and replay
 * them with one launch (CUDA graphs), removing the per-op launch cost that
 * dominates small decode steps. The caller guarantees that every value the
 * recorded ops take from the host (shapes, buffer addresses, weights, paths)
 * is fixed for a given key; only the contents of device buffers (step
 * metadata uploaded before the run) may differ between replays. ps_graph_run
 * either replays key, or records `body` under it and runs the recording, or
 * (backend without graphs, or declining) just calls body. Between body's ops
 * nothing may synchronise or read results back. */
typedef ps_status (*ps_graph_body_fn)(void *ctx, ps_err *err);
ps_status ps_graph_run(ps_backend *be, uint64_t key, ps_graph_body_fn body, void *ctx,
                       ps_err *err);

/* Public ops: check dtypes/shapes/devices once, then dispatch. */
ps_status op_embed(ps_backend *be, ps_tensor *out, const ps_tensor *table, const ps_tensor *ids,
                   ps_err *err);
ps_status op_linear(ps_backend *be, ps_tensor *y, const ps_tensor *x, const ps_weight *w,
                    ps_err *err);
/* n (1..PS_LINEAR_N_MAX) linear layers reading the same x (q, k, v; gate, up):
 * ys[i] = x ws[i]^T, the same results as n op_linear calls, bit for bit; a
 * backend may run them as one launch (fewer, larger kernels at decode). */
#define PS_LINEAR_N_MAX 3
ps_status op_linear_n(ps_backend *be, int n, ps_tensor *const *ys, const ps_tensor *x,
                      const ps_weight *const *ws, ps_err *err);
ps_status op_add_bias(ps_backend *be, ps_tensor *y, const ps_tensor *bias, ps_err *err);
ps_status op_rmsnorm(ps_backend *be, ps_tensor *out, const ps_tensor *x, const ps_tensor *w,
                     float eps, ps_err *err);
/* x += y; out = rmsnorm(x) (the residual stream updated in place, then normed).
 * Same results as op_add followed by op_rmsnorm, bit for bit, on every backend. */
ps_status op_add_rmsnorm(ps_backend *be, ps_tensor *out, ps_tensor *x, const ps_tensor *y,
                         const ps_tensor *w, float eps, ps_err *err);
/* The start of a transformer block in one call: x_out = x + y; h = rmsnorm(x_out) w;
 * ys[i] = h ws[i]^T (n = 1..PS_LINEAR_N_MAX). Bit for bit what op_add_rmsnorm
 * (with the sum written to x_out, x left as it was) and op_linear_n give.
 * x_out, h and every ys[i] are distinct buffers, none of them x or y: a backend
 * may fuse the norm into the projections' launch (CUDA: v6 at decode), where
 * every block reads all of x and y while some write x_out and h. */
ps_status op_add_rmsnorm_linear_n(ps_backend *be, ps_tensor *h, ps_tensor *x_out, const ps_tensor *x,
                                  const ps_tensor *y, const ps_tensor *w, float eps, int n,
                                  ps_tensor *const *ys, const ps_weight *const *ws, ps_err *err);
/* The start of a gated MLP (LlamaMLP without LoRA on gate or up) in one call:
 * op_add_rmsnorm_linear_n(h, x_out, x, y, w, eps, {g, u}, {wg, wu}), then
 * a = silu(g) * u (op_silu_mul): the bits of those ops in h, x_out and a.
 * g and u (T, F) are scratch: afterwards they hold the projections or what
 * they held before (a backend may fuse the gate/up pair and the silu into
 * one launch that never writes them). All of h, x_out, g, u, a distinct, none
 * of them x or y. */
ps_status op_add_rmsnorm_swiglu(ps_backend *be, ps_tensor *h, ps_tensor *x_out, const ps_tensor *x,
                                const ps_tensor *y, const ps_tensor *w, float eps, const ps_weight *wg,
                                const ps_weight *wu, ps_tensor *g, ps_tensor *u, ps_tensor *a, ps_err *err);
ps_status op_layernorm(ps_backend *be, ps_tensor *out, const ps_tensor *x, const ps_tensor *w,
                       const ps_tensor *b, float eps, ps_err *err);
ps_status op_rope(ps_backend *be, ps_tensor *x, const ps_tensor *pos, float theta, ps_err *err);
ps_status op_kv_store(ps_backend *be, ps_kv_layer *kv, const ps_tensor *k, const ps_tensor *v,
                      const ps_tensor *slots, ps_err *err);
/* q (T, H, D) and k (T, n_kv, D) rotated in place at pos, then k and v stored
 * at slots: op_rope(q), op_rope(k), op_kv_store(k, v), bit for bit. */
ps_status op_rope_store(ps_backend *be, ps_tensor *q, ps_tensor *k, const ps_tensor *v,
                        const ps_tensor *pos, float theta, ps_kv_layer *kv, const ps_tensor *slots,
                        ps_err *err);
ps_status op_attention(ps_backend *be, ps_tensor *out, const ps_tensor *q, const ps_kv_layer *kv,
                       const ps_attn_meta *meta, float scale, ps_err *err);
ps_status op_attention_dense(ps_backend *be, ps_tensor *out, const ps_tensor *q,
                             const ps_tensor *k, const ps_tensor *v, bool causal, float scale,
                             ps_err *err);
ps_status op_silu_mul(ps_backend *be, ps_tensor *out, const ps_tensor *gate, const ps_tensor *up,
                      ps_err *err);
ps_status op_activate(ps_backend *be, ps_tensor *x, int act, ps_err *err);
ps_status op_add(ps_backend *be, ps_tensor *x, const ps_tensor *y, ps_err *err);
ps_status op_gather_rows(ps_backend *be, ps_tensor *out, const ps_tensor *x,
                         const ps_tensor *rows, ps_err *err);
/* y (T, out) F32 += LoRA deltas of x (T, in) F32 per token (see ps_lora_batch).
 * Checks slot indices, ranks and pointers; in/out come from x and y. */
ps_status op_lora_bgmv(ps_backend *be, ps_tensor *y, const ps_tensor *x, const ps_lora_batch *lb,
                       ps_err *err);
/* n (1..PS_LINEAR_N_MAX) projections of one x (q, k, v; gate, up): ys[i] +=
 * the deltas of lbs[i] (each with its own slots; the tokens' slot indices are
 * those of the step), bit for bit n op_lora_bgmv calls; a backend may run
 * them as one launch per kernel. The ys are distinct buffers. */
ps_status op_lora_bgmv_n(ps_backend *be, int n, ps_tensor *const *ys, const ps_tensor *x,
                         const ps_lora_batch *const *lbs, ps_err *err);

#endif
