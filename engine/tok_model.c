/* Tokenizer lifecycle: the vocabulary container the parsers fill, the checks
 * sentencepiece runs when it loads a model (model_interface.cc
 * InitializePieces), the lookup tables, accessors and the demo byte model.
 * Encoding is in tok_bpe.c / tok_normalize.c, decoding in tok_decode.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

void tok_spec_init(tok_spec *s, const char *what) {
    memset(s, 0, sizeof *s);
    /* defaults of sentencepiece_model.proto */
    s->model_type = TOK_MODEL_UNIGRAM;
    s->add_dummy_prefix = true;
    s->remove_extra_whitespaces = true;
    s->escape_whitespaces = true;
    s->bos_id = -2;
    s->eos_id = -2;
    snprintf(s->bos_piece, sizeof s->bos_piece, "<s>");
    snprintf(s->eos_piece, sizeof s->eos_piece, "</s>");
    snprintf(s->unk_surface, sizeof s->unk_surface, " \xE2\x81\x87 ");
    s->what = what;
}

void tok_spec_free(tok_spec *s) {
    if (!s) return;
    free(s->blob);
    free(s->pieces);
    s->blob = NULL;
    s->pieces = NULL;
    s->n = s->cap = 0;
    s->blob_len = s->blob_cap = 0;
}

ps_status tok_spec_add(tok_spec *s, const char *piece, size_t len, float score, int type,
                       ps_err *err) {
    if (len == 0) return ps_errf(err, PS_EFORMAT, "%s: piece %d is empty", s->what, s->n);
    if (len > TOK_MAX_PIECE_BYTES)
        return ps_errf(err, PS_ETOOLARGE, "%s: piece %d is %zu bytes, limit %d", s->what, s->n, len,
                       TOK_MAX_PIECE_BYTES);
    if (s->n >= TOK_MAX_PIECES)
        return ps_errf(err, PS_ETOOLARGE, "%s: more than %d pieces", s->what, TOK_MAX_PIECES);
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 1024;
        tok_entry *p = realloc(s->pieces, sizeof(tok_entry) * (size_t)cap);
        if (!p) return ps_errf(err, PS_ENOMEM, "%s: %d pieces", s->what, cap);
        s->pieces = p;
        s->cap = cap;
    }
    if (s->blob_len + len + 1 > s->blob_cap) {
        size_t cap = s->blob_cap ? s->blob_cap : 16384;
        while (cap < s->blob_len + len + 1)
            cap *= 2;
        char *b = realloc(s->blob, cap);
        if (!b) return ps_errf(err, PS_ENOMEM, "%s: %zu bytes of pieces", s->what, cap);
        s->blob = b;
        s->blob_cap = cap;
    }
    memcpy(s->blob + s->blob_len, piece, len);
    s->blob[s->blob_len + len] = '\0';
    s->pieces[s->n] = (tok_entry){(uint32_t)s->blob_len, (uint32_t)len, score, (uint8_t)type};
    s->blob_len += len + 1;
    s->n++;
    return PS_OK;
}

/* sentencepiece PieceToByte: only the exact spelling ByteToPiece makes. */
static int tok_piece_to_byte(const char *p, size_t len) {
    static const char hex[] = "0123456789ABCDEF";
    if (len != 6 || memcmp(p, "<0x", 3) != 0 || p[5] != '>') return -1;
    const char *hi = memchr(hex, p[3], 16), *lo = memchr(hex, p[4], 16);
    if (!hi || !lo || !p[3] || !p[4]) return -1;
    return (int)((hi - hex) * 16 + (lo - hex));
}

static const char *tok_type_name(int type) {
    switch (type) {
    case TOK_T_NORMAL: return "normal";
    case TOK_T_UNKNOWN: return "unknown";
    case TOK_T_CONTROL: return "control";
    case TOK_T_USER_DEFINED: return "user_defined";
    case TOK_T_UNUSED: return "unused";
    case TOK_T_BYTE: return "byte";
    default: return "invalid";
    }
}

/* One piece into the tables; the checks of InitializePieces. */
static ps_status tok_build_piece(tokenizer *t, int32_t i, ps_err *err) {
    tok_spec *s = &t->spec;
    const tok_entry *e = &s->pieces[i];
    const char *p = s->blob + e->off;
    bool normal =
        e->type == TOK_T_NORMAL || e->type == TOK_T_USER_DEFINED || e->type == TOK_T_UNUSED;
    if (e->type < TOK_T_NORMAL || e->type > TOK_T_BYTE)
        return ps_errf(err, PS_EFORMAT, "%s: piece %d has type %d, expected 1..6", s->what, i,
                       e->type);
    int32_t dup = tok_hash_insert(normal ? &t->normal : &t->reserved, s, i);
    if (dup >= 0)
        return ps_errf(err, PS_EFORMAT, "%s: piece %d '%.64s' (%s) is already defined as piece %d",
                       s->what, i, p, tok_type_name(e->type), dup);
    if ((int)e->len > t->max_piece_len) t->max_piece_len = (int)e->len;
    if (e->type == TOK_T_USER_DEFINED && strlen(p) == e->len) {
        /* sentencepiece's matcher keys are C strings; pieces with a NUL inside are
         * left out rather than truncated */
        tok_hash_insert(&t->user, s, i);
        if ((int)e->len > t->user_max_len) t->user_max_len = (int)e->len;
        t->user_first[(unsigned char)p[0] >> 5] |= 1u << ((unsigned char)p[0] & 31);
    }
    if (e->type == TOK_T_UNKNOWN) {
        if (t->unk_id >= 0)
            return ps_errf(err, PS_EFORMAT, "%s: pieces %d and %d are both of type unknown",
                           s->what, t->unk_id, i);
        t->unk_id = i;
    }
    if (e->type == TOK_T_BYTE) {
        if (!s->byte_fallback)
            return ps_errf(err, PS_EFORMAT, "%s: byte piece %d '%.16s' but byte_fallback is false",
                           s->what, i, p);
        int b = tok_piece_to_byte(p, e->len);
        if (b < 0)
            return ps_errf(err, PS_EFORMAT, "%s: byte piece %d is '%.16s', expected <0xXX>",
                           s->what, i, p);
        t->byte_id[b] = i;
    }
    return PS_OK;
}

/* sentencepiece bos_id()/eos_id(): the id of the named piece if it is a control piece. */
static int32_t tok_resolve_special(const tokenizer *t, int32_t id, const char *piece) {
    if (id >= -1) return id;
    size_t len = strlen(piece);
    int32_t r = tok_hash_find(&t->reserved, &t->spec, piece, len);
    if (r < 0) r = tok_hash_find(&t->normal, &t->spec, piece, len);
    return r >= 0 && t->spec.pieces[r].type == TOK_T_CONTROL ? r : -1;
}

static ps_status tok_check_model(const tok_spec *s, ps_err *err) {
    static const char *names[] = {"?", "unigram", "bpe", "word", "char"};
    if (s->model_type == TOK_MODEL_BPE || s->model_type == TOK_MODEL_BYTES) return PS_OK;
    if (s->model_type >= 1 && s->model_type <= 4)
        return ps_errf(err, PS_ENOTSUP, "%s: model_type %s is not supported (only bpe)", s->what,
                       names[s->model_type]);
    return ps_errf(err, PS_EFORMAT, "%s: model_type %d, expected 1..4", s->what, s->model_type);
}

ps_status tok_build(tok_spec *spec, tokenizer **out, ps_err *err) {
    *out = NULL;
    ps_status st;
    tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        tok_spec_free(spec);
        return ps_errf(err, PS_ENOMEM, "tokenizer");
    }
    t->spec = *spec;
    memset(spec, 0, sizeof *spec);
    t->unk_id = -1;
    memset(t->byte_id, 0xff, sizeof t->byte_id);
    if ((st = tok_check_model(&t->spec, err))) goto fail;
    if (t->spec.n == 0) {
        st = ps_errf(err, PS_EFORMAT, "%s: no pieces", t->spec.what);
        goto fail;
    }
    if ((st = tok_hash_init(&t->normal, t->spec.n, err))) goto fail;
    if ((st = tok_hash_init(&t->reserved, t->spec.n, err))) goto fail;
    int n_user = 0;
    for (int32_t i = 0; i < t->spec.n; i++) n_user += t->spec.pieces[i].type == TOK_T_USER_DEFINED;
    if ((st = tok_hash_init(&t->user, n_user, err))) goto fail;
    for (int32_t i = 0; i < t->spec.n; i++)
        if ((st = tok_build_piece(t, i, err))) goto fail;
    if (t->unk_id < 0) {
        st = ps_errf(err, PS_EFORMAT, "%s: no piece of type unknown (<unk>)", t->spec.what);
        goto fail;
    }
    for (int b = 0; t->spec.byte_fallback && b < 256; b++) {
        if (t->byte_id[b] < 0) {
            st = ps_errf(err, PS_EFORMAT, "%s: byte_fallback is set but piece <0x%02X> is missing",
                         t->spec.what, b);
            goto fail;
        }
    }
    t->bos_id = tok_resolve_special(t, t->spec.bos_id, t->spec.bos_piece);
    t->eos_id = tok_resolve_special(t, t->spec.eos_id, t->spec.eos_piece);
    *out = t;
    return PS_OK;
fail:
    tok_free(t);
    return st;
}

void tok_free(tokenizer *t) {
    if (!t) return;
    tok_spec_free(&t->spec);
    tok_hash_free(&t->normal);
    tok_hash_free(&t->reserved);
    tok_hash_free(&t->user);
    free(t);
}

int tok_vocab_size(const tokenizer *t) { return t->spec.n; }
int32_t tok_bos(const tokenizer *t) { return t->bos_id; }
int32_t tok_eos(const tokenizer *t) { return t->eos_id; }

const char *tok_piece(const tokenizer *t, int32_t id) {
    if (!t || id < 0 || id >= t->spec.n) return NULL;
    return t->spec.blob + t->spec.pieces[id].off;
}

ps_status tok_init_bytes(tokenizer **out, ps_err *err) {
    tok_spec s;
    ps_status st;
    tok_spec_init(&s, "byte tokenizer");
    s.model_type = TOK_MODEL_BYTES;
    s.byte_fallback = true;
    s.add_dummy_prefix = false;
    s.remove_extra_whitespaces = false;
    s.bos_id = 1;
    s.eos_id = 2;
    if ((st = tok_spec_add(&s, "<unk>", 5, 0, TOK_T_UNKNOWN, err))) goto fail;
    if ((st = tok_spec_add(&s, "<s>", 3, 0, TOK_T_CONTROL, err))) goto fail;
    if ((st = tok_spec_add(&s, "</s>", 4, 0, TOK_T_CONTROL, err))) goto fail;
    for (int b = 0; b < 256; b++) {
        char p[8];
        snprintf(p, sizeof p, "<0x%02X>", b);
        if ((st = tok_spec_add(&s, p, 6, 0, TOK_T_BYTE, err))) goto fail;
    }
    return tok_build(&s, out, err);
fail:
    tok_spec_free(&s);
    return st;
}
