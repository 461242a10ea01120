/* The one mapping from engine status to HTTP status and OpenAI error type. */
#ifndef PS_SERVER_ERROR_MAP_H
#define PS_SERVER_ERROR_MAP_H

#include "base/status.h"

typedef struct {
    int http_status;
    const char *type; /* OpenAI error.type */
    const char *code; /* OpenAI error.code (may be NULL) */
} http_error_kind;

http_error_kind http_error_for(ps_status s);

#endif
