/* Lookups over the generated tables (binary search over sorted ranges) and a
 * strict UTF-8 decoder. Mirrors CPython's unicodeobject.c lower_ucs4 /
 * handle_capital_sigma for the Final_Sigma rule. */
#include "unicode.h"

#include <stdlib.h>

static bool in_ranges(const uint32_t (*r)[2], int n, uint32_t cp) {
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < r[mid][0]) hi = mid - 1;
        else if (cp > r[mid][1]) lo = mid + 1;
        else return true;
    }
    return false;
}

bool uni_is_letter(uint32_t cp) {
    if (cp < 128) return (cp | 32) >= 'a' && (cp | 32) <= 'z';
    return in_ranges(uni_letter_ranges, uni_letter_ranges_n, cp);
}
bool uni_is_number(uint32_t cp) {
    if (cp < 128) return cp >= '0' && cp <= '9';
    return in_ranges(uni_number_ranges, uni_number_ranges_n, cp);
}
bool uni_is_regex_space(uint32_t cp) {
    return in_ranges(uni_regex_space_ranges, uni_regex_space_ranges_n, cp);
}
bool uni_is_py_space(uint32_t cp) { return in_ranges(uni_py_space_ranges, uni_py_space_ranges_n, cp); }
bool uni_is_ci_skip(uint32_t cp) { return in_ranges(uni_ci_skip_ranges, uni_ci_skip_ranges_n, cp); }

static bool is_cased(uint32_t cp) { return in_ranges(uni_cased_ranges, uni_cased_ranges_n, cp); }
static bool is_case_ignorable(uint32_t cp) {
    return in_ranges(uni_case_ignorable_ranges, uni_case_ignorable_ranges_n, cp);
}

/* CPython handle_capital_sigma: final form when preceded by a cased letter
 * (skipping case-ignorables) and not followed by one. */
static uint32_t capital_sigma(const uint32_t *s, size_t n, size_t i) {
    size_t j = i;
    while (j > 0 && is_case_ignorable(s[j - 1])) j--;
    bool final = j > 0 && is_cased(s[j - 1]);
    if (final) {
        size_t k = i + 1;
        while (k < n && is_case_ignorable(s[k])) k++;
        final = k == n || !is_cased(s[k]);
    }
    return final ? 0x3C2 : 0x3C3;
}

int uni_py_lower_at(const uint32_t *s, size_t n, size_t i, uint32_t out[3]) {
    uint32_t cp = s[i];
    if (cp < 128) {
        out[0] = cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
        return 1;
    }
    if (cp == 0x3A3) {
        out[0] = capital_sigma(s, n, i);
        return 1;
    }
    for (int m = 0; m < uni_lower_multis_n; m++)
        if (uni_lower_multis[m].cp == cp) {
            for (int k = 0; k < uni_lower_multis[m].n; k++) out[k] = uni_lower_multis[m].out[k];
            return uni_lower_multis[m].n;
        }
    int lo = 0, hi = uni_lower_pairs_n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < uni_lower_pairs[mid][0]) hi = mid - 1;
        else if (cp > uni_lower_pairs[mid][0]) lo = mid + 1;
        else {
            out[0] = uni_lower_pairs[mid][1];
            return 1;
        }
    }
    out[0] = cp;
    return 1;
}

/* Length of the UTF-8 sequence at s[0..avail) and its value, 0 if invalid. */
static int utf8_one(const unsigned char *s, size_t avail, uint32_t *cp) {
    unsigned char c = s[0];
    int n;
    uint32_t v, min;
    if (c < 0x80) { *cp = c; return 1; }
    if (c >= 0xC2 && c <= 0xDF) { n = 2; v = c & 0x1F; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { n = 3; v = c & 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { n = 4; v = c & 0x07; min = 0x10000; }
    else return 0;
    if ((size_t)n > avail) return 0;
    for (int k = 1; k < n; k++) {
        if ((s[k] & 0xC0) != 0x80) return 0;
        v = (v << 6) | (s[k] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return n;
}

ps_status uni_utf8_decode(const char *s, size_t len, uint32_t **out, size_t *n_out, ps_err *err) {
    const unsigned char *u = (const unsigned char *)s;
    uint32_t *cps = malloc(sizeof(uint32_t) * (len ? len : 1));
    if (!cps) return ps_errf(err, PS_ENOMEM, "utf-8 decode: no memory for %zu bytes", len);
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        int k = utf8_one(u + i, len - i, &cps[n]);
        if (k == 0) {
            free(cps);
            return ps_errf(err, PS_EINVAL, "text is not valid UTF-8 (byte 0x%02x at offset %zu)",
                           u[i], i);
        }
        i += (size_t)k;
        n++;
    }
    *out = cps;
    *n_out = n;
    return PS_OK;
}

int uni_utf8_put(uint32_t cp, unsigned char *b) {
    if (cp < 0x80) { b[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) {
        b[0] = (unsigned char)(0xC0 | (cp >> 6));
        b[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        b[0] = (unsigned char)(0xE0 | (cp >> 12));
        b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    b[0] = (unsigned char)(0xF0 | (cp >> 18));
    b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    b[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}
