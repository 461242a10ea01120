/* The LLaMA decoder (HF LlamaForCausalLM): config, weights, one batched
 * forward step over a paged KV cache.
 *
 * Weights: the seven linear projections of each layer are NF4 with double
 * quantisation (bitsandbytes semantics, quantised on load or read from a
 * bnb-4bit checkpoint) or dense 16-bit; embeddings, norms and lm_head stay in
 * their 16-bit dtype, as QLoRA does. Everything lives on the backend given at
 * load time; the forward pass calls op_* only, so the same code runs on any
 * backend.
 *
 * Usage:
 *   llama_model *m; kv_cache kv = {0};
 *   llama_load(dir, LLAMA_QUANT_NF4, be, &m, &err);
 *   kv_cache_init(&kv, be, llama_get_config(m), 16, n_pages, PS_DT_F32, &err);
 *   ... fill a llama_batch (pages from kv_cache_alloc_page) ...
 *   llama_forward(m, &kv, &batch, logits, &err);
 *   kv_cache_free(&kv); llama_free(m);
 *
 * Threads: a model and its KV cache are used by one thread at a time (the
 * engine thread); llama_forward reuses scratch buffers owned by the model. */
#ifndef PS_ENGINE_MODELS_LLAMA_H
#define PS_ENGINE_MODELS_LLAMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "adapter.h"
#include "base/status.h"
#include "ops.h"

typedef struct {
    int vocab, hidden, ffn, n_layers, n_heads, n_kv_heads, head_dim, max_pos;
    float rms_eps, rope_theta;
    bool tie_embeddings;
    int32_t bos_id, eos_id; /* -1 when the config names none */
} llama_config;

/* NF4: NF4 + double quantisation (QLoRA's default). NONE: the projections stay
 * in the checkpoint's dtype. NF4_NODQ: NF4 with plain float32 block scales
 * (bnb_4bit_use_double_quant=False); used by the parity tests. */
typedef enum { LLAMA_QUANT_NF4 = 0, LLAMA_QUANT_NONE, LLAMA_QUANT_NF4_NODQ } llama_quant;

typedef struct llama_model llama_model;

/* Reads and validates <dir>/config.json. Unsupported architectures, RoPE
 * scaling, biases, activations or quantisation methods are PS_ENOTSUP naming
 * the key and its value; malformed values are PS_EFORMAT. */
ps_status llama_config_load(const char *dir, llama_config *cfg, ps_err *err);
/* The same on a JSON text (len bytes, need not be NUL-terminated). */
ps_status llama_config_parse(const char *json, size_t len, llama_config *cfg, ps_err *err);

/* HF folder: F32/F16/BF16 safetensors (sharded ok) quantised on load when q is
 * NF4/NF4_NODQ, or a bnb-4bit pre-quantised checkpoint (detected per weight
 * from its quant_state tensors; kept as stored whatever q says). Every tensor
 * is checked for presence, dtype and shape. On error *out is NULL and nothing
 * is leaked. */
ps_status llama_load(const char *dir, llama_quant q, ps_backend *be, llama_model **out,
                     ps_err *err);
/* Deterministic random weights (demo model and benchmarks): see llama_random.h. */
ps_status llama_init_random(const llama_config *cfg, uint64_t seed, llama_quant q, ps_backend *be,
                            llama_model **out, ps_err *err);
void llama_free(llama_model *m); /* accepts NULL and half-built models */

const llama_config *llama_get_config(const llama_model *m);
int64_t llama_weight_bytes(const llama_model *m); /* bytes of weights resident */
/* Bytes of weights one decode step reads: every layer weight, the final norm,
 * lm_head and one embedding row (the memory-bandwidth floor of decoding). */
int64_t llama_decode_bytes_per_token(const llama_model *m);
ps_backend *llama_backend(const llama_model *m);

/* The paged KV cache: per layer one K and one V pool of n_pages pages of
 * page_size token slots, F32, F16 or BF16 (stores round to it, attention
 * reads it back exactly and computes in f32), on the model's backend. Pages
 * are shared by all sequences through their block tables. */
typedef struct {
    ps_backend *be;
    uint64_t uid; /* unique per cache in this process (keys step graphs; addresses are reused) */
    int n_layers, page_size, n_pages;
    ps_kv_layer *layers;
    int32_t *free_pages;
    int n_free;
} kv_cache;

/* kv must be zeroed (or freed) before; on error it is left freed. */
ps_status kv_cache_init(kv_cache *kv, ps_backend *be, const llama_config *cfg, int page_size,
                        int n_pages, ps_dtype dtype, ps_err *err);
void kv_cache_free(kv_cache *kv);            /* accepts a zeroed or half-built cache */
int32_t kv_cache_alloc_page(kv_cache *kv);   /* -1 when none left */
void kv_cache_release_page(kv_cache *kv, int32_t page);

/* One forward step over tokens of several sequences (prefill chunks and decode
 * tokens mixed). All arrays are host memory; they are validated (ids in the
 * vocabulary, sequences and pages in range) before anything runs. */
typedef struct {
    int n_tokens;
    const int32_t *ids;         /* (T) token ids (host) */
    const int32_t *pos;         /* (T) RoPE positions */
    const int32_t *tok_seq;     /* (T) row of block_tables */
    const int32_t *tok_kv_pos;  /* (T) index of this token's KV entry in its sequence */
    int n_seqs, max_pages;
    const int32_t *block_tables;/* (S, max_pages) host */
    int n_out;
    const int32_t *out_rows;    /* (n_out) tokens whose logits are wanted */
    /* PEFT adapters (optional: n_adapters == 0 serves every token from the base).
     * The caller keeps them pinned for the step. Token t uses
     * adapters[tok_adapter[t]] (-1 = none): the LoRA deltas of every projection
     * it adapts (op_lora_bgmv: tokens of different adapters in one step, never
     * merged into the base), its modules_to_save embed_tokens for the input and
     * lm_head for the logits. Prompt tuning: tok_virtual[t] >= 0 marks a virtual
     * token whose input embedding is that row of the adapter's prompt table
     * (ids[t] is ignored but must be a valid id; give virtual tokens kv_pos and
     * pos 0..n_virtual-1 and the real tokens the ones after). Prefix tuning:
     * llama_store_prefix fills cache entries 0..P-1 once; the real tokens get
     * kv_pos and pos from P. */
    int n_adapters;
    const adapter *const *adapters; /* (n_adapters) */
    const int32_t *tok_adapter;     /* (T) index into adapters or -1 */
    const int32_t *tok_virtual;     /* (T) prompt-table row or -1; NULL = no virtual tokens */
} llama_batch;

/* Writes host logits (n_out, vocab) F32. Token t's K/V are stored first, so a
 * token attends to earlier tokens of its sequence in the same batch. Reuses
 * scratch buffers (grown on demand, never per step). */
ps_status llama_forward(llama_model *m, kv_cache *kv, const llama_batch *b, float *logits,
                        ps_err *err);

/* Prefix tuning (PEFT PREFIX_TUNING): writes the adapter's P keys and values of
 * every layer into entries 0..P-1 of one sequence (block_table: its max_pages
 * page ids; the pages holding entries 0..P-1 must be allocated), in the
 * cache's HF layout and not rotated, as peft_model.py puts them into the
 * DynamicCache. The sequence's real tokens then use kv_pos and pos P, P+1, ... */
ps_status llama_store_prefix(llama_model *m, kv_cache *kv, const int32_t *block_table, int max_pages,
                             const adapter *a, ps_err *err);

#endif
