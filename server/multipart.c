/* multipart/form-data parsing in place; see multipart.h.
 * Mirrors RFC 2046 5.1.1: a delimiter is CRLF "--" boundary (the CRLF
 * belongs to the delimiter, not to the preceding part's data), the closing
 * delimiter adds "--", anything before the first and after the last is
 * ignored. RFC 7578 4.2: each part has Content-Disposition: form-data with a
 * name and maybe a filename. */
#define _GNU_SOURCE 1 /* memmem */
#include "multipart.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MP_MAX_HEADER_BYTES 8192
#define MP_MAX_BOUNDARY 70

static const char *skip_ws(const char *s) {
    while (*s == ' ' || *s == '\t') s++;
    return s;
}

bool mp_is_multipart(const char *ct) {
    if (!ct) return false;
    ct = skip_ws(ct);
    size_t n = strlen("multipart/form-data");
    return strncasecmp(ct, "multipart/form-data", n) == 0 &&
           (ct[n] == 0 || ct[n] == ';' || ct[n] == ' ' || ct[n] == '\t');
}

/* Reads a parameter value at s (quoted-string with \ escapes, or a token up to
 * ';' / space) into buf; returns the position after it, NULL when too long or
 * unterminated. */
static const char *param_value(const char *s, char *buf, size_t cap) {
    size_t n = 0;
    if (*s == '"') {
        for (s++; *s && *s != '"'; s++) {
            if (*s == '\\' && s[1]) s++;
            if (n + 1 >= cap) return NULL;
            buf[n++] = *s;
        }
        if (*s != '"') return NULL;
        s++;
    } else {
        for (; *s && *s != ';' && *s != ' ' && *s != '\t' && *s != '\r' && *s != '\n'; s++) {
            if (n + 1 >= cap) return NULL;
            buf[n++] = *s;
        }
    }
    buf[n] = 0;
    return s;
}

/* Finds parameter `key` in "type; k=v; k2="v2"" (text is NUL-terminated).
 * Returns 1 found, 0 absent, -1 malformed/too long. */
static int find_param(const char *text, const char *key, char *buf, size_t cap) {
    const char *s = strchr(text, ';');
    size_t kl = strlen(key);
    while (s && *s == ';') {
        s = skip_ws(s + 1);
        const char *eq = s;
        while (*eq && *eq != '=' && *eq != ';') eq++;
        if (*eq != '=') { /* a parameter without value: skip it */
            s = *eq ? eq : NULL;
            continue;
        }
        const char *k_end = eq;
        while (k_end > s && (k_end[-1] == ' ' || k_end[-1] == '\t')) k_end--;
        bool match = (size_t)(k_end - s) == kl && strncasecmp(s, key, kl) == 0;
        char tmp[1024];
        const char *after = param_value(skip_ws(eq + 1), match ? buf : tmp, match ? cap : sizeof tmp);
        if (!after) return -1;
        if (match) return 1;
        s = skip_ws(after);
        if (*s && *s != ';') { /* garbage after a value: skip to the next ';' */
            s = strchr(s, ';');
        }
    }
    return 0;
}

ps_status mp_boundary(const char *content_type, char *buf, size_t cap, ps_err *err) {
    if (!mp_is_multipart(content_type))
        return ps_errf(err, PS_EINVAL, "content type '%s' is not multipart/form-data",
                       content_type ? content_type : "");
    int r = find_param(content_type, "boundary", buf, cap);
    size_t n = r == 1 ? strlen(buf) : 0;
    if (r != 1 || n == 0 || n > MP_MAX_BOUNDARY)
        return ps_errf(err, PS_EFORMAT,
                       "multipart/form-data needs a boundary parameter of 1..%d characters",
                       MP_MAX_BOUNDARY);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)buf[i] < 0x20 || (unsigned char)buf[i] > 0x7e)
            return ps_errf(err, PS_EFORMAT, "multipart boundary has a control or non-ASCII byte");
    return PS_OK;
}

void mp_free(mp_form *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) {
        free(f->parts[i].name);
        free(f->parts[i].filename);
        free(f->parts[i].content_type);
    }
    free(f->parts);
    f->parts = NULL;
    f->n = 0;
}

const mp_part *mp_find(const mp_form *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->parts[i].name, name) == 0) return &f->parts[i];
    return NULL;
}

/* One header line (NUL-terminated, no CRLF) into the part. */
static ps_status part_header(char *line, mp_part *p, int idx, ps_err *err) {
    char *colon = strchr(line, ':');
    if (!colon || colon == line)
        return ps_errf(err, PS_EFORMAT, "multipart part %d: header line without a name and ':'", idx);
    *colon = 0;
    const char *value = skip_ws(colon + 1);
    if (strcasecmp(line, "Content-Disposition") == 0) {
        if (strncasecmp(value, "form-data", 9) != 0)
            return ps_errf(err, PS_EFORMAT, "multipart part %d: Content-Disposition is not form-data", idx);
        char buf[1024];
        int r = find_param(value, "name", buf, sizeof buf);
        if (r < 0) return ps_errf(err, PS_EFORMAT, "multipart part %d: malformed name parameter", idx);
        if (r == 1) { /* a repeated header: the last one wins */
            free(p->name);
            if (!(p->name = strdup(buf))) return ps_errf(err, PS_ENOMEM, "multipart: no memory");
        }
        r = find_param(value, "filename", buf, sizeof buf);
        if (r < 0) return ps_errf(err, PS_EFORMAT, "multipart part %d: malformed filename parameter", idx);
        if (r == 1) {
            free(p->filename);
            if (!(p->filename = strdup(buf))) return ps_errf(err, PS_ENOMEM, "multipart: no memory");
        }
    } else if (strcasecmp(line, "Content-Type") == 0) {
        free(p->content_type);
        if (!(p->content_type = strdup(value))) return ps_errf(err, PS_ENOMEM, "multipart: no memory");
    }
    return PS_OK;
}

/* Parses the header block starting at b[pos]; sets *data_start past the empty line. */
static ps_status part_headers(const char *b, size_t len, size_t pos, mp_part *p, int idx,
                              size_t *data_start, ps_err *err) {
    const char *end = memmem(b + pos, len - pos, "\r\n\r\n", 4);
    bool empty = len - pos >= 2 && b[pos] == '\r' && b[pos + 1] == '\n'; /* no headers at all */
    size_t hlen = empty ? 0 : end ? (size_t)(end - (b + pos)) : len - pos;
    if (!empty && (!end || hlen > MP_MAX_HEADER_BYTES))
        return ps_errf(err, PS_EFORMAT, "multipart part %d at offset %zu: %s", idx, pos,
                       end ? "headers over 8192 bytes" : "headers never end (no empty line)");
    char *block = malloc(hlen + 1);
    if (!block) return ps_errf(err, PS_ENOMEM, "multipart: no memory");
    memcpy(block, b + pos, hlen);
    block[hlen] = 0;
    ps_status st = PS_OK;
    if (strlen(block) != hlen)
        st = ps_errf(err, PS_EFORMAT, "multipart part %d: NUL byte in the headers", idx);
    for (char *line = block, *next; !st && line && *line; line = next) {
        next = strstr(line, "\r\n");
        if (next) *next = 0, next += 2;
        st = part_header(line, p, idx, err);
    }
    free(block);
    *data_start = pos + (empty ? 2 : hlen + 4);
    if (st == PS_OK && !p->name)
        st = ps_errf(err, PS_EFORMAT, "multipart part %d has no Content-Disposition form-data name", idx);
    return st;
}

ps_status mp_parse(const char *content_type, const void *body, size_t len, int max_parts,
                   mp_form *out, ps_err *err) {
    char bnd[MP_MAX_BOUNDARY + 8], delim[MP_MAX_BOUNDARY + 8];
    const char *b = body;
    memset(out, 0, sizeof *out);
    ps_status st = mp_boundary(content_type, bnd, sizeof bnd, err);
    if (st) return st;
    size_t dl = (size_t)snprintf(delim, sizeof delim, "\r\n--%s", bnd);
    /* first delimiter: at the very start (no CRLF before it) or after a preamble */
    size_t pos;
    if (len >= dl - 2 && memcmp(b, delim + 2, dl - 2) == 0) pos = dl - 2;
    else {
        const char *f = memmem(b, len, delim, dl);
        if (!f) return ps_errf(err, PS_EFORMAT, "multipart body has no boundary '--%s' (%zu bytes)", bnd, len);
        pos = (size_t)(f - b) + dl;
    }
    for (;;) {
        if (len - pos >= 2 && b[pos] == '-' && b[pos + 1] == '-') return PS_OK; /* closing delimiter */
        while (pos < len && (b[pos] == ' ' || b[pos] == '\t')) pos++;
        if (len - pos < 2 || b[pos] != '\r' || b[pos + 1] != '\n') {
            st = ps_errf(err, PS_EFORMAT, "multipart delimiter at offset %zu is not followed by CRLF or '--'%s",
                         pos, pos >= len ? " (body truncated?)" : "");
            break;
        }
        if (out->n >= max_parts) {
            st = ps_errf(err, PS_EINVAL, "multipart body has more than %d parts", max_parts);
            break;
        }
        mp_part *g = realloc(out->parts, sizeof(mp_part) * (size_t)(out->n + 1));
        if (!g) {
            st = ps_errf(err, PS_ENOMEM, "multipart: no memory");
            break;
        }
        out->parts = g;
        mp_part *p = &out->parts[out->n++];
        memset(p, 0, sizeof *p);
        size_t data = 0;
        if ((st = part_headers(b, len, pos + 2, p, out->n - 1, &data, err))) break;
        const char *f = memmem(b + data, len - data, delim, dl);
        if (!f) {
            st = ps_errf(err, PS_EFORMAT, "multipart part %d ('%s') has no closing boundary (body truncated?)",
                         out->n - 1, p->name);
            break;
        }
        p->data = (const unsigned char *)b + data;
        p->len = (size_t)(f - (b + data));
        pos = (size_t)(f - b) + dl;
    }
    mp_free(out);
    return st;
}
