/* api_error: an OpenAI-shaped error waiting to be sent.
 *
 * Validators fill one instead of writing to a connection, so request parsing
 * runs without a socket (tests, fuzzing); the handler then sends it with
 * reply_error(). The message follows STYLE.md 4: the thing, the rule, both
 * values, lower case, no trailing period. */
#ifndef PS_SERVER_API_ERROR_H
#define PS_SERVER_API_ERROR_H

#include <stdbool.h>

#include "base/status.h"
#include "error_map.h"

typedef struct {
    srv_err_kind kind;  /* SRV_ERR_NONE: no error */
    char param[64];     /* OpenAI error.param ("" -> null) */
    char msg[PS_ERR_MSG_MAX + 128];
} api_error;

/* Fills e and returns false, so a validator can `return api_errorf(...)`.
 * param may be NULL. */
bool api_errorf(api_error *e, srv_err_kind kind, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* From an engine error: kind from the status table, the engine's message. */
bool api_error_from_ps(api_error *e, const ps_err *err, const char *param);

#endif
