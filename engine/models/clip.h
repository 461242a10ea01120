/* CLIP: ViT image tower and causal text transformer, on the op interface.
 *
 * Loads a Hugging Face CLIPModel folder (config.json + model.safetensors,
 * F32/F16/BF16, HF key names) and computes the embeddings OpenAI's
 * clip/model.py computes (encode_image / encode_text, before normalisation):
 * pre-LN blocks, quick_gelu (or gelu when the config says so), class token +
 * learned positions + pre_layrnorm for images, post_layernorm on the class
 * token, pooling of texts at argmax(input_ids) (the first <|endoftext|>),
 * projections without bias. Weights stay in their file dtype on the backend;
 * activations are F32.
 *
 * Not here: tokenizing and image preprocessing (clip_tokenizer.h,
 * image/clip_preprocess.h), normalisation/logits (clip_service.h).
 *
 * Threads: a model keeps scratch buffers; call it from one thread at a time
 * (the CLIP service's worker).
 *
 *   clip_model *m; clip_load(dir, be, &m, &err);
 *   clip_encode_images(m, pixels, 4, embeds, &err);   // (4, 3, S, S) -> (4, E)
 *   clip_free(m);
 */
#ifndef PS_ENGINE_MODELS_CLIP_H
#define PS_ENGINE_MODELS_CLIP_H

#include <stdint.h>

#include "ops.h"

typedef struct {
    int hidden, layers, heads, ffn; /* width, depth, attention heads, MLP width */
    float eps;                      /* LayerNorm eps */
    int act;                        /* PS_ACT_QUICK_GELU or PS_ACT_GELU */
} clip_tower_config;

typedef struct {
    clip_tower_config text, vision;
    int vocab, ctx;               /* text vocabulary, max_position_embeddings (77) */
    int image_size, patch_size;   /* vision input S and patch P: (S/P)^2 + 1 tokens */
    int projection_dim;           /* E */
} clip_config;

typedef struct clip_model clip_model;

/* config.json of a CLIPModel; missing keys take transformers' CLIPConfig
 * defaults (ViT-B/32). Inconsistent values are PS_EFORMAT naming the key. */
ps_status clip_config_load(const char *dir, clip_config *cfg, ps_err *err);
/* ViT-B/32's shape (the defaults above). */
clip_config clip_config_vit_b32(void);

/* Loads config.json and the weights (model.safetensors or its shards) onto be.
 * Every tensor is checked by name, dtype and shape. */
ps_status clip_load(const char *dir, ps_backend *be, clip_model **out, ps_err *err);
/* Random F16 weights of the given shape (benchmarks, no files needed). */
ps_status clip_init_random(const clip_config *cfg, uint64_t seed, ps_backend *be, clip_model **out,
                           ps_err *err);
void clip_free(clip_model *m); /* accepts NULL */

const clip_config *clip_get_config(const clip_model *m);
/* exp(logit_scale): the factor in logits = scale * cos(image, text). */
float clip_logit_scale(const clip_model *m);
int64_t clip_weight_bytes(const clip_model *m);
ps_backend *clip_backend(const clip_model *m);

/* pixels (B, 3, S, S) host F32, as clip_preprocess makes them ->
 * embeds (B, E) host F32 = encode_image (not normalised). */
ps_status clip_encode_images(clip_model *m, const float *pixels, int B, float *embeds, ps_err *err);

/* input_ids (B, ctx) host I32 as clip_tok_tokenize makes them -> embeds (B, E)
 * host F32 = encode_text (not normalised). Ids must be < vocab. Only the
 * positions up to the batch's last pooled token are computed: the causal mask
 * makes later positions irrelevant, exactly. */
ps_status clip_encode_texts(clip_model *m, const int32_t *input_ids, int B, float *embeds,
                            ps_err *err);

#endif
