/* Contract header for the LLaMA model (owner: helper "llama"). This copy holds
 * exactly the declarations of COMMON.md so the engine runtime compiles before
 * the model lands; the real header replaces it on merge. */
#ifndef PS_ENGINE_MODELS_LLAMA_H
#define PS_ENGINE_MODELS_LLAMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "ops.h"

typedef struct {
    int vocab, hidden, ffn, n_layers, n_heads, n_kv_heads, head_dim, max_pos;
    float rms_eps, rope_theta;
    bool tie_embeddings;
    int32_t bos_id, eos_id;
} llama_config;

typedef enum { LLAMA_QUANT_NF4 = 0, LLAMA_QUANT_NONE } llama_quant;

typedef struct llama_model llama_model;

ps_status llama_config_load(const char *dir, llama_config *cfg, ps_err *err);
ps_status llama_load(const char *dir, llama_quant q, ps_backend *be, llama_model **out,
                     ps_err *err);
ps_status llama_init_random(const llama_config *cfg, uint64_t seed, llama_quant q, ps_backend *be,
                            llama_model **out, ps_err *err);
void llama_free(llama_model *m);
const llama_config *llama_get_config(const llama_model *m);
int64_t llama_weight_bytes(const llama_model *m);
ps_backend *llama_backend(const llama_model *m);

typedef struct {
    ps_backend *be;
    int n_layers, page_size, n_pages;
    ps_kv_layer *layers;
    int32_t *free_pages;
    int n_free;
} kv_cache;

ps_status kv_cache_init(kv_cache *kv, ps_backend *be, const llama_config *cfg, int page_size,
                        int n_pages, ps_err *err);
void kv_cache_free(kv_cache *kv);
int32_t kv_cache_alloc_page(kv_cache *kv);
void kv_cache_release_page(kv_cache *kv, int32_t page);

typedef struct {
    int n_tokens;
    const int32_t *ids;
    const int32_t *pos;
    const int32_t *tok_seq;
    const int32_t *tok_kv_pos;
    int n_seqs, max_pages;
    const int32_t *block_tables;
    int n_out;
    const int32_t *out_rows;
} llama_batch;

ps_status llama_forward(llama_model *m, kv_cache *kv, const llama_batch *b, float *logits,
                        ps_err *err);

#endif
