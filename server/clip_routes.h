/* CLIP over HTTP: POST /v1/classify (zero-shot image classification) and
 * POST /v1/embeddings (OpenAI's embeddings shape; texts through the CLIP text
 * tower, images through the image tower as an extension). Both answer 404
 * model_not_found when the server was started without --clip.
 *
 * /v1/classify takes
 *   multipart/form-data: an `image` (or `file`) file part, `labels` and
 *     optional `templates` as JSON-array text fields, optional `model`;
 *   or JSON: {"image": base64 or data: URI, "labels": [...], "templates": [...]}
 * and answers {"model", "labels": [{"label", "probability", "logit"}, ...]}
 * sorted by probability (logit = exp(logit_scale) * cosine).
 *
 * /v1/embeddings takes {"model", "input": string | [string | {"image": base64
 * or data: URI}], "encoding_format": "float" | "base64", "normalize": bool
 * (extension, default true: unit vectors as OpenAI's)} and answers OpenAI's
 * list of embeddings with usage.prompt_tokens = text tokens read. */
#ifndef PS_SERVER_CLIP_ROUTES_H
#define PS_SERVER_CLIP_ROUTES_H

#include <jansson.h>

#include "http.h"

int clip_routes_classify(http_req *rq);
int clip_routes_embeddings(http_req *rq);

/* The CLIP model's /v1/models entry, NULL without --clip. New reference. */
json_t *clip_routes_model_object(const server *srv);
/* The CLIP model's id, NULL without --clip. */
const char *clip_routes_model_id(const server *srv);

/* Facts for /health ({"model", "device", "image_size", ...}) or JSON null
 * without --clip. New reference. */
json_t *clip_routes_health(const server *srv);

#endif
