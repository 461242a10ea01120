/* Reads a tokenizer from llama.cpp GGUF metadata (format v2/v3, as in ggml's
 * gguf.cpp): the key/value section only, tensor data is never touched, so a
 * full model file works as well as a vocab-only one.
 *
 * Used keys: tokenizer.ggml.model (must be "llama", i.e. SentencePiece),
 * .tokens, .scores, .token_type, .bos_token_id, .eos_token_id,
 * .unknown_token_id, .add_space_prefix, .remove_extra_whitespaces. Their meaning and defaults
 * follow llama.cpp's llama_vocab::load (bos 1, eos 2, unk 0, space prefix on). The
 * vocabulary is then encoded with sentencepiece semantics (tok_bpe.c); the
 * token types are sentencepiece's piece types. Other vocab types (gpt2 byte
 * BPE, bert WordPiece, ...) return PS_ENOTSUP. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tok_internal.h"

enum {
    GGUF_U8 = 0,
    GGUF_I8,
    GGUF_U16,
    GGUF_I16,
    GGUF_U32,
    GGUF_I32,
    GGUF_F32,
    GGUF_BOOL,
    GGUF_STRING,
    GGUF_ARRAY,
    GGUF_U64,
    GGUF_I64,
    GGUF_F64,
    GGUF_NTYPES
};

typedef struct {
    const uint8_t *p, *end, *base;
} gguf_reader;

/* An array value located during the scan. */
typedef struct {
    const uint8_t *data; /* first element */
    uint64_t n;
    uint32_t type;
    bool present;
} gguf_array;

typedef struct {
    gguf_array tokens, scores, types;
    char model[32];
    bool has_model;
    int64_t unk_id;
} gguf_vocab;

static size_t gguf_off(const gguf_reader *r) { return (size_t)(r->p - r->base); }

static ps_status gguf_need(gguf_reader *r, uint64_t n, const char *what, ps_err *err) {
    if (n <= (uint64_t)(r->end - r->p)) return PS_OK;
    return ps_errf(err, PS_EFORMAT, "gguf: offset %zu: %s needs %llu bytes, %zu left", gguf_off(r),
                   what, (unsigned long long)n, (size_t)(r->end - r->p));
}

static uint64_t gguf_le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static ps_status gguf_u32(gguf_reader *r, uint32_t *v, const char *what, ps_err *err) {
    ps_status st = gguf_need(r, 4, what, err);
    if (st) return st;
    *v = (uint32_t)gguf_le(r->p, 4);
    r->p += 4;
    return PS_OK;
}

static ps_status gguf_u64(gguf_reader *r, uint64_t *v, const char *what, ps_err *err) {
    ps_status st = gguf_need(r, 8, what, err);
    if (st) return st;
    *v = gguf_le(r->p, 8);
    r->p += 8;
    return PS_OK;
}

static ps_status gguf_str(gguf_reader *r, const char **s, uint64_t *len, const char *what,
                          ps_err *err) {
    ps_status st = gguf_u64(r, len, what, err);
    if (st || (st = gguf_need(r, *len, what, err))) return st;
    *s = (const char *)r->p;
    r->p += *len;
    return PS_OK;
}

static size_t gguf_type_size(uint32_t t) {
    static const size_t sz[GGUF_NTYPES] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < GGUF_NTYPES ? sz[t] : 0;
}

/* Skips one value of type t (arrays recurse, bounded by depth). */
static ps_status gguf_skip(gguf_reader *r, uint32_t t, int depth, ps_err *err) {
    ps_status st;
    if (t >= GGUF_NTYPES)
        return ps_errf(err, PS_EFORMAT, "gguf: offset %zu: value type %u, expected 0..12",
                       gguf_off(r), t);
    if (t == GGUF_STRING) {
        const char *s;
        uint64_t n;
        return gguf_str(r, &s, &n, "string", err);
    }
    if (t != GGUF_ARRAY) {
        if ((st = gguf_need(r, gguf_type_size(t), "value", err))) return st;
        r->p += gguf_type_size(t);
        return PS_OK;
    }
    uint32_t et;
    uint64_t n;
    if ((st = gguf_u32(r, &et, "array type", err)) || (st = gguf_u64(r, &n, "array length", err)))
        return st;
    if (depth > 4)
        return ps_errf(err, PS_EFORMAT, "gguf: offset %zu: arrays nested deeper than 4",
                       gguf_off(r));
    if (et < GGUF_NTYPES && gguf_type_size(et) > 0) {
        if (n > (uint64_t)(r->end - r->p) / gguf_type_size(et))
            return ps_errf(err, PS_EFORMAT,
                           "gguf: offset %zu: array of %llu x %zu bytes exceeds the %zu bytes left",
                           gguf_off(r), (unsigned long long)n, gguf_type_size(et),
                           (size_t)(r->end - r->p));
        r->p += n * gguf_type_size(et);
        return PS_OK;
    }
    for (uint64_t i = 0; i < n; i++)
        if ((st = gguf_skip(r, et, depth + 1, err))) return st;
    return PS_OK;
}

/* Records where an array value starts, checks its element type, skips it. */
static ps_status gguf_array_at(gguf_reader *r, const char *key, uint32_t t, gguf_array *a,
                               ps_err *err) {
    if (a->present) return ps_errf(err, PS_EFORMAT, "gguf: key '%s' appears twice", key);
    if (t != GGUF_ARRAY)
        return ps_errf(err, PS_EFORMAT, "gguf: key '%s' has type %u, expected array (9)", key, t);
    const uint8_t *start = r->p;
    ps_status st = gguf_skip(r, t, 0, err);
    if (st) return st;
    a->type = (uint32_t)gguf_le(start, 4);
    a->n = gguf_le(start + 4, 8);
    a->data = start + 12;
    a->present = true;
    return PS_OK;
}

/* An integer or bool value into *v (any integer type llama.cpp writers use). */
static ps_status gguf_int_value(gguf_reader *r, const char *key, uint32_t t, int64_t *v,
                                ps_err *err) {
    size_t sz = gguf_type_size(t);
    if (t == GGUF_F32 || t == GGUF_F64 || sz == 0)
        return ps_errf(err, PS_EFORMAT, "gguf: key '%s' has type %u, expected an integer", key, t);
    ps_status st = gguf_need(r, sz, key, err);
    if (st) return st;
    uint64_t u = gguf_le(r->p, (int)sz);
    bool is_signed = t == GGUF_I8 || t == GGUF_I16 || t == GGUF_I32 || t == GGUF_I64;
    if (is_signed && sz < 8 && (u >> (sz * 8 - 1)) & 1) u |= ~0ull << (sz * 8);
    *v = (int64_t)u;
    r->p += sz;
    return PS_OK;
}

static ps_status gguf_kv(gguf_reader *r, const char *key, size_t klen, gguf_vocab *v, tok_spec *s,
                         ps_err *err) {
    uint32_t t;
    int64_t iv = 0;
    ps_status st = gguf_u32(r, &t, "value type", err);
    if (st) return st;
#define KEY_IS(lit) (klen == sizeof(lit) - 1 && memcmp(key, lit, klen) == 0)
    if (KEY_IS("tokenizer.ggml.tokens"))
        return gguf_array_at(r, "tokenizer.ggml.tokens", t, &v->tokens, err);
    if (KEY_IS("tokenizer.ggml.scores"))
        return gguf_array_at(r, "tokenizer.ggml.scores", t, &v->scores, err);
    if (KEY_IS("tokenizer.ggml.token_type"))
        return gguf_array_at(r, "tokenizer.ggml.token_type", t, &v->types, err);
    if (KEY_IS("tokenizer.ggml.model")) {
        const char *m;
        uint64_t n;
        if (t != GGUF_STRING)
            return ps_errf(err, PS_EFORMAT,
                           "gguf: tokenizer.ggml.model has type %u, expected string (8)", t);
        if ((st = gguf_str(r, &m, &n, "tokenizer.ggml.model", err))) return st;
        snprintf(v->model, sizeof v->model, "%.*s", (int)(n < 31 ? n : 31), m);
        v->has_model = true;
        return PS_OK;
    }
    bool bos = KEY_IS("tokenizer.ggml.bos_token_id"), eos = KEY_IS("tokenizer.ggml.eos_token_id");
    bool unk = KEY_IS("tokenizer.ggml.unknown_token_id");
    bool space = KEY_IS("tokenizer.ggml.add_space_prefix");
    bool extra = KEY_IS("tokenizer.ggml.remove_extra_whitespaces");
#undef KEY_IS
    if (!(bos || eos || unk || space || extra)) return gguf_skip(r, t, 0, err);
    if ((st = gguf_int_value(r, bos ? "bos_token_id" : eos ? "eos_token_id" : "flag", t, &iv, err)))
        return st;
    if (bos)
        s->bos_id = iv == 0xFFFFFFFFll || iv < 0 ? -1 : (int32_t)(iv > INT32_MAX ? INT32_MAX : iv);
    if (eos)
        s->eos_id = iv == 0xFFFFFFFFll || iv < 0 ? -1 : (int32_t)(iv > INT32_MAX ? INT32_MAX : iv);
    if (unk) v->unk_id = iv;
    if (space) s->add_dummy_prefix = iv != 0;
    if (extra) s->remove_extra_whitespaces = iv != 0;
    return PS_OK;
}

static ps_status gguf_header(gguf_reader *r, uint64_t *n_kv, ps_err *err) {
    uint32_t magic, version;
    uint64_t n_tensors;
    ps_status st;
    if ((st = gguf_u32(r, &magic, "magic", err))) return st;
    if (magic != 0x46554747u) /* "GGUF" */
        return ps_errf(err, PS_EFORMAT, "gguf: magic 0x%08x, expected 0x46554747 (\"GGUF\")",
                       magic);
    if ((st = gguf_u32(r, &version, "version", err))) return st;
    if (version == 1)
        return ps_errf(err, PS_ENOTSUP, "gguf: version 1 is not supported (only 2 and 3)");
    if (version < 2 || version > 3)
        return ps_errf(err, PS_EFORMAT, "gguf: version %u, expected 2 or 3", version);
    if ((st = gguf_u64(r, &n_tensors, "tensor count", err))) return st;
    return gguf_u64(r, n_kv, "key/value count", err);
}

/* Fills the spec from the located arrays. */
static ps_status gguf_pieces(const gguf_reader *r, const gguf_vocab *v, tok_spec *s, ps_err *err) {
    ps_status st;
    if (!v->tokens.present) return ps_errf(err, PS_EFORMAT, "gguf: no tokenizer.ggml.tokens");
    if (v->tokens.type != GGUF_STRING)
        return ps_errf(err, PS_EFORMAT,
                       "gguf: tokenizer.ggml.tokens has element type %u, expected string (8)",
                       v->tokens.type);
    if (v->scores.present && (v->scores.type != GGUF_F32 || v->scores.n != v->tokens.n))
        return ps_errf(err, PS_EFORMAT,
                       "gguf: tokenizer.ggml.scores is %llu of type %u, expected %llu f32 (6)",
                       (unsigned long long)v->scores.n, v->scores.type,
                       (unsigned long long)v->tokens.n);
    if (v->types.present && (v->types.type != GGUF_I32 || v->types.n != v->tokens.n))
        return ps_errf(err, PS_EFORMAT,
                       "gguf: tokenizer.ggml.token_type is %llu of type %u, expected %llu i32 (5)",
                       (unsigned long long)v->types.n, v->types.type,
                       (unsigned long long)v->tokens.n);
    if (v->tokens.n > TOK_MAX_PIECES)
        return ps_errf(err, PS_ETOOLARGE, "gguf: %llu tokens, limit %d",
                       (unsigned long long)v->tokens.n, TOK_MAX_PIECES);
    gguf_reader tr = {v->tokens.data, r->end, r->base};
    for (uint64_t i = 0; i < v->tokens.n; i++) {
        const char *p;
        uint64_t len;
        float score = 0;
        int type = TOK_T_NORMAL;
        if ((st = gguf_str(&tr, &p, &len, "token", err))) return st; /* validated by the skip */
        if (v->scores.present) {
            uint32_t u = (uint32_t)gguf_le(v->scores.data + 4 * i, 4);
            memcpy(&score, &u, 4);
        }
        if (v->types.present) {
            int64_t ty = (int32_t)gguf_le(v->types.data + 4 * i, 4);
            if (ty < TOK_T_NORMAL || ty > TOK_T_BYTE)
                return ps_errf(err, PS_EFORMAT,
                               "gguf: token %llu has token_type %lld, expected 1..6",
                               (unsigned long long)i, (long long)ty);
            type = (int)ty;
        }
        if (type == TOK_T_BYTE) s->byte_fallback = true;
        if ((st = tok_spec_add(s, p, (size_t)len, score, type, err))) return st;
    }
    /* llama.cpp takes <unk> from unknown_token_id, not from the types: phi-3's
     * GGUF types <unk> as control and its [PAD] tokens as unknown. Other
     * unknown-typed tokens become control: never produced, decode to nothing. */
    if (v->unk_id < 0 || v->unk_id >= s->n)
        return ps_errf(err, PS_EFORMAT,
                       "gguf: tokenizer.ggml.unknown_token_id %lld outside the %d tokens",
                       (long long)v->unk_id, s->n);
    for (int i = 0; i < s->n; i++)
        if (s->pieces[i].type == TOK_T_UNKNOWN) s->pieces[i].type = TOK_T_CONTROL;
    s->pieces[v->unk_id].type = TOK_T_UNKNOWN;
    if (s->bos_id >= s->n || s->eos_id >= s->n)
        return ps_errf(err, PS_EFORMAT, "gguf: bos/eos token id %d/%d outside the %d tokens",
                       s->bos_id, s->eos_id, s->n);
    return PS_OK;
}

ps_status tok_gguf_parse(const uint8_t *buf, size_t n, tok_spec *s, ps_err *err) {
    gguf_reader r = {buf, buf + n, buf};
    gguf_vocab v;
    uint64_t n_kv;
    ps_status st;
    memset(&v, 0, sizeof v);
    v.unk_id = 0;
    /* llama.cpp's defaults for a "llama" vocab */
    s->model_type = TOK_MODEL_BPE;
    s->bos_id = 1;
    s->eos_id = 2;
    s->add_dummy_prefix = true;
    s->remove_extra_whitespaces = false;
    if ((st = gguf_header(&r, &n_kv, err))) return st;
    for (uint64_t i = 0; i < n_kv; i++) {
        const char *key;
        uint64_t klen;
        if ((st = gguf_str(&r, &key, &klen, "key", err))) return st;
        if ((st = gguf_kv(&r, key, (size_t)klen, &v, s, err))) return st;
    }
    if (!v.has_model) return ps_errf(err, PS_EFORMAT, "gguf: no tokenizer.ggml.model key");
    if (strcmp(v.model, "llama") != 0)
        return ps_errf(
            err, PS_ENOTSUP,
            "gguf: tokenizer.ggml.model '%s' is not supported (only 'llama', SentencePiece)",
            v.model);
    return gguf_pieces(&r, &v, s, err);
}

ps_status tok_load_gguf_buffer(const void *buf, size_t n, tokenizer **out, ps_err *err) {
    tok_spec s;
    *out = NULL;
    if (!buf && n > 0) return ps_errf(err, PS_EINVAL, "tok_load_gguf_buffer: NULL buffer");
    tok_spec_init(&s, "gguf");
    ps_status st = tok_gguf_parse(buf, n, &s, err);
    if (st) {
        tok_spec_free(&s);
        return st;
    }
    return tok_build(&s, out, err);
}

ps_status tok_load_gguf(const char *path, tokenizer **out, ps_err *err) {
    *out = NULL;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return ps_errf(err, PS_EIO, "tokenizer '%s': cannot open", path);
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        return ps_errf(err, PS_EIO, "tokenizer '%s': cannot stat", path);
    }
    if (sb.st_size <= 0) {
        close(fd);
        return ps_errf(err, PS_EFORMAT, "tokenizer '%s': empty file", path);
    }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return ps_errf(err, PS_EIO, "tokenizer '%s': mmap failed", path);
    ps_status st = tok_load_gguf_buffer(map, (size_t)sb.st_size, out, err);
    if (st) ps_err_wrap(err, "tokenizer '%s'", path);
    munmap(map, (size_t)sb.st_size);
    return st;
}
