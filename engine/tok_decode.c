/* Streaming detokenisation, one id at a time, with the output of
 * sentencepiece's SentencePieceProcessor::Decode (ids -> text) when the
 * chunks are concatenated:
 *  - control pieces emit nothing; the unknown piece emits the unk surface;
 *  - '▁' becomes ' '; with strip_leading_space the leading '▁' of the first
 *    piece that emits anything is dropped (is_bos_ws / bos_ws_seen logic);
 *  - consecutive byte pieces are joined and released per UTF-8 character;
 *    a byte that cannot start or continue a valid character becomes U+FFFD
 *    (one per byte, ProcessBytePieces), including bytes left over when a
 *    non-byte piece or the end of the stream arrives.
 * A chunk never ends inside a character, so every chunk is valid UTF-8. */
#include <string.h>

#include "tok_internal.h"

#define TOK_PENDING_MAX 4 /* a byte run is released once it holds a full character */

void tok_decoder_init(tok_decoder *d, bool strip_leading_space) {
    memset(d, 0, sizeof *d);
    d->at_start = true;
    d->strip_leading_space = strip_leading_space;
}

int tok_max_token_bytes(const tokenizer *t) {
    int piece = t->max_piece_len;
    int unk = (int)strlen(t->spec.unk_surface);
    return 3 * TOK_PENDING_MAX + (piece > unk ? piece : unk);
}

/* Bytes a lead byte asks for, 0 if it can start no character (DecodeUTF8). */
static size_t tok_lead_len(unsigned char c) {
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) return 2;
    if ((c & 0xF0) == 0xE0) return 3;
    if ((c & 0xF8) == 0xF0) return 4;
    return 0;
}

/* Releases the complete characters at the front of pending; with `final`,
 * also the incomplete rest (as U+FFFD per byte). */
static size_t tok_drain(tok_decoder *d, bool final, char *out) {
    size_t o = 0;
    while (d->n_pending > 0) {
        const unsigned char *p = d->pending;
        size_t have = (size_t)d->n_pending, need = tok_lead_len(p[0]), used = 1;
        bool bad = need == 0;
        for (size_t k = 1; !bad && k < need && k < have; k++)
            bad = (p[k] & 0xC0) != 0x80;
        if (!bad && have < need && !final) break; /* wait for the rest */
        if (!bad && have >= need && tok_utf8_decode(p, need, &used) >= 0) {
            memcpy(out + o, p, used);
            o += used;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            used = 1;
        }
        memmove(d->pending, p + used, have - used);
        d->n_pending -= (int)used;
    }
    return o;
}

static int tok_hex(char c) { return c <= '9' ? c - '0' : c - 'A' + 10; }

/* Appends piece text with '▁' -> ' '. */
static size_t tok_copy_piece(const char *p, size_t len, char *out) {
    size_t o = 0;
    for (size_t k = 0; k < len;) {
        if (len - k >= 3 && memcmp(p + k, "\xE2\x96\x81", 3) == 0) {
            out[o++] = ' ';
            k += 3;
        } else {
            out[o++] = p[k++];
        }
    }
    return o;
}

/* Commits the work buffer when it fits cap; otherwise leaves everything as it was. */
static int tok_commit(tok_decoder *d, const tok_decoder *work, const char *buf, size_t n, char *out,
                      int cap) {
    if (cap < 0 || n > (size_t)cap) return -1;
    memcpy(out, buf, n);
    if (n < (size_t)cap) out[n] = '\0';
    *d = *work;
    return (int)n;
}

int tok_decode_next(const tokenizer *t, tok_decoder *d, int32_t id, char *out, int cap) {
    char buf[3 * TOK_PENDING_MAX + TOK_MAX_PIECE_BYTES + TOK_SURFACE_MAX];
    if (!t || id < 0 || id >= t->spec.n) return -1;
    tok_decoder w = *d;
    const tok_entry *e = &t->spec.pieces[id];
    const char *p = t->spec.blob + e->off;
    size_t n = 0, len = e->len;
    if (e->type == TOK_T_BYTE) {
        /* tok_build checked the spelling <0xXX> (upper-case hex) */
        int b = (tok_hex(p[3]) << 4) | tok_hex(p[4]);
        if (w.n_pending >= TOK_PENDING_MAX) n += tok_drain(&w, true, buf); /* cannot happen */
        w.pending[w.n_pending++] = (unsigned char)b;
        w.at_start = false; /* the byte run will emit at least one character */
        n += tok_drain(&w, false, buf + n);
        return tok_commit(d, &w, buf, n, out, cap);
    }
    n = tok_drain(&w, true, buf);
    if (n > 0) w.at_start = false;
    if (e->type == TOK_T_CONTROL) return tok_commit(d, &w, buf, n, out, cap);
    if (e->type == TOK_T_UNKNOWN) {
        size_t ul = strlen(t->spec.unk_surface);
        memcpy(buf + n, t->spec.unk_surface, ul);
        n += ul;
        if (ul > 0) w.at_start = false;
        return tok_commit(d, &w, buf, n, out, cap);
    }
    bool bos_ws_seen = false;
    if (w.strip_leading_space && w.at_start &&
        (t->spec.add_dummy_prefix || t->spec.remove_extra_whitespaces) && len >= 3 &&
        memcmp(p, "\xE2\x96\x81", 3) == 0) {
        p += 3;
        len -= 3;
        /* with remove_extra_whitespaces sentencepiece keeps stripping while
         * nothing has been emitted */
        bos_ws_seen = !t->spec.remove_extra_whitespaces;
    }
    size_t k = tok_copy_piece(p, len, buf + n);
    n += k;
    if (k > 0 || bos_ws_seen) w.at_start = false;
    return tok_commit(d, &w, buf, n, out, cap);
}

int tok_decode_flush(const tokenizer *t, tok_decoder *d, char *out, int cap) {
    char buf[3 * TOK_PENDING_MAX];
    tok_decoder w = *d;
    size_t n = tok_drain(&w, true, buf);
    if (n > 0) w.at_start = false;
    return tok_commit(d, &w, buf, n, out, cap);
}
