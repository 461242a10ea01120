/* Status codes and the error detail every fallible function fills.
 *
 * Functions that can fail return ps_status and take `ps_err *err` last; the
 * message names the thing, the rule and both values (see STYLE.md section 4).
 * `err` may be NULL when the caller only wants the code. */
#ifndef PS_BASE_STATUS_H
#define PS_BASE_STATUS_H

#include <stddef.h>

typedef enum {
    PS_OK = 0,
    PS_EINVAL,    /* bad argument or request value */
    PS_ENOMEM,    /* allocation failed or a configured budget is exhausted */
    PS_ENOTSUP,   /* valid but not implemented (op missing in a backend, ...) */
    PS_EFORMAT,   /* a file or payload violates its format */
    PS_EIO,       /* open/read/write/mmap failed */
    PS_EDEVICE,   /* accelerator error (sticky: the engine turns unhealthy) */
    PS_ENOTFOUND, /* named thing does not exist */
    PS_EBUSY,     /* queue full, resource in use */
    PS_ETOOLARGE, /* input over a configured limit */
    PS_ECANCELED, /* the request was cancelled */
    PS_ESHUTDOWN, /* the engine is stopping */
    PS_EEXIST,    /* a named thing already exists (adapter upload under a taken name) */
} ps_status;

#define PS_ERR_MSG_MAX 512

typedef struct {
    ps_status code;
    char msg[PS_ERR_MSG_MAX];
} ps_err;

/* Fills err (if not NULL) with code and a printf-formatted message; returns code
 * so callers can write `return ps_errf(err, PS_EINVAL, "...", ...);`. */
ps_status ps_errf(ps_err *err, ps_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "context: " to an existing message (used when an error crosses a layer). */
ps_status ps_err_wrap(ps_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Stable lower-case name of a status, e.g. "einval". */
const char *ps_status_name(ps_status s);

/* Invariants no input can reach; on in release builds. */
#define PS_ASSERT(cond)                                                          \
    do {                                                                         \
        if (!(cond)) ps_assert_fail(#cond, __FILE__, __LINE__);                  \
    } while (0)
void ps_assert_fail(const char *what, const char *file, int line) __attribute__((noreturn));

#endif
