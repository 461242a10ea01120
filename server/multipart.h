/* multipart/form-data bodies (RFC 7578 over RFC 2046 section 5.1), parsed in
 * place: part data points into the body, no copy; names, filenames and
 * content types are NUL-terminated copies.
 *
 * Accepted: the boundary parameter quoted or not (1..70 characters), CRLF
 * line ends, a preamble before the first delimiter and an epilogue after the
 * closing one, transport padding (spaces/tabs) after a delimiter, header
 * names in any case, Content-Disposition parameters quoted (with \" escapes)
 * or plain. Rejected with PS_EFORMAT naming the offset: a missing boundary,
 * no closing delimiter, headers without ':' or over 8 KB, a part without
 * Content-Disposition form-data name, more than max_parts parts.
 * Not handled: nested multipart/mixed, Content-Transfer-Encoding (RFC 7578
 * deprecates it; parts are taken as raw bytes), filename* (RFC 5987).
 *
 *   mp_form f;
 *   if (mp_parse(content_type, body, len, 16, &f, &err) == PS_OK) {
 *       const mp_part *img = mp_find(&f, "image");  ...  mp_free(&f);
 *   }
 */
#ifndef PS_SERVER_MULTIPART_H
#define PS_SERVER_MULTIPART_H

#include <stdbool.h>
#include <stddef.h>

#include "base/status.h"

typedef struct {
    char *name;          /* form field name */
    char *filename;      /* NULL when the part is not a file */
    char *content_type;  /* NULL when absent */
    const unsigned char *data; /* into the body */
    size_t len;
} mp_part;

typedef struct {
    mp_part *parts;
    int n;
} mp_form;

/* true when content_type is multipart/form-data (any case, parameters ignored). */
bool mp_is_multipart(const char *content_type);

/* Extracts the boundary parameter into buf (cap >= 71). */
ps_status mp_boundary(const char *content_type, char *buf, size_t cap, ps_err *err);

ps_status mp_parse(const char *content_type, const void *body, size_t len, int max_parts,
                   mp_form *out, ps_err *err);
void mp_free(mp_form *f); /* accepts a zeroed form */

/* First part with this name, or NULL. */
const mp_part *mp_find(const mp_form *f, const char *name);

#endif
