/* multipart/form-data parsing (see multipart.h). The body is
 *   [preamble] "--B" CRLF part { CRLF "--B" CRLF part } CRLF "--B--" [epilogue]
 * with each part = header lines, an empty line, then the content up to the
 * next CRLF "--B". Content is binary: delimiters are found with memmem, never
 * by string functions. Header names are case-insensitive; a header line may
 * end in a bare LF (as some clients send). */
#define _GNU_SOURCE /* memmem */
#include "multipart.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#define MP_HEADER_MAX 8192 /* bytes of headers per part */

bool multipart_is_form(const char *ct) {
    if (!ct) return false;
    while (*ct == ' ' || *ct == '\t') ct++;
    size_t n = strcspn(ct, "; \t");
    return n == strlen("multipart/form-data") && !strncasecmp(ct, "multipart/form-data", n);
}

/* Finds parameter `key` in a header value "a; key=v; ..." (value quoted or
 * token). Copies it into out (cap bytes). Returns false when absent. */
static bool header_param(const char *v, size_t vlen, const char *key, char *out, size_t cap, bool *too_long) {
    size_t kl = strlen(key);
    *too_long = false;
    for (size_t i = 0; i < vlen;) {
        while (i < vlen && v[i] != ';') i++; /* parameters follow a ';' */
        if (i >= vlen) break;
        i++;
        while (i < vlen && (v[i] == ' ' || v[i] == '\t')) i++;
        if (i + kl >= vlen || strncasecmp(v + i, key, kl) || v[i + kl] != '=') continue;
        i += kl + 1;
        size_t o = 0;
        if (i < vlen && v[i] == '"') {
            for (i++; i < vlen && v[i] != '"'; i++) {
                if (v[i] == '\\' && i + 1 < vlen) i++;
                if (o + 1 >= cap) return *too_long = true, false;
                out[o++] = v[i];
            }
        } else {
            for (; i < vlen && v[i] != ';' && v[i] != ' ' && v[i] != '\t'; i++) {
                if (o + 1 >= cap) return *too_long = true, false;
                out[o++] = v[i];
            }
        }
        out[o] = 0;
        return true;
    }
    return false;
}

bool multipart_boundary(const char *ct, char out[MULTIPART_BOUNDARY_MAX + 1], api_error *e) {
    if (!multipart_is_form(ct))
        return api_errorf(e, SRV_ERR_MEDIA_TYPE, NULL, "content type '%.100s' is not multipart/form-data",
                          ct ? ct : "(none)");
    bool too_long;
    if (!header_param(ct, strlen(ct), "boundary", out, MULTIPART_BOUNDARY_MAX + 1, &too_long) || !out[0])
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, NULL,
                          too_long ? "multipart boundary is longer than %d characters (RFC 2046)"
                                   : "multipart/form-data content type has no boundary parameter",
                          MULTIPART_BOUNDARY_MAX);
    return true;
}

/* One header line [h, h + n): Content-Disposition / Content-Type / CTE. */
static bool part_header(const char *h, size_t n, multipart_part *p, bool *disposition, api_error *e) {
    const char *colon = memchr(h, ':', n);
    if (!colon) return api_errorf(e, SRV_ERR_INVALID_REQUEST, NULL, "multipart part header without ':'");
    size_t kl = (size_t)(colon - h);
    const char *v = colon + 1;
    size_t vl = n - kl - 1;
    while (vl && (*v == ' ' || *v == '\t')) v++, vl--;
    bool too_long = false;
    if (kl == 19 && !strncasecmp(h, "Content-Disposition", 19)) {
        if (vl < 9 || strncasecmp(v, "form-data", 9) || (vl > 9 && v[9] != ';' && v[9] != ' '))
            return api_errorf(e, SRV_ERR_INVALID_REQUEST, NULL, "multipart part disposition is not form-data");
        if (!header_param(v, vl, "name", p->name, sizeof p->name, &too_long) || !p->name[0])
            return api_errorf(e, SRV_ERR_INVALID_REQUEST, NULL,
                              too_long ? "multipart field name longer than %d bytes" : "multipart part without a name",
                              MULTIPART_NAME_MAX);
        header_param(v, vl, "filename", p->filename, sizeof p->filename, &too_long);
        if (too_long)
            return api_errorf(e, SRV_ERR_INVALID_REQUEST, p->name, "filename longer than %d bytes", MULTIPART_NAME_MAX);
        *disposition = true;
    } else if (kl == 12 && !strncasecmp(h, "Content-Type", 12)) {
        snprintf(p->content_type, sizeof p->content_type, "%.*s", (int)(vl < MULTIPART_NAME_MAX ? vl : MULTIPART_NAME_MAX), v);
        if (multipart_is_form(p->content_type) || !strncasecmp(p->content_type, "multipart/", 10))
            return api_errorf(e, SRV_ERR_UNSUPPORTED, NULL, "nested multipart bodies are not supported");
    } else if (kl == 25 && !strncasecmp(h, "Content-Transfer-Encoding", 25)) {
        if (!(vl == 6 && !strncasecmp(v, "binary", 6)) && !(vl == 4 && !strncasecmp(v, "8bit", 4)) &&
            !(vl == 4 && !strncasecmp(v, "7bit", 4)))
            return api_errorf(e, SRV_ERR_UNSUPPORTED, NULL, "Content-Transfer-Encoding '%.*s' is not supported",
                              (int)(vl > 40 ? 40 : vl), v);
    }
    return true;
}

/* Headers of one part from [p, end): fills part, sets *body to the content start. */
static bool part_headers(const char *p, const char *end, multipart_part *part, const char **body, api_error *e) {
    bool disposition = false;
    const char *start = p;
    for (;;) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl || nl - start > MP_HEADER_MAX)
            return api_errorf(e, SRV_ERR_INVALID_REQUEST, NULL,
                              nl ? "multipart part headers longer than %d bytes" : "multipart part headers never end",
                              MP_HEADER_MAX);
        size_t n = (size_t)(nl - p);
        if (n && p[n - 1] == '\r') n--;
        if (n == 0) { /* the empty line */
            *body = nl + 1;
            break;
        }
        if (!part_header(p, n, part, &disposition, e)) return false;
        p = nl + 1;
    }
    if (!disposition)
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, NULL, "multipart part without Content-Disposition: form-data");
    return true;
}

bool multipart_parse(const char *body, size_t len, const char *boundary, multipart_form *f, api_error *e) {
    memset(f, 0, sizeof *f);
    char delim[MULTIPART_BOUNDARY_MAX + 5]; /* CRLF "--" boundary */
    int dl = snprintf(delim, sizeof delim, "\r\n--%s", boundary);
    if (dl < 5 || dl >= (int)sizeof delim)
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, NULL, "multipart boundary must be 1..%d characters",
                          MULTIPART_BOUNDARY_MAX);
    const char *end = body + len;
    /* the first delimiter may start the body (no CRLF before it) */
    bool at_start = len >= (size_t)(dl - 2) && !memcmp(body, delim + 2, (size_t)(dl - 2));
    const char *p = at_start ? body + dl - 2 : memmem(body, len, delim, (size_t)dl);
    if (!p) return api_errorf(e, SRV_ERR_INVALID_REQUEST, NULL, "multipart body has no '--%.70s' delimiter", boundary);
    if (!at_start) p += dl;
    for (;;) {
        /* after a delimiter: "--" closes the body, else transport padding and CRLF */
        if (end - p >= 2 && p[0] == '-' && p[1] == '-') return true;
        while (p < end && (*p == ' ' || *p == '\t')) p++;
        if (p < end && *p == '\r') p++;
        if (p >= end || *p != '\n')
            return api_errorf(e, SRV_ERR_INVALID_REQUEST, NULL,
                              p >= end ? "multipart body ends without the closing '--%.70s--'"
                                       : "multipart delimiter '--%.70s' not followed by a line break",
                              boundary);
        p++;
        if (f->n == MULTIPART_MAX_PARTS)
            return api_errorf(e, SRV_ERR_INVALID_REQUEST, NULL, "multipart body has more than %d parts",
                              MULTIPART_MAX_PARTS);
        multipart_part *part = &f->parts[f->n];
        const char *content = NULL;
        if (!part_headers(p, end, part, &content, e)) return false;
        const char *next = memmem(content, (size_t)(end - content), delim, (size_t)dl);
        if (!next)
            return api_errorf(e, SRV_ERR_INVALID_REQUEST, part->name,
                              "multipart part '%.100s' is not closed by '--%.70s' (truncated upload?)", part->name,
                              boundary);
        part->data = content;
        part->len = (size_t)(next - content);
        f->n++;
        p = next + dl;
    }
}

const multipart_part *multipart_find(const multipart_form *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->parts[i].name, name)) return &f->parts[i];
    return NULL;
}
