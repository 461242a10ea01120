/* api_error constructors. Does not send anything: see reply.c. */
#include "api_error.h"

#include <stdarg.h>
#include <stdio.h>

bool api_errorf(api_error *e, srv_err_kind kind, const char *param, const char *fmt, ...) {
    e->kind = kind;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return false;
}

bool api_error_from_ps(api_error *e, const ps_err *err, const char *param) {
    srv_err_kind k = srv_err_kind_of_status(err->code);
    if (k == SRV_ERR_NONE) k = SRV_ERR_INTERNAL;
    return api_errorf(e, k, param, "%s", err->msg[0] ? err->msg : ps_status_name(err->code));
}
