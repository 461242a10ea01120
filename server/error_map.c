/* Errors -> HTTP status + OpenAI error type/code, in one table (STYLE.md 4).
 *
 * Choices, with the reason:
 * - context too long is 400 context_length_exceeded, as OpenAI answers it
 *   (not 413: the body was fine, the prompt did not fit the model);
 * - a full queue and the stream cap are 503 server_busy with Retry-After: an
 *   overloaded server, which the openai clients retry like 429;
 * - ENOTSUP from the engine is 501: a valid request we cannot serve yet. */
#include "error_map.h"

static const http_error_kind kinds[SRV_ERR_COUNT_] = {
    [SRV_ERR_NONE] = {200, NULL, NULL},
    [SRV_ERR_INVALID_REQUEST] = {400, "invalid_request_error", "invalid_value"},
    [SRV_ERR_INVALID_JSON] = {400, "invalid_request_error", "invalid_json"},
    [SRV_ERR_UNSUPPORTED] = {400, "invalid_request_error", "unsupported_value"},
    [SRV_ERR_CONTEXT_LENGTH] = {400, "invalid_request_error", "context_length_exceeded"},
    [SRV_ERR_AUTH] = {401, "invalid_request_error", "invalid_api_key"},
    [SRV_ERR_MODEL_NOT_FOUND] = {404, "invalid_request_error", "model_not_found"},
    [SRV_ERR_NO_ROUTE] = {404, "invalid_request_error", "unknown_url"},
    [SRV_ERR_METHOD] = {405, "invalid_request_error", "method_not_allowed"},
    [SRV_ERR_CONFLICT] = {409, "invalid_request_error", "already_exists"},
    [SRV_ERR_BODY_TOO_LARGE] = {413, "invalid_request_error", "request_too_large"},
    [SRV_ERR_MEDIA_TYPE] = {415, "invalid_request_error", "unsupported_media_type"},
    [SRV_ERR_BUSY] = {503, "server_error", "server_busy"},
    [SRV_ERR_UNAVAILABLE] = {503, "server_error", "service_unavailable"},
    [SRV_ERR_NOT_IMPLEMENTED] = {501, "server_error", "not_implemented"},
    [SRV_ERR_INTERNAL] = {500, "server_error", "internal_error"},
};

http_error_kind http_error_of_kind(srv_err_kind k) {
    if (k < 0 || k >= SRV_ERR_COUNT_) k = SRV_ERR_INTERNAL;
    return kinds[k];
}

srv_err_kind srv_err_kind_of_status(ps_status s) {
    switch (s) {
    case PS_OK: return SRV_ERR_NONE;
    case PS_EINVAL: return SRV_ERR_INVALID_REQUEST;
    case PS_EFORMAT: return SRV_ERR_INVALID_REQUEST;
    case PS_ENOTFOUND: return SRV_ERR_MODEL_NOT_FOUND;
    case PS_ETOOLARGE: return SRV_ERR_CONTEXT_LENGTH;
    case PS_EBUSY: return SRV_ERR_BUSY;
    case PS_ENOTSUP: return SRV_ERR_NOT_IMPLEMENTED;
    case PS_ECANCELED: return SRV_ERR_UNAVAILABLE;
    case PS_ESHUTDOWN: return SRV_ERR_UNAVAILABLE;
    case PS_EDEVICE: return SRV_ERR_UNAVAILABLE;
    case PS_ENOMEM: return SRV_ERR_BUSY;
    case PS_EIO: return SRV_ERR_INTERNAL;
    case PS_EEXIST: return SRV_ERR_CONFLICT;
    }
    return SRV_ERR_INTERNAL;
}

http_error_kind http_error_for(ps_status s) { return http_error_of_kind(srv_err_kind_of_status(s)); }
