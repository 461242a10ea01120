/* CLIP text cleanup + the pre-tokenising regex, hand-compiled.
 *
 * Mirrors simple_tokenizer.py:50-59 (basic_clean, whitespace_clean), :78
 * (the pattern, compiled with regex.IGNORECASE) and :121-127 (encode: clean,
 * lower, findall). Python semantics: strip() removes str.isspace characters,
 * \s is the regex module's (Unicode White_Space, no U+001C..1F), lower() is
 * the full mapping with Final_Sigma. findall tries the alternatives in order
 * at each position and skips a position where none matches (\s, and U+0345
 * which IGNORECASE makes fall between the classes). */
#include "clip_pretok.h"

#include <stdlib.h>
#include <string.h>

#include "html_unescape.h"
#include "unicode.h"

static void strip_py(const uint32_t *s, size_t *b, size_t *e) {
    while (*b < *e && uni_is_py_space(s[*b])) (*b)++;
    while (*e > *b && uni_is_py_space(s[*e - 1])) (*e)--;
}

ps_status clip_clean(const char *text, size_t len, uint32_t **out, size_t *n_out, ps_err *err) {
    uint32_t *a = NULL, *b = NULL;
    size_t n;
    ps_status st = uni_utf8_decode(text, len, &a, &n, err);
    if (st) return st;
    /* lower() may turn one code point into up to 3 (U+0130 -> 2) */
    uint32_t *grown = realloc(a, sizeof(uint32_t) * (3 * n + 1));
    if (grown) a = grown;
    b = malloc(sizeof(uint32_t) * (3 * n + 1));
    if (!grown || !b) {
        free(b);
        free(a);
        return ps_errf(err, PS_ENOMEM, "clip tokenizer: no memory for %zu code points", n);
    }
    n = html_unescape(a, n, b);
    n = html_unescape(b, n, a);
    size_t s0 = 0, s1 = n, m = 0;
    strip_py(a, &s0, &s1);
    for (size_t i = s0; i < s1;) { /* \s+ -> ' ' */
        if (uni_is_regex_space(a[i])) {
            while (i < s1 && uni_is_regex_space(a[i])) i++;
            b[m++] = ' ';
        } else {
            b[m++] = a[i++];
        }
    }
    s0 = 0;
    s1 = m;
    strip_py(b, &s0, &s1);
    n = 0;
    for (size_t i = s0; i < s1; i++) { /* lower() sees the stripped string only */
        uint32_t lo[3];
        int k = uni_py_lower_at(b + s0, s1 - s0, i - s0, lo);
        for (int j = 0; j < k; j++) a[n++] = lo[j];
    }
    free(b);
    *out = a;
    *n_out = n;
    return PS_OK;
}

/* regex IGNORECASE equality of a text code point with a lower-case ASCII
 * pattern letter: simple case folding, under which U+017F (long s) is 's'. */
static bool eq_fold(uint32_t c, char p) {
    if (c == (uint32_t)p) return true;
    if (c >= 'A' && c <= 'Z') return c + 32 == (uint32_t)p;
    return p == 's' && c == 0x17F;
}

/* Length of `lit` matched case-insensitively at s[i], 0 if it does not match. */
static size_t match_lit(const uint32_t *s, size_t n, size_t i, const char *lit) {
    size_t k = strlen(lit);
    if (n - i < k) return 0;
    for (size_t j = 0; j < k; j++)
        if (!eq_fold(s[i + j], lit[j])) return 0;
    return k;
}

static bool exact_lit(const uint32_t *s, size_t len, const char *lit) {
    if (strlen(lit) != len) return false;
    for (size_t j = 0; j < len; j++)
        if (s[j] != (uint32_t)(unsigned char)lit[j]) return false;
    return true;
}

/* [^\s\p{L}\p{N}] as the IGNORECASE pattern applies it */
static bool is_other(uint32_t c) {
    return !uni_is_regex_space(c) && !uni_is_letter(c) && !uni_is_number(c) && !uni_is_ci_skip(c);
}

/* Tries the alternatives in the pattern's order at s[i]; returns match length. */
static size_t match_at(const uint32_t *s, size_t n, size_t i, int *kind) {
    static const char *const contractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    size_t k;
    *kind = CLIP_PIECE_TEXT;
    if ((k = match_lit(s, n, i, "<|startoftext|>"))) {
        if (exact_lit(s + i, k, "<|startoftext|>")) *kind = CLIP_PIECE_SOT;
        return k;
    }
    if ((k = match_lit(s, n, i, "<|endoftext|>"))) {
        if (exact_lit(s + i, k, "<|endoftext|>")) *kind = CLIP_PIECE_EOT;
        return k;
    }
    for (int c = 0; c < 7; c++)
        if ((k = match_lit(s, n, i, contractions[c]))) return k;
    if (uni_is_letter(s[i])) {
        for (k = i + 1; k < n && uni_is_letter(s[k]); k++) {}
        return k - i;
    }
    if (uni_is_number(s[i])) return 1;
    if (is_other(s[i])) {
        for (k = i + 1; k < n && is_other(s[k]); k++) {}
        return k - i;
    }
    return 0;
}

bool clip_next_piece(const uint32_t *s, size_t n, size_t *pos, size_t *start, size_t *end,
                     int *kind) {
    for (size_t i = *pos; i < n; i++) {
        size_t k = match_at(s, n, i, kind);
        if (k) {
            *start = i;
            *end = i + k;
            *pos = i + k;
            return true;
        }
    }
    *pos = n;
    return false;
}
