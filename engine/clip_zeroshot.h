/* Zero-shot classification arithmetic of the CLIP reference (OpenAI's
 * notebook "Prompt_Engineering_for_ImageNet" zeroshot_classifier, and
 * clip/model.py:358-372 for the logits): prompt formatting, prompt-ensemble
 * class embeddings, scaled cosine logits and softmax. Small vectors, done in
 * double so our float32 embeddings are the only rounding. */
#ifndef PS_ENGINE_CLIP_ZEROSHOT_H
#define PS_ENGINE_CLIP_ZEROSHOT_H

#include "base/status.h"

/* template.format(label) for CLIP templates: exactly one "{}" (or "{label}")
 * placeholder, "{{" and "}}" are literal braces, any other brace is an error
 * (PS_EINVAL naming the template). *out malloc'd. */
ps_status clip_format_prompt(const char *tmpl, const char *label, char **out, ps_err *err);

/* In place: each of n rows of E divided by its L2 norm (a zero row stays zero). */
void clip_normalize_rows(float *x, int n, int E);

/* prompts (n_labels * n_templates, E) label-major, unnormalised -> classes
 * (n_labels, E): normalise each prompt embedding, mean over the templates,
 * normalise again. */
void clip_class_embeddings(const float *prompts, int n_labels, int n_templates, int E, float *classes);

/* image (E) and classes (n, E) both normalised: logits[c] = scale * <image,
 * class c>, probs = softmax(logits). */
void clip_zeroshot_scores(const float *image, const float *classes, int n, int E, float scale,
                          float *logits, float *probs);

#endif
