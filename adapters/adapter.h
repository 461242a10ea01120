/* One PEFT adapter in memory, validated against the base model it serves with.
 *
 * Kinds (PEFT peft_type): LORA (per layer, per projection A (r, in), B (out, r)
 * kept transposed as (r, out), and a scale), PREFIX_TUNING (per layer P key and value vectors that sit in
 * KV-cache slots 0..P-1) and PROMPT_TUNING (n virtual input embeddings placed
 * before BOS). Any kind may carry `modules_to_save` copies of lm_head and
 * embed_tokens. Semantics: huggingface/peft (tuners/lora/layer.py,
 * peft_model.py get_prompt); see shared/fixtures/llama-tiny/README.md section 7.
 *
 * Everything numeric is converted to F32 (LoRA A/B stored in F16/BF16 stay so,
 * see lora_dtype) and lives in ONE backend block owned by the adapter (adapter->block); the pointers below point into it, on the
 * backend's device. An adapter is immutable after loading, so any number of
 * engine steps may read it at once; its lifetime is managed by the registry
 * (adapter_registry.h), which reference counts it.
 *
 * This layer knows nothing of the engine: the engine fills adapter_base_shape
 * from its model config.
 *
 * Usage:
 *   adapter_base_shape base = {.n_layers = 22, .hidden = 2048, ...};
 *   adapter_limits lim = adapter_limits_default();
 *   adapter *a;
 *   if (adapter_load_dir("adapters/sql", "sql", &base, &lim, be, &a, &err)) ...;
 *   ... a->lora[ADAPTER_LORA_INDEX(a, l, ADAPTER_MOD_Q)] ...
 *   adapter_free(a);
 */
#ifndef PS_ADAPTERS_ADAPTER_H
#define PS_ADAPTERS_ADAPTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "ops.h"

/* What the adapter must fit: the engine copies these from its llama_config. */
typedef struct {
    int n_layers, hidden, ffn, n_heads, n_kv_heads, head_dim, vocab;
} adapter_base_shape;

typedef enum { ADAPTER_LORA = 0, ADAPTER_PREFIX, ADAPTER_PROMPT } adapter_kind;

/* The seven linear projections of a LLaMA layer, in forward order. */
typedef enum {
    ADAPTER_MOD_Q = 0,
    ADAPTER_MOD_K,
    ADAPTER_MOD_V,
    ADAPTER_MOD_O,
    ADAPTER_MOD_GATE,
    ADAPTER_MOD_UP,
    ADAPTER_MOD_DOWN,
    ADAPTER_MOD_COUNT
} adapter_module;

/* Loader limits (a violation is PS_ETOOLARGE naming the value and the limit)
 * and the LoRA storage dtype. */
typedef struct {
    int64_t max_bytes;     /* F32 bytes of the converted adapter (default 4 GiB) */
    int max_rank;          /* LoRA rank (default 512; ops.h PS_LORA_MAX_RANK bounds it) */
    int max_virtual;       /* prefix / prompt virtual tokens (default 1024) */
    int max_tensors;       /* tensors in the safetensors file (default 4096) */
    int64_t max_config_bytes; /* adapter_config.json (default 1 MiB) */
    ps_dtype lora_dtype;   /* LoRA A/B storage: PS_DT_F32 (default) as the file (F16/BF16 kept,
                            * anything else F32); PS_DT_F16 / PS_DT_BF16: every LoRA weight
                            * rounded to it on load (half the memory and the bytes a step
                            * reads; vLLM, LoRAX and S-LoRA keep adapters in 16 bits) */
} adapter_limits;

adapter_limits adapter_limits_default(void);

/* One adapted projection of one layer. r == 0: not adapted (A = B = NULL). */
typedef struct {
    int r;
    float alpha, scale; /* scale = alpha / r, or alpha / sqrt(r) with use_rslora */
    const void *A;      /* (r, in) on the backend, dtype adapter.lora_dtype */
    const void *B;      /* (r, out): lora_B.weight transposed at load (ps_lora_slot layout) */
} adapter_lora;

#define ADAPTER_NAME_MAX 64

typedef struct {
    char name[ADAPTER_NAME_MAX + 1];
    uint64_t uid;       /* unique per load in this process (never reused, unlike addresses):
                         * what a recorded step graph keys its LoRA tables on */
    adapter_kind kind;
    adapter_base_shape base;
    ps_backend *be;
    void *block;        /* the one backend allocation everything below points into */
    size_t block_bytes;

    /* LORA: (n_layers * ADAPTER_MOD_COUNT), index l * ADAPTER_MOD_COUNT + m */
    adapter_lora *lora;
    int max_rank;       /* largest r over all modules (0 when no LoRA) */
    ps_dtype lora_dtype;/* A/B storage: adapter_limits.lora_dtype when 16-bit, else the
                         * file's F16/BF16 when every LoRA tensor has it (half the bytes
                         * a step reads), else F32 */
    bool rslora;
    unsigned targets;   /* bit m set when module m is adapted in some layer */

    /* PREFIX_TUNING: P entries per layer, already in the cache's (HF) layout:
     * prefix_kv (L, 2, P, n_kv, D): [l][0] = keys, [l][1] = values, not rotated */
    int n_prefix;
    const float *prefix_kv;

    /* PROMPT_TUNING: (n_virtual, hidden) input embeddings placed before BOS */
    int n_virtual;
    const float *prompt;

    /* modules_to_save: full replacements, (vocab, hidden) F32, or NULL */
    const float *lm_head;
    const float *embed_tokens;
} adapter;

#define ADAPTER_LORA_INDEX(a, l, m) ((l) * ADAPTER_MOD_COUNT + (m))

/* Input and output width of projection m in the base. */
int adapter_module_in(const adapter_base_shape *b, adapter_module m);
int adapter_module_out(const adapter_base_shape *b, adapter_module m);
/* "q_proj", ... and the HF parent ("self_attn" or "mlp"). */
const char *adapter_module_name(adapter_module m);
const char *adapter_module_parent(adapter_module m);
const char *adapter_kind_name(adapter_kind k); /* "lora" | "prefix_tuning" | "prompt_tuning" */

/* A name the registry accepts (it becomes a folder name): [A-Za-z0-9._-]{1,64},
 * not starting with '.', not containing "..". Returns PS_EINVAL saying why. */
ps_status adapter_name_check(const char *name, ps_err *err);

/* Parses and validates a PEFT adapter given as the bytes of its two files
 * (not copied beyond the call: every tensor is converted into the adapter's
 * own block). Errors name the offending key or tensor:
 *   PS_EFORMAT   malformed JSON / safetensors, wrong shape, NaN/Inf, missing tensor
 *   PS_ENOTSUP   a valid PEFT feature this server does not implement (DoRA, bias, ...)
 *   PS_EINVAL    the adapter does not fit this base (layer out of range, unknown module)
 *   PS_ETOOLARGE over a limit
 * On error *out is NULL and nothing is allocated. */
ps_status adapter_load_mem(const char *name, const char *config_json, size_t config_len,
                           const void *safetensors, size_t st_len, const adapter_base_shape *base,
                           const adapter_limits *lim, ps_backend *be, adapter **out, ps_err *err);

/* The same from a PEFT folder (adapter_config.json + adapter_model.safetensors).
 * A folder holding only adapter_model.bin is refused: unpickling runs code. */
ps_status adapter_load_dir(const char *dir, const char *name, const adapter_base_shape *base,
                           const adapter_limits *lim, ps_backend *be, adapter **out, ps_err *err);

void adapter_free(adapter *a); /* accepts NULL and half-built adapters */

/* Bytes the adapter holds on its backend. */
size_t adapter_bytes(const adapter *a);

#endif
