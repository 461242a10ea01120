/* Validation of a /v1/completions body into an oai_gen_request, without a
 * connection (the handler replies; the fuzz target calls it directly). See
 * openai_completions.c for the endpoint's behaviour. */
#include <stdlib.h>
#include <string.h>

#include "oai_params.h"
#include "oai_request.h"

static bool parse_ids(const json_t *arr, const char *what, const oai_ctx *ctx, oai_gen_request *r, api_error *e) {
    size_t n = json_array_size(arr);
    if (n == 0) return api_errorf(e, SRV_ERR_INVALID_REQUEST, "prompt", "'%s' is an empty list of token ids", what);
    r->prompt_ids = malloc(sizeof(int32_t) * n);
    if (!r->prompt_ids) return api_errorf(e, SRV_ERR_INTERNAL, NULL, "out of memory reading %zu token ids", n);
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_array_get(arr, i);
        if (!json_is_integer(v))
            return api_errorf(e, SRV_ERR_INVALID_REQUEST, "prompt", "'%s[%zu]' must be a token id (integer), got %s",
                              what, i, oai_json_type_name(v));
        json_int_t id = json_integer_value(v);
        if (id < 0 || id >= ctx->vocab_size)
            return api_errorf(e, SRV_ERR_INVALID_REQUEST, "prompt", "'%s[%zu]' is %lld, token ids must be in [0, %d)",
                              what, i, (long long)id, ctx->vocab_size);
        r->prompt_ids[i] = (int32_t)id;
    }
    r->n_prompt_ids = (int)n;
    return true;
}

static bool parse_prompt(const json_t *body, const oai_ctx *ctx, oai_gen_request *r, api_error *e) {
    const json_t *p = json_object_get(body, "prompt");
    if (!p || json_is_null(p)) return api_errorf(e, SRV_ERR_INVALID_REQUEST, "prompt", "missing required parameter 'prompt'");
    if (json_is_string(p)) {
        r->prompt_text = json_string_value(p);
        return true;
    }
    if (!json_is_array(p))
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, "prompt",
                          "'prompt' must be a string, a list of token ids, or a list of one of those, got %s",
                          oai_json_type_name(p));
    size_t n = json_array_size(p);
    if (n == 0) return api_errorf(e, SRV_ERR_INVALID_REQUEST, "prompt", "'prompt' is an empty list");
    const json_t *first = json_array_get(p, 0);
    if (json_is_integer(first)) return parse_ids(p, "prompt", ctx, r, e);
    if (!json_is_string(first) && !json_is_array(first))
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, "prompt", "'prompt[0]' must be a string or a token id, got %s",
                          oai_json_type_name(first));
    if (n > 1)
        return api_errorf(e, SRV_ERR_UNSUPPORTED, "prompt",
                          "'prompt' holds %zu prompts, only one prompt per request is supported", n);
    if (json_is_string(first)) {
        r->prompt_text = json_string_value(first);
        return true;
    }
    return parse_ids(first, "prompt[0]", ctx, r, e);
}

static bool parse_output(const json_t *body, oai_gen_request *r, api_error *e) {
    long long logprobs = -1, best_of = 1;
    bool has_logprobs = false;
    const char *suffix = NULL;
    if (!oai_get_bool(body, "echo", &r->echo, e)) return false;
    if (!oai_get_int(body, "logprobs", 0, ENGINE_MAX_TOP_LOGPROBS, &logprobs, &has_logprobs, e)) return false;
    if (!oai_get_string(body, "suffix", &suffix, NULL, e)) return false;
    if (!oai_get_int(body, "best_of", 1, 128, &best_of, NULL, e)) return false;
    if (suffix && *suffix) return api_errorf(e, SRV_ERR_UNSUPPORTED, "suffix", "'suffix' (insertion) is not supported");
    if (best_of != 1)
        return api_errorf(e, SRV_ERR_UNSUPPORTED, "best_of", "'best_of' is %lld, only 1 is supported", best_of);
    if (r->echo && !r->prompt_text)
        return api_errorf(e, SRV_ERR_UNSUPPORTED, "echo", "'echo' is only supported with a text prompt");
    if (r->echo && has_logprobs)
        return api_errorf(e, SRV_ERR_UNSUPPORTED, "echo", "'echo' with 'logprobs' (prompt logprobs) is not supported");
    r->logprobs = has_logprobs ? (int)logprobs : -1;
    return true;
}

bool oai_completions_parse(const json_t *body, const oai_ctx *ctx, oai_gen_request *r, api_error *e) {
    memset(r, 0, sizeof *r);
    r->chat = false;
    return oai_parse_common(body, ctx, r, e) && parse_prompt(body, ctx, r, e) && parse_output(body, r, e);
}
