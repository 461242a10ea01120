/* The parameters /v1/completions and /v1/chat/completions share, read in
 * OpenAI's documented ranges (platform.openai.com/docs/api-reference).
 * Accepted but fixed: n = 1, penalties = 0, empty logit_bias (anything else
 * is a 400 naming the parameter, never silently ignored). Extensions, as
 * vLLM spells them: top_k, ignore_eos, return_token_ids. */
#include "oai_request.h"

#include <stdlib.h>
#include <string.h>

#include "oai_params.h"

static bool parse_model(const json_t *body, const oai_ctx *ctx, oai_gen_request *r, api_error *e) {
    bool present = false;
    if (!oai_get_string(body, "model", &r->model, &present, e)) return false;
    if (!present) return api_errorf(e, SRV_ERR_INVALID_REQUEST, "model", "missing required parameter 'model'");
    /* the base, or an adapter by name; never a silent fallback to the base */
    if (strcmp(r->model, ctx->model_id) == 0) return true;
    if (ctx->find_adapter && ctx->find_adapter(ctx->user, r->model, &r->adapter_extra)) {
        r->adapter = r->model;
        return true;
    }
    return api_errorf(e, SRV_ERR_MODEL_NOT_FOUND, "model",
                      "the model '%.200s' does not exist (served: '%s' and the adapters of GET /v1/models)", r->model,
                      ctx->model_id);
}

static bool parse_stream(const json_t *body, oai_gen_request *r, api_error *e) {
    if (!oai_get_bool(body, "stream", &r->stream, e)) return false;
    const json_t *so = json_object_get(body, "stream_options");
    if (!so || json_is_null(so)) return true;
    if (!json_is_object(so))
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, "stream_options", "'stream_options' must be an object, got %s",
                          oai_json_type_name(so));
    if (!r->stream)
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, "stream_options",
                          "'stream_options' is only allowed when 'stream' is true");
    if (!oai_get_bool(so, "include_usage", &r->include_usage, e)) {
        snprintf(e->param, sizeof e->param, "stream_options.include_usage");
        return false;
    }
    return true;
}

static bool parse_sampling(const json_t *body, const oai_ctx *ctx, oai_gen_request *r, api_error *e) {
    double temperature = 1.0, top_p = 1.0;
    long long top_k = 0, seed = 0, max_tokens = 0, n = 1;
    bool has_seed = false;
    /* the upper bound is the context check's job (400 context_length_exceeded
     * with both numbers), made once the prompt is tokenized */
    long long max_out = INT32_MAX / 2;
    if (!oai_get_number(body, "temperature", 0, 2, false, &temperature, NULL, e)) return false;
    if (!oai_get_number(body, "top_p", 0, 1, true, &top_p, NULL, e)) return false;
    if (!oai_get_int(body, "top_k", -1, 1 << 30, &top_k, NULL, e)) return false;
    if (!oai_get_int(body, "seed", INT64_MIN, INT64_MAX, &seed, &has_seed, e)) return false;
    if (!oai_get_int(body, "max_tokens", 1, max_out, &max_tokens, NULL, e)) return false;
    if (r->chat && !oai_get_int(body, "max_completion_tokens", 1, max_out, &max_tokens, NULL, e)) return false;
    if (!oai_get_int(body, "n", 1, 128, &n, NULL, e)) return false;
    if (n != 1)
        return api_errorf(e, SRV_ERR_UNSUPPORTED, "n", "'n' is %lld, only 1 choice per request is supported", n);
    r->temperature = (float)temperature;
    r->top_p = (float)top_p;
    r->top_k = top_k < 0 ? 0 : (int)top_k; /* -1 = off, as vLLM */
    r->seed = (uint64_t)seed;
    r->has_seed = has_seed;
    r->max_tokens = (int)max_tokens;
    return true;
}

static bool parse_unsupported(const json_t *body, api_error *e) {
    if (!oai_require_default_number(body, "presence_penalty", 0, "penalties are not implemented", e)) return false;
    if (!oai_require_default_number(body, "frequency_penalty", 0, "penalties are not implemented", e)) return false;
    if (!oai_require_default_number(body, "repetition_penalty", 1, "penalties are not implemented", e)) return false;
    const json_t *lb = json_object_get(body, "logit_bias");
    if (lb && !json_is_null(lb)) {
        if (!json_is_object(lb))
            return api_errorf(e, SRV_ERR_INVALID_REQUEST, "logit_bias", "'logit_bias' must be an object, got %s",
                              oai_json_type_name(lb));
        if (json_object_size(lb))
            return api_errorf(e, SRV_ERR_UNSUPPORTED, "logit_bias", "'logit_bias' is not supported (only {})");
    }
    const char *user = NULL;
    return oai_get_string(body, "user", &user, NULL, e); /* accepted and ignored */
}

bool oai_parse_common(const json_t *body, const oai_ctx *ctx, oai_gen_request *r, api_error *e) {
    r->logprobs = -1;
    return parse_model(body, ctx, r, e) && parse_stream(body, r, e) && parse_sampling(body, ctx, r, e) &&
           oai_get_stop(body, r->stop, OAI_MAX_STOP, &r->n_stop, e) && parse_unsupported(body, e) &&
           oai_get_bool(body, "return_token_ids", &r->return_token_ids, e) &&
           oai_get_bool(body, "ignore_eos", &r->ignore_eos, e);
}

char *oai_gen_request_own(oai_gen_request *r, char *s) {
    if (!s) return NULL;
    char **o = realloc(r->owned, sizeof *o * (size_t)(r->n_owned + 1));
    if (!o) {
        free(s);
        return NULL;
    }
    r->owned = o;
    r->owned[r->n_owned++] = s;
    return s;
}

void oai_gen_request_free(oai_gen_request *r) {
    if (!r) return;
    free(r->prompt_ids);
    free(r->msgs);
    for (int i = 0; i < r->n_owned; i++) free(r->owned[i]);
    free(r->owned);
    memset(r, 0, sizeof *r);
}
