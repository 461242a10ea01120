/* Deterministic random LLaMA weights, shared by llama_init_random (the demo
 * model, benchmarks) and tests/bench/gen_random_llama.c (which writes the same
 * weights as an HF folder, so loading it gives the same model bit for bit).
 *
 * Values are normal-ish (Irwin-Hall sum of 4 uniforms) rounded to float16, so
 * the model is an F16 model: projections std 1/sqrt(in) (activations stay
 * O(1) through every layer), embeddings std 1 (2/sqrt(hidden) when tied),
 * lm_head std 2/sqrt(hidden) (logits with std ~2: peaked but not degenerate),
 * norms 1. Each row has its own random stream, so any row range can be made
 * alone and the result does not depend on generation order or chunking. */
#ifndef PS_ENGINE_MODELS_LLAMA_RANDOM_H
#define PS_ENGINE_MODELS_LLAMA_RANDOM_H

#include <stdint.h>

#include "models/llama.h"

/* Tensor kinds; LLAMA_RW_PROJ + p is projection p (q, k, v, o, gate, up, down). */
enum {
    LLAMA_RW_EMBED = 0,
    LLAMA_RW_NORM,
    LLAMA_RW_LM_HEAD,
    LLAMA_RW_ATTN_NORM,
    LLAMA_RW_FFN_NORM,
    LLAMA_RW_PROJ,
    LLAMA_RW_COUNT = LLAMA_RW_PROJ + 7
};

/* (rows, cols) of a kind; norms are (1, hidden). */
void llama_random_shape(const llama_config *cfg, int kind, int64_t *rows, int64_t *cols);
/* HF tensor name of a kind (layer ignored for the global ones). */
void llama_random_name(int kind, int layer, char *buf, int cap);
/* Rows [row0, row0 + nrows) of tensor (layer, kind) as float32 (F16-representable). */
void llama_random_rows(const llama_config *cfg, uint64_t seed, int layer, int kind, int64_t row0,
                       int64_t nrows, float *out);

/* Writes config.json and the weights of llama_init_random(cfg, seed) as F16
 * safetensors into the existing folder dir: one model.safetensors, or shards of
 * at most max_shard_bytes (one tensor may exceed it) with an index. */
ps_status llama_random_write_dir(const llama_config *cfg, uint64_t seed, const char *dir,
                                 int64_t max_shard_bytes, ps_err *err);

#endif
