/* See base64.h. */
#include "base64.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int b64_val(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

static int is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

ps_status b64_decode(const char *s, size_t len, unsigned char **out, size_t *n, ps_err *err) {
    unsigned char *o = malloc(len / 4 * 3 + 3);
    size_t k = 0, digits = 0, pads = 0;
    uint32_t acc = 0;
    *out = NULL;
    *n = 0;
    if (!o) return ps_errf(err, PS_ENOMEM, "base64: no memory for %zu characters", len);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_space(c)) continue;
        if (c == '=') {
            pads++;
            continue;
        }
        int v = b64_val(c);
        if (v < 0 || pads) {
            free(o);
            if (v >= 0)
                return ps_errf(err, PS_EINVAL, "invalid base64: data after '=' padding at offset %zu", i);
            return ps_errf(err, PS_EINVAL, "invalid base64: character 0x%02x at offset %zu", c, i);
        }
        acc = acc << 6 | (uint32_t)v;
        if (++digits % 4 == 0) {
            o[k++] = (unsigned char)(acc >> 16);
            o[k++] = (unsigned char)(acc >> 8);
            o[k++] = (unsigned char)acc;
            acc = 0;
        }
    }
    size_t rem = digits % 4;
    if (rem == 1 || pads > 2 || (pads && (rem + pads) % 4 != 0)) {
        free(o);
        return ps_errf(err, PS_EINVAL, "invalid base64: %zu data characters and %zu '=' do not form whole bytes",
                       digits, pads);
    }
    if (rem == 2) o[k++] = (unsigned char)(acc >> 4);
    if (rem == 3) {
        o[k++] = (unsigned char)(acc >> 10);
        o[k++] = (unsigned char)(acc >> 2);
    }
    *out = o;
    *n = k;
    return PS_OK;
}

char *b64_encode(const void *data, size_t n) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *d = data;
    char *s = malloc((n + 2) / 3 * 4 + 1), *o = s;
    if (!s) return NULL;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (uint32_t)d[i + 1] << 8 | d[i + 2];
        *o++ = tab[v >> 18], *o++ = tab[(v >> 12) & 63], *o++ = tab[(v >> 6) & 63], *o++ = tab[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < n ? (uint32_t)d[i + 1] << 8 : 0);
        *o++ = tab[v >> 18], *o++ = tab[(v >> 12) & 63];
        *o++ = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    *o = 0;
    return s;
}

ps_status b64_data_uri(const char *s, size_t len, const char **payload, size_t *payload_len,
                       char *media_type, size_t media_cap, ps_err *err) {
    *payload = NULL;
    *payload_len = 0;
    if (media_cap) media_type[0] = 0;
    if (len < 5 || strncasecmp(s, "data:", 5) != 0) return PS_OK;
    const char *comma = memchr(s, ',', len);
    if (!comma) return ps_errf(err, PS_EINVAL, "data: URI without a ','");
    size_t meta = (size_t)(comma - (s + 5));
    /* the parameters must end with ";base64" */
    if (meta < 7 || strncasecmp(comma - 7, ";base64", 7) != 0)
        return ps_errf(err, PS_EINVAL, "data: URI is not base64 (expected 'data:<type>;base64,<data>')");
    size_t mt = strcspn(s + 5, ";,");
    if (media_cap) {
        size_t c = mt < media_cap - 1 ? mt : media_cap - 1;
        memcpy(media_type, s + 5, c);
        media_type[c] = 0;
    }
    *payload = comma + 1;
    *payload_len = len - (size_t)(comma + 1 - s);
    return PS_OK;
}
