/* The one mapping from errors to HTTP status + OpenAI error type and code.
 *
 * Two inputs meet here: engine statuses (ps_status, from engine_* calls) and
 * the server's own HTTP-level conditions (no route, wrong method, bad key,
 * body too large...). Both become an srv_err_kind, and one table turns a kind
 * into {HTTP status, OpenAI error.type, error.code}. No other file picks an
 * HTTP status for an error. */
#ifndef PS_SERVER_ERROR_MAP_H
#define PS_SERVER_ERROR_MAP_H

#include "base/status.h"

typedef enum {
    SRV_ERR_NONE = 0,
    SRV_ERR_INVALID_REQUEST,  /* 400 a parameter has a wrong type or value */
    SRV_ERR_INVALID_JSON,     /* 400 the body is not JSON (or not an object) */
    SRV_ERR_UNSUPPORTED,      /* 400 a valid OpenAI feature we do not serve (n > 1, images...) */
    SRV_ERR_CONTEXT_LENGTH,   /* 400 prompt (+ max_tokens) over the context */
    SRV_ERR_AUTH,             /* 401 missing or wrong API key */
    SRV_ERR_MODEL_NOT_FOUND,  /* 404 `model` is neither the base id nor an adapter */
    SRV_ERR_NO_ROUTE,         /* 404 unknown path */
    SRV_ERR_METHOD,           /* 405 known path, other method */
    SRV_ERR_CONFLICT,         /* 409 the name is taken (adapter upload) */
    SRV_ERR_BODY_TOO_LARGE,   /* 413 body over --max-body */
    SRV_ERR_MEDIA_TYPE,       /* 415 Content-Type that cannot hold JSON */
    SRV_ERR_BUSY,             /* 503 too many generations / engine queue full */
    SRV_ERR_UNAVAILABLE,      /* 503 engine unhealthy or shutting down */
    SRV_ERR_NOT_IMPLEMENTED,  /* 501 engine answered ENOTSUP */
    SRV_ERR_INTERNAL,         /* 500 anything else */
    SRV_ERR_COUNT_
} srv_err_kind;

typedef struct {
    int http_status;
    const char *type; /* OpenAI error.type */
    const char *code; /* OpenAI error.code (NULL -> JSON null) */
} http_error_kind;

/* The table row for a kind. */
http_error_kind http_error_of_kind(srv_err_kind k);

/* Which kind an engine status is (PS_OK -> SRV_ERR_NONE). */
srv_err_kind srv_err_kind_of_status(ps_status s);

/* Shortcut: the table row for an engine status. */
http_error_kind http_error_for(ps_status s);

#endif
