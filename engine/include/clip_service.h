/* The CLIP service: zero-shot image classification and text/image
 * embeddings, for the server (reached through engine/include/engine.h).
 *
 * It loads a Hugging Face CLIPModel folder beside the LLM and runs it on its
 * own backend instance from one worker thread, so server threads never touch
 * tensors: callers decode and preprocess images and tokenize texts in their
 * own thread (that work is parallel), then hand the model work to the worker
 * and block until it is done. Text embeddings are cached by their exact text
 * (LRU), so a repeated label set costs nothing.
 *
 * Semantics are OpenAI CLIP's (see clip_tokenizer.h, image/clip_preprocess.h,
 * models/clip.h): prompts = template.format(label) with the default template
 * "a photo of a {}."; with several templates each prompt embedding is
 * normalised, averaged and renormalised; logit = exp(logit_scale) * cosine;
 * probabilities = softmax over the labels.
 *
 * All functions are thread-safe except init/free (owner only).
 *
 *   clip_service *s; clip_service_opts o = clip_service_opts_default(); o.dir = "clip-dir";
 *   clip_service_init(&s, &o, &err);
 *   clip_score sc[3]; const char *labels[] = {"dog", "cat", "car"};
 *   clip_service_classify(s, jpeg, jpeg_len, labels, 3, NULL, 0, sc, &err);  // sorted
 *   clip_service_free(s);
 */
#ifndef PS_ENGINE_CLIP_SERVICE_H
#define PS_ENGINE_CLIP_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef struct clip_service clip_service;

typedef struct {
    const char *dir;          /* HF CLIPModel folder (config.json, model.safetensors,
                                 vocab.json + merges.txt or tokenizer.json,
                                 preprocessor_config.json) */
    const char *model_id;     /* id in responses; NULL = the folder's name */
    const char *device;       /* "cpu" | "cuda" | NULL = cuda when usable, else cpu */
    int threads;              /* CPU threads; <= 0 = all */
    int max_labels;           /* labels per classify request */
    int max_templates;        /* templates per classify request */
    int max_inputs;           /* texts or images per embeddings request */
    int cache_capacity;       /* text embeddings kept (0 = no cache) */
    int64_t max_image_pixels; /* decoded width * height */
    int max_image_side;
} clip_service_opts;

/* 2048 labels, 64 templates, 2048 inputs, 16384 cached texts, 40 M pixels, 30000 px a side. */
clip_service_opts clip_service_opts_default(void);

ps_status clip_service_init(clip_service **out, const clip_service_opts *opts, ps_err *err);
/* Accepts NULL. Call it once no caller is inside a clip_service_* call
 * (the server stops its HTTP workers first). */
void clip_service_free(clip_service *s);

typedef struct {
    const char *model_id, *device; /* owned by the service */
    int image_size;                /* model input resolution */
    int embed_dim, context_length;
    int64_t weight_bytes;
    int cache_entries, cache_capacity;
    uint64_t cache_hits, cache_misses;
    uint64_t images_total, texts_total; /* through the towers */
} clip_service_info;
void clip_service_get_info(clip_service *s, clip_service_info *out);
int clip_service_dim(const clip_service *s);

typedef struct {
    int label;         /* index into the request's labels */
    float probability; /* softmax over the labels */
    float logit;       /* exp(logit_scale) * cosine */
} clip_score;

/* The label and template checks of clip_service_classify alone (no model
 * work), so a caller can name the faulty parameter: on failure *param is
 * "labels" or "templates". */
ps_status clip_service_check_labels(const clip_service *s, const char *const *labels, int n_labels,
                                    const char *const *templates, int n_templates,
                                    const char **param, ps_err *err);

/* Classifies one JPEG/PNG image (n bytes) against labels. templates NULL or
 * n_templates 0 = {"a photo of a {}."}. out (n_labels) is sorted by
 * probability, highest first (ties: label order).
 * Errors: EFORMAT (not an image, truncated, ...), ETOOLARGE (pixel limits),
 * EINVAL (no labels, too many, an empty label, a bad template), ESHUTDOWN. */
ps_status clip_service_classify(clip_service *s, const void *image, size_t n,
                                const char *const *labels, int n_labels,
                                const char *const *templates, int n_templates, clip_score *out,
                                ps_err *err);

/* Text embeddings (n, E) of UTF-8 texts (lens[i] bytes; NULL lens = strlen),
 * truncated to the context as clip.tokenize(truncate=True) does. normalize:
 * divide by the L2 norm (what cosine similarity wants). *n_tokens, if not
 * NULL, receives the tokens read (sot..eot) summed over the texts. */
ps_status clip_service_embed_texts(clip_service *s, const char *const *texts, const size_t *lens,
                                   int n, bool normalize, float *out, int64_t *n_tokens,
                                   ps_err *err);

/* Image embeddings (n, E) of JPEG/PNG images. */
ps_status clip_service_embed_images(clip_service *s, const void *const *images,
                                    const size_t *sizes, int n, bool normalize, float *out,
                                    ps_err *err);

#endif
