/* multipart/form-data bodies (RFC 7578 over RFC 2046 section 5.1): the
 * boundary from the Content-Type, then the parts with their
 * Content-Disposition name and filename. Pure functions on a buffer (no
 * connection), so tests and the fuzz target call them directly.
 *
 * Parts are views into the body (never copied); names and filenames are
 * copied into the form. Refused with a 400 naming the rule: a missing or
 * malformed boundary, a part without `form-data; name="..."`, a missing
 * closing delimiter, more than MULTIPART_MAX_PARTS parts, over-long headers.
 * Not supported (400): nested multipart/mixed, Content-Transfer-Encoding
 * other than binary/8bit/7bit (RFC 7578 4.7 deprecates it).
 *
 *   char b[MULTIPART_BOUNDARY_MAX + 1]; multipart_form f; api_error e;
 *   if (!multipart_boundary(ct, b, &e) || !multipart_parse(body, n, b, &f, &e)) reply_error(...);
 *   const multipart_part *p = multipart_find(&f, "name");
 */
#ifndef PS_SERVER_MULTIPART_H
#define PS_SERVER_MULTIPART_H

#include <stdbool.h>
#include <stddef.h>

#include "api_error.h"

#define MULTIPART_BOUNDARY_MAX 70 /* RFC 2046: 1..70 characters */
#define MULTIPART_MAX_PARTS 16
#define MULTIPART_NAME_MAX 200

typedef struct {
    char name[MULTIPART_NAME_MAX + 1];     /* form field name */
    char filename[MULTIPART_NAME_MAX + 1]; /* "" when the part is not a file */
    char content_type[MULTIPART_NAME_MAX + 1];
    const char *data;                      /* into the body */
    size_t len;
} multipart_part;

typedef struct {
    multipart_part parts[MULTIPART_MAX_PARTS];
    int n;
} multipart_form;

/* true when the Content-Type is multipart/form-data (parameters ignored). */
bool multipart_is_form(const char *content_type);
/* The boundary parameter (quoted or not) of a multipart/form-data type. */
bool multipart_boundary(const char *content_type, char out[MULTIPART_BOUNDARY_MAX + 1], api_error *e);
bool multipart_parse(const char *body, size_t len, const char *boundary, multipart_form *f, api_error *e);
/* First part with this field name, NULL when absent. */
const multipart_part *multipart_find(const multipart_form *f, const char *name);

#endif
