/* The adapter routes and the adapters' place in the model list:
 *   POST   /v1/adapters         multipart/form-data: name, adapter_config.json,
 *                               adapter_model.safetensors (+ optional replace=true)
 *                               -> 201 with the adapter's description
 *   GET    /v1/adapters         {"object":"list","data":[descriptions]}
 *   GET    /v1/adapters/{name}  one description
 *   DELETE /v1/adapters/{name}  {"id","object":"adapter","deleted":true}
 * Every adapter is also a model: /v1/models lists it (with "parent" = the base
 * id) and chat/completions select it with `model` = its name. */
#ifndef PS_SERVER_ADAPTERS_ROUTES_H
#define PS_SERVER_ADAPTERS_ROUTES_H

#include <jansson.h>
#include <stdbool.h>

#include "http.h"

int adapters_upload(http_req *rq);
int adapters_list(http_req *rq);
int adapters_get(http_req *rq);
int adapters_delete(http_req *rq);

/* oai_ctx's adapter lookup (user = the server): true when `name` is a
 * registered adapter; *extra_tokens = its virtual tokens (prefix or prompt
 * tuning) that count against the context. */
bool adapters_find_for_model(void *user, const char *name, int *extra_tokens);
/* Appends one OpenAI model object per adapter to `data` (a JSON array). */
void adapters_append_models(server *srv, json_t *data);
/* The model object of adapter `name` (new reference), NULL when unknown. */
json_t *adapters_model_object(server *srv, const char *name);

#endif
