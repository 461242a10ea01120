/* The plain C backend: a thread pool plus one function per op. Each op has a
 * naive reference version (the oracle the fast variants and the CUDA backend
 * are tested against) and, where it matters, a fast version used by default. */
#ifndef PS_CPU_BACKEND_H
#define PS_CPU_BACKEND_H

#include "ops.h"

/* Runs fn(ctx, begin, end) over [0, n) split into contiguous chunks, one per
 * worker thread (the caller's thread works too). Returns when all are done.
 * Not reentrant: call from one thread at a time per backend. */
typedef void (*cpu_range_fn)(void *ctx, int64_t begin, int64_t end);
void cpu_parallel_for(ps_backend *be, int64_t n, cpu_range_fn fn, void *ctx);
int cpu_threads(ps_backend *be);

/* Linear layers (kernels/cpu/linear*.c): y (T, out) = x (T, in) W^T. */
ps_status cpu_linear(ps_backend *be, ps_tensor *y, const ps_tensor *x, const ps_weight *w,
                     ps_err *err);
/* The naive oracle: one output at a time, double-free straightforward loops. */
ps_status cpu_linear_ref(ps_backend *be, ps_tensor *y, const ps_tensor *x, const ps_weight *w,
                         ps_err *err);

/* Element-wise and attention ops (kernels/cpu/ops_*.c). */
ps_status cpu_embed(ps_backend *be, ps_tensor *out, const ps_tensor *table, const ps_tensor *ids,
                    ps_err *err);
ps_status cpu_add_bias(ps_backend *be, ps_tensor *y, const ps_tensor *bias, ps_err *err);
ps_status cpu_add_rmsnorm(ps_backend *be, ps_tensor *out, ps_tensor *x_out, const ps_tensor *x,
                          const ps_tensor *y, const ps_tensor *w, float eps, ps_err *err);
ps_status cpu_rmsnorm(ps_backend *be, ps_tensor *out, const ps_tensor *x, const ps_tensor *w,
                      float eps, ps_err *err);
ps_status cpu_layernorm(ps_backend *be, ps_tensor *out, const ps_tensor *x, const ps_tensor *w,
                        const ps_tensor *b, float eps, ps_err *err);
ps_status cpu_rope(ps_backend *be, ps_tensor *x, const ps_tensor *pos, float theta, ps_err *err);
ps_status cpu_kv_store(ps_backend *be, ps_kv_layer *kv, const ps_tensor *k, const ps_tensor *v,
                       const ps_tensor *slots, ps_err *err);
ps_status cpu_attention(ps_backend *be, ps_tensor *out, const ps_tensor *q, const ps_kv_layer *kv,
                        const ps_attn_meta *meta, float scale, ps_err *err);
/* The oracle for paged attention, and the bounds check both variants run first. */
ps_status cpu_attention_ref(ps_backend *be, ps_tensor *out, const ps_tensor *q,
                            const ps_kv_layer *kv, const ps_attn_meta *meta, float scale,
                            ps_err *err);
ps_status cpu_attention_check(const ps_kv_layer *kv, const ps_attn_meta *meta, int *max_len,
                              ps_err *err);
ps_status cpu_attention_dense(ps_backend *be, ps_tensor *out, const ps_tensor *q,
                              const ps_tensor *k, const ps_tensor *v, bool causal, float scale,
                              ps_err *err);
ps_status cpu_silu_mul(ps_backend *be, ps_tensor *out, const ps_tensor *gate, const ps_tensor *up,
                       ps_err *err);
ps_status cpu_activate(ps_backend *be, ps_tensor *x, int act, ps_err *err);
ps_status cpu_add(ps_backend *be, ps_tensor *x, const ps_tensor *y, ps_err *err);
ps_status cpu_gather_rows(ps_backend *be, ps_tensor *out, const ps_tensor *x,
                          const ps_tensor *rows, ps_err *err);

/* Multi-adapter LoRA (kernels/cpu/lora.c): the SGMV-style default groups
 * tokens by slot; the reference gathers per token (the oracle). */
ps_status cpu_lora_bgmv(ps_backend *be, ps_tensor *y, const ps_tensor *x, const ps_lora_batch *lb,
                        ps_err *err);
ps_status cpu_lora_bgmv_ref(ps_backend *be, ps_tensor *y, const ps_tensor *x,
                            const ps_lora_batch *lb, ps_err *err);

/* Reads element i of a F32/F16/BF16 tensor as float (slow path helper). */
float cpu_load_f(const ps_tensor *t, int64_t i);

#endif
