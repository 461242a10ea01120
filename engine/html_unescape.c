/* html.unescape on code points; see html_unescape.h for the reference. */
#include "html_unescape.h"

#include <stdbool.h>
#include <string.h>

#include "unicode.h"

#define HTML_MAX_NAME 32 /* the {1,32} of the reference regex */

static bool is_digit(uint32_t c) { return c >= '0' && c <= '9'; }
static int hex_val(uint32_t c) {
    if (c >= '0' && c <= '9') return (int)(c - '0');
    if (c >= 'a' && c <= 'f') return (int)(c - 'a' + 10);
    if (c >= 'A' && c <= 'F') return (int)(c - 'A' + 10);
    return -1;
}

static const char *entity_lookup(const char *name) {
    int lo = 0, hi = html_entities_n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(name, html_entities[mid].name);
        if (c == 0) return html_entities[mid].value;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

/* Decodes a table value (short, valid UTF-8) into out. */
static size_t put_utf8_value(const char *v, uint32_t *out) {
    const unsigned char *u = (const unsigned char *)v;
    size_t n = 0;
    while (*u) {
        uint32_t c = *u++;
        int more = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
        if (more) c &= 0x3Fu >> more;
        while (more-- > 0 && *u) c = (c << 6) | (*u++ & 0x3F);
        out[n++] = c;
    }
    return n;
}

/* Numeric reference value -> code points, as _replace_charref. */
static size_t numeric_ref(uint32_t num, uint32_t *out) {
    for (int i = 0; i < html_invalid_charrefs_n; i++)
        if (html_invalid_charrefs[i][0] == num) {
            out[0] = html_invalid_charrefs[i][1];
            return 1;
        }
    if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) {
        out[0] = 0xFFFD;
        return 1;
    }
    for (int i = 0; i < html_invalid_codepoints_n; i++)
        if (html_invalid_codepoints[i] == num) return 0;
    out[0] = num;
    return 1;
}

/* Tries a numeric reference at in[i] == '&', in[i+1] == '#'. Returns the
 * number of input code points consumed (0: no match) and writes the output. */
static size_t try_numeric(const uint32_t *in, size_t n, size_t i, uint32_t *out, size_t *n_out) {
    size_t j = i + 2;
    uint32_t num = 0;
    bool hex = j < n && (in[j] == 'x' || in[j] == 'X') && j + 1 < n && hex_val(in[j + 1]) >= 0;
    if (hex) {
        for (j++; j < n && hex_val(in[j]) >= 0; j++)
            num = num > 0x10FFFF ? num : num * 16 + (uint32_t)hex_val(in[j]);
    } else if (j < n && is_digit(in[j])) {
        for (; j < n && is_digit(in[j]); j++) num = num > 0x10FFFF ? num : num * 10 + (in[j] - '0');
    } else {
        return 0;
    }
    if (j < n && in[j] == ';') j++;
    *n_out = numeric_ref(num, out);
    return j - i;
}

static bool name_char(uint32_t c) {
    return c != '\t' && c != '\n' && c != '\f' && c != ' ' && c != '<' && c != '&' && c != '#' &&
           c != ';';
}

/* Tries a named reference at in[i] == '&'. Same contract as try_numeric. */
static size_t try_named(const uint32_t *in, size_t n, size_t i, uint32_t *out, size_t *n_out) {
    size_t j = i + 1;
    while (j < n && j - (i + 1) < HTML_MAX_NAME && name_char(in[j])) j++;
    if (j == i + 1) return 0;
    if (j < n && in[j] == ';') j++;
    const uint32_t *s = in + i + 1;
    size_t len = j - (i + 1), ascii = 0;
    char name[HTML_MAX_NAME + 2];
    while (ascii < len && s[ascii] > 0 && s[ascii] < 128) { /* keys: ASCII, no NUL */
        name[ascii] = (char)s[ascii];
        ascii++;
    }
    const char *v = NULL;
    size_t used = 0;
    if (ascii == len) {
        name[len] = 0;
        v = entity_lookup(name);
        used = len;
    }
    /* longest prefix of length len-1 .. 2 (keys are ASCII, so within `ascii`) */
    for (size_t x = len - 1; !v && x >= 2; x--) {
        if (x > ascii) continue;
        name[x] = 0;
        v = entity_lookup(name);
        used = x;
    }
    size_t k = 0;
    if (v) {
        k = put_utf8_value(v, out);
        for (size_t r = used; r < len; r++) out[k++] = s[r];
    } else {
        out[k++] = '&';
        for (size_t r = 0; r < len; r++) out[k++] = s[r];
    }
    *n_out = k;
    return j - i;
}

size_t html_unescape(const uint32_t *in, size_t n, uint32_t *out) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t used = 0, k = 0;
        if (in[i] == '&') {
            if (i + 1 < n && in[i + 1] == '#') used = try_numeric(in, n, i, out + o, &k);
            else used = try_named(in, n, i, out + o, &k);
        }
        if (used) {
            o += k;
            i += used;
        } else {
            out[o++] = in[i++];
        }
    }
    return o;
}
