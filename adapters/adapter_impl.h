/* Internal to adapters/: the load plan shared by adapter_load.c (entry points,
 * block allocation, conversion) and the per-kind planners adapter_lora.c and
 * adapter_prompt.c. Loading is two passes: plan (names, shapes, limits, block
 * offsets; no tensor data read) then fill (convert to F32 or keep 16-bit LoRA
 * weights, check finite, re-layout, upload). */
#ifndef PS_ADAPTERS_ADAPTER_IMPL_H
#define PS_ADAPTERS_ADAPTER_IMPL_H

#include "adapter.h"
#include "adapter_config.h"
#include "base/safetensors.h"

typedef enum {
    PIECE_LORA_A = 0,
    PIECE_LORA_B,
    PIECE_PREFIX,   /* prompt_embeddings [P, L*2*n_kv*D] -> (L, 2, P, n_kv, D) */
    PIECE_PROMPT,   /* prompt_embeddings [n, hidden] as is */
    PIECE_LM_HEAD,  /* modules_to_save copies, [vocab, hidden] as is */
    PIECE_EMBED,
} adapter_piece_kind;

typedef struct {
    const st_tensor *t;
    adapter_piece_kind kind;
    int layer;
    adapter_module mod;
    size_t offset;  /* bytes into the block, 64-byte aligned */
    int64_t numel;  /* elements written at offset */
    ps_dtype dt;    /* F32, or the file's F16/BF16 for LoRA weights */
} adapter_piece;

/* The prefix encoder MLP of PEFT's PrefixEncoder (prefix_projection true):
 * out = W2 tanh(W1 e + b1) + b2, run once at load when the file carries it. */
typedef struct {
    const st_tensor *w1, *b1, *w2, *b2;
} adapter_prefix_mlp;

typedef struct {
    const adapter_config *cfg;
    const adapter_base_shape *base;
    const adapter_limits *lim;
    st_set *set;
    adapter *a;              /* being built: kind, lora r/alpha/scale, counts */
    adapter_piece *pieces;   /* one per used tensor (capacity st_count) */
    int n_pieces;
    size_t n_bytes;          /* block size so far */
    ps_dtype lora_dt;        /* storage of A/B: F16/BF16 when every LoRA tensor is, else F32 */
    adapter_prefix_mlp mlp;  /* all NULL unless projecting */
} adapter_plan;

/* Appends a piece of numel elements (of lora_dt for LoRA pieces, F32 for the
 * rest) at the next aligned offset (build() checks
 * the total against max_bytes before allocating). */
ps_status adapter_plan_add(adapter_plan *p, const st_tensor *t, adapter_piece_kind kind, int layer,
                           adapter_module mod, int64_t numel, ps_err *err);
/* Checks dtype F32/F16/BF16 and the exact 2-d shape; the message names the tensor. */
ps_status adapter_check_tensor(const st_tensor *t, int64_t rows, int64_t cols, const char *hint,
                               ps_err *err);
/* modules_to_save tensors (lm_head, embed_tokens): 1 when t was one, 0 when
 * not, negative status on error. */
int adapter_plan_saved_module(adapter_plan *p, const st_tensor *t, ps_err *err);

ps_status adapter_plan_lora(adapter_plan *p, ps_err *err);
ps_status adapter_plan_prompt(adapter_plan *p, ps_err *err);
/* Fills a prefix piece: reads prompt_embeddings (and the MLP), writes (L, 2, P, n_kv, D). */
ps_status adapter_fill_prefix(adapter_plan *p, const adapter_piece *pc, float *dst, ps_err *err);

/* Converts t to F32 into out (numel floats) and rejects NaN/Inf naming the element. */
ps_status adapter_read_f32(const st_tensor *t, float *out, int64_t numel, ps_err *err);

#define ADAPTER_PEFT_PREFIX "base_model.model."

#endif
