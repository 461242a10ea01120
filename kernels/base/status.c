/* ps_err helpers. Messages are truncated to PS_ERR_MSG_MAX, never overflowed. */
#include "status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

ps_status ps_errf(ps_err *err, ps_status code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

ps_status ps_err_wrap(ps_err *err, const char *fmt, ...) {
    if (!err) return PS_OK;
    char prefix[PS_ERR_MSG_MAX], old[PS_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    /* truncation is acceptable here: messages are bounded by design */
    size_t n = strlen(prefix);
    if (n > sizeof err->msg - 3) n = sizeof err->msg - 3;
    memcpy(err->msg, prefix, n);
    memcpy(err->msg + n, ": ", 2);
    size_t room = sizeof err->msg - n - 3;
    size_t m = strlen(old) < room ? strlen(old) : room;
    memcpy(err->msg + n + 2, old, m);
    err->msg[n + 2 + m] = 0;
    return err->code;
}

const char *ps_status_name(ps_status s) {
    static const char *names[] = {"ok",     "einval",    "enomem", "enotsup",
                                  "eformat", "eio",      "edevice", "enotfound",
                                  "ebusy",  "etoolarge", "ecanceled", "eshutdown",
                                  "eexist"};
    if ((unsigned)s < sizeof names / sizeof names[0]) return names[s];
    return "unknown";
}

void ps_assert_fail(const char *what, const char *file, int line) {
    fprintf(stderr, "peftserve: assertion failed: %s (%s:%d)\n", what, file, line);
    abort();
}
