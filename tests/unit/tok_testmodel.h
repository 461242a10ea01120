/* Builders for small tokenizer files in tests (header-only, see tok_testlib.h):
 * a protobuf writer for sentencepiece ModelProto and a GGUF v3 writer. The
 * field numbers follow sentencepiece_model.proto and ggml's gguf.cpp; they are
 * written independently of the parsers under test. */
#ifndef PS_TOK_TESTMODEL_H
#define PS_TOK_TESTMODEL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint8_t *b;
    size_t n, cap;
} tm_buf;

static inline void tm_put(tm_buf *w, const void *p, size_t n) {
    if (w->n + n > w->cap) {
        w->cap = (w->n + n) * 2 + 64;
        w->b = realloc(w->b, w->cap);
    }
    memcpy(w->b + w->n, p, n);
    w->n += n;
}
static inline void tm_varint(tm_buf *w, uint64_t v) {
    do {
        uint8_t c = (uint8_t)(v & 0x7F);
        v >>= 7;
        if (v) c |= 0x80;
        tm_put(w, &c, 1);
    } while (v);
}
static inline void tm_key(tm_buf *w, uint32_t field, int wire) {
    tm_varint(w, (uint64_t)field << 3 | (uint64_t)wire);
}
static inline void tm_bytes(tm_buf *w, uint32_t field, const void *p, size_t n) {
    tm_key(w, field, 2);
    tm_varint(w, n);
    tm_put(w, p, n);
}
static inline void tm_uint(tm_buf *w, uint32_t field, uint64_t v) {
    tm_key(w, field, 0);
    tm_varint(w, v);
}
static inline void tm_float(tm_buf *w, uint32_t field, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint8_t le[4] = {(uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24)};
    tm_key(w, field, 5);
    tm_put(w, le, 4);
}
static inline void tm_msg(tm_buf *w, uint32_t field, tm_buf *sub) {
    tm_bytes(w, field, sub->b, sub->n);
    free(sub->b);
    memset(sub, 0, sizeof *sub);
}

/* sentencepiece piece types */
enum { TM_NORMAL = 1, TM_UNKNOWN = 2, TM_CONTROL = 3, TM_USER = 4, TM_UNUSED = 5, TM_BYTE = 6 };

typedef struct {
    const char *piece;
    float score;
    int type;
} tm_piece;

typedef struct {
    int model_type;          /* 2 = bpe; 0 = field absent */
    int byte_fallback;       /* -1 = absent */
    int add_dummy_prefix;    /* -1 = absent (proto default true) */
    int remove_extra_ws;     /* -1 = absent (proto default true) */
    int escape_ws;           /* -1 = absent */
    int ws_suffix;           /* -1 = absent */
    const char *unk_surface; /* NULL = absent */
    const char *charsmap;    /* NULL = absent */
} tm_opts;

static inline tm_opts tm_opts_bpe(void) {
    tm_opts o = {2, 0, 1, 0, -1, -1, NULL, NULL};
    return o;
}

static inline void tm_add_piece(tm_buf *w, const char *p, float score, int type) {
    tm_buf sp = {0};
    tm_bytes(&sp, 1, p, strlen(p));
    tm_float(&sp, 2, score);
    if (type != TM_NORMAL) tm_uint(&sp, 3, (uint64_t)type);
    tm_msg(w, 1, &sp);
}

/* pieces, then (when byte_fallback > 0) the 256 byte pieces, then the specs. */
static inline tm_buf tm_spm_model(const tm_piece *pieces, int n, const tm_opts *o) {
    tm_buf w = {0}, tr = {0}, nm = {0};
    for (int i = 0; i < n; i++)
        tm_add_piece(&w, pieces[i].piece, pieces[i].score, pieces[i].type);
    if (o->byte_fallback > 0) {
        for (int b = 0; b < 256; b++) {
            char p[8];
            snprintf(p, sizeof p, "<0x%02X>", b);
            tm_add_piece(&w, p, 0, TM_BYTE);
        }
    }
    if (o->model_type) tm_uint(&tr, 3, (uint64_t)o->model_type);
    if (o->ws_suffix >= 0) tm_uint(&tr, 24, (uint64_t)o->ws_suffix);
    if (o->byte_fallback >= 0) tm_uint(&tr, 35, (uint64_t)o->byte_fallback);
    if (o->unk_surface) tm_bytes(&tr, 44, o->unk_surface, strlen(o->unk_surface));
    tm_uint(&tr, 41, 1);            /* bos_id: an int32 field the parser must skip */
    tm_uint(&tr, 43, (uint64_t)-1); /* pad_id = -1: a 10-byte varint */
    tm_msg(&w, 2, &tr);
    tm_bytes(&nm, 1, "identity", 8);
    if (o->charsmap) tm_bytes(&nm, 2, o->charsmap, strlen(o->charsmap));
    if (o->add_dummy_prefix >= 0) tm_uint(&nm, 3, (uint64_t)o->add_dummy_prefix);
    if (o->remove_extra_ws >= 0) tm_uint(&nm, 4, (uint64_t)o->remove_extra_ws);
    if (o->escape_ws >= 0) tm_uint(&nm, 5, (uint64_t)o->escape_ws);
    tm_msg(&w, 3, &nm);
    return w;
}

/* ---- GGUF v3 ---- */
static inline void tm_le(tm_buf *w, uint64_t v, int n) {
    uint8_t b[8];
    for (int i = 0; i < n; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    tm_put(w, b, (size_t)n);
}
static inline void tm_gstr(tm_buf *w, const char *s) {
    tm_le(w, strlen(s), 8);
    tm_put(w, s, strlen(s));
}

/* A vocab-only GGUF: model name, tokens/scores/types, bos/eos/unk ids. */
static inline tm_buf tm_gguf(const char *model, const tm_piece *pieces, int n, int version) {
    tm_buf w = {0};
    tm_put(&w, "GGUF", 4);
    tm_le(&w, (uint64_t)version, 4);
    tm_le(&w, 0, 8); /* tensors */
    tm_le(&w, 7, 8); /* key/values */
    tm_gstr(&w, "general.architecture");
    tm_le(&w, 8, 4);
    tm_gstr(&w, "llama");
    tm_gstr(&w, "tokenizer.ggml.model");
    tm_le(&w, 8, 4);
    tm_gstr(&w, model);
    tm_gstr(&w, "tokenizer.ggml.tokens");
    tm_le(&w, 9, 4);
    tm_le(&w, 8, 4);
    tm_le(&w, (uint64_t)n, 8);
    for (int i = 0; i < n; i++)
        tm_gstr(&w, pieces[i].piece);
    tm_gstr(&w, "tokenizer.ggml.scores");
    tm_le(&w, 9, 4);
    tm_le(&w, 6, 4);
    tm_le(&w, (uint64_t)n, 8);
    for (int i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &pieces[i].score, 4);
        tm_le(&w, u, 4);
    }
    tm_gstr(&w, "tokenizer.ggml.token_type");
    tm_le(&w, 9, 4);
    tm_le(&w, 5, 4);
    tm_le(&w, (uint64_t)n, 8);
    for (int i = 0; i < n; i++)
        tm_le(&w, (uint64_t)pieces[i].type, 4);
    tm_gstr(&w, "tokenizer.ggml.bos_token_id");
    tm_le(&w, 4, 4);
    tm_le(&w, 1, 4);
    tm_gstr(&w, "tokenizer.ggml.eos_token_id");
    tm_le(&w, 4, 4);
    tm_le(&w, 2, 4);
    return w;
}

#endif
