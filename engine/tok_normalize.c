/* Text normalisation before BPE, as sentencepiece's Normalizer::Normalize does
 * it for a model without a precompiled charsmap ("identity"): user-defined
 * pieces pass through whole, invalid UTF-8 bytes become U+FFFD one byte at a
 * time, ' ' becomes '▁' (escape_whitespaces), one '▁' is prepended
 * (add_dummy_prefix; appended with treat_whitespace_as_suffix), and with
 * remove_extra_whitespaces runs of spaces collapse and the ends are trimmed.
 * No Unicode normalisation (NFKC etc.): tok_build refuses models needing it. */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

static const char tok_space_symbol[] = "\xE2\x96\x81"; /* U+2581 '▁' */
static const char tok_replacement[] = "\xEF\xBF\xBD";  /* U+FFFD */

static bool tok_is_trail(unsigned char c) { return (c & 0xC0) == 0x80; }
static bool tok_valid_cp(int32_t c) { return c < 0xD800 || (c >= 0xE000 && c <= 0x10FFFF); }

int32_t tok_utf8_decode(const unsigned char *s, size_t n, size_t *mblen) {
    *mblen = 1;
    if (n == 0) return -1;
    if (s[0] < 0x80) return s[0];
    if (n >= 2 && (s[0] & 0xE0) == 0xC0) {
        int32_t c = ((s[0] & 0x1F) << 6) | (s[1] & 0x3F);
        if (tok_is_trail(s[1]) && c >= 0x80 && tok_valid_cp(c)) {
            *mblen = 2;
            return c;
        }
    } else if (n >= 3 && (s[0] & 0xF0) == 0xE0) {
        int32_t c = ((s[0] & 0x0F) << 12) | ((s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        if (tok_is_trail(s[1]) && tok_is_trail(s[2]) && c >= 0x800 && tok_valid_cp(c)) {
            *mblen = 3;
            return c;
        }
    } else if (n >= 4 && (s[0] & 0xF8) == 0xF0) {
        int32_t c =
            ((s[0] & 0x07) << 18) | ((s[1] & 0x3F) << 12) | ((s[2] & 0x3F) << 6) | (s[3] & 0x3F);
        if (tok_is_trail(s[1]) && tok_is_trail(s[2]) && tok_is_trail(s[3]) && c >= 0x10000 &&
            tok_valid_cp(c)) {
            *mblen = 4;
            return c;
        }
    }
    return -1;
}

size_t tok_user_match(const tokenizer *t, const char *s, size_t n) {
    unsigned char c = (unsigned char)s[0];
    if (t->user_max_len == 0 || !(t->user_first[c >> 5] & (1u << (c & 31)))) return 0;
    size_t max = n < (size_t)t->user_max_len ? n : (size_t)t->user_max_len;
    for (size_t len = max; len > 0; len--)
        if (tok_hash_find(&t->user, &t->spec, s, len) >= 0) return len;
    return 0;
}

/* Normalizer::NormalizePrefix without a charsmap: the next unit of input and
 * the text it stands for. */
static size_t tok_next_unit(const tokenizer *t, const char *in, size_t n, const char **text,
                            size_t *text_len) {
    size_t m = tok_user_match(t, in, n);
    if (m > 0) {
        *text = in;
        *text_len = m;
        return m;
    }
    int32_t c = tok_utf8_decode((const unsigned char *)in, n, &m);
    /* IsValidDecodeUTF8: a literal U+FFFD in the input is valid */
    if (c < 0 && m != 3) {
        *text = tok_replacement;
        *text_len = 3;
        return 1;
    }
    *text = in;
    *text_len = m;
    return m;
}

static void tok_put_space(const tokenizer *t, char *out, size_t *o) {
    if (t->spec.escape_whitespaces) {
        memcpy(out + *o, tok_space_symbol, 3);
        *o += 3;
    } else {
        out[(*o)++] = ' ';
    }
}

ps_status tok_normalize(const tokenizer *t, const char *in, size_t n, char **out, size_t *n_out,
                        ps_err *err) {
    const tok_spec *s = &t->spec;
    const char *unit;
    size_t unit_len, used;
    *out = NULL;
    *n_out = 0;
    if (n == 0) return PS_OK;
    if (s->remove_extra_whitespaces) { /* heading spaces */
        while (n > 0 && (used = tok_next_unit(t, in, n, &unit, &unit_len)) > 0 && unit_len == 1 &&
               unit[0] == ' ') {
            in += used;
            n -= used;
        }
        if (n == 0) return PS_OK;
    }
    /* every input byte yields at most 3 output bytes (' ' -> '▁', bad byte -> U+FFFD) */
    char *buf = malloc(n * 3 + 3);
    if (!buf) return ps_errf(err, PS_ENOMEM, "tokenizer: normalising %zu bytes", n);
    size_t o = 0;
    if (!s->treat_ws_as_suffix && s->add_dummy_prefix) tok_put_space(t, buf, &o);
    bool prev_space = s->remove_extra_whitespaces;
    while (n > 0) {
        used = tok_next_unit(t, in, n, &unit, &unit_len);
        while (prev_space && unit_len > 0 && unit[0] == ' ') {
            unit++;
            unit_len--;
        }
        if (unit_len > 0) {
            for (size_t k = 0; k < unit_len; k++) {
                if (s->escape_whitespaces && unit[k] == ' ')
                    tok_put_space(t, buf, &o);
                else
                    buf[o++] = unit[k];
            }
            prev_space = unit[unit_len - 1] == ' ';
        }
        in += used;
        n -= used;
        if (!s->remove_extra_whitespaces) prev_space = false;
    }
    if (s->remove_extra_whitespaces) { /* trailing spaces */
        size_t sl = s->escape_whitespaces ? 3 : 1;
        const char *sp = s->escape_whitespaces ? tok_space_symbol : " ";
        while (o >= sl && memcmp(buf + o - sl, sp, sl) == 0)
            o -= sl;
    }
    if (s->treat_ws_as_suffix && s->add_dummy_prefix) tok_put_space(t, buf, &o);
    if (o == 0) {
        free(buf);
        return PS_OK;
    }
    *out = buf;
    *n_out = o;
    return PS_OK;
}
