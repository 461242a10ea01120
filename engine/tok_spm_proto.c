/* Reads a SentencePiece tokenizer.model: the protobuf ModelProto of
 * sentencepiece_model.proto, decoded by hand (no protobuf library). Only the
 * fields the encoder and decoder need are kept: pieces (piece, score, type),
 * trainer_spec (model_type, byte_fallback, treat_whitespace_as_suffix,
 * unk_surface, bos/eos piece names) and normalizer_spec (name,
 * precompiled_charsmap, add_dummy_prefix, remove_extra_whitespaces,
 * escape_whitespaces). Everything else is skipped by wire type.
 *
 * Every varint and length is bounds-checked against the enclosing message;
 * malformed input yields PS_EFORMAT naming the offset, the field and the rule.
 * Stricter than protobuf on purpose: a known field with the wrong wire type, a
 * piece type outside 1..6 and groups are errors rather than skipped. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

enum { PB_VARINT = 0, PB_I64 = 1, PB_LEN = 2, PB_I32 = 5 };

typedef struct {
    const uint8_t *p, *end;
    const uint8_t *base; /* start of the file, for offsets in messages */
    const char *what;
} pb_reader;

static size_t pb_off(const pb_reader *r) { return (size_t)(r->p - r->base); }

static ps_status pb_varint(pb_reader *r, uint64_t *v, ps_err *err) {
    uint64_t x = 0;
    size_t at = pb_off(r);
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->p >= r->end)
            return ps_errf(err, PS_EFORMAT, "%s: offset %zu: truncated varint", r->what, at);
        uint8_t b = *r->p++;
        if (shift == 63 && b > 1)
            return ps_errf(err, PS_EFORMAT, "%s: offset %zu: varint exceeds 64 bits", r->what, at);
        x |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return PS_OK;
        }
    }
    return ps_errf(err, PS_EFORMAT, "%s: offset %zu: varint longer than 10 bytes", r->what, at);
}

static ps_status pb_key(pb_reader *r, uint32_t *field, int *wire, ps_err *err) {
    uint64_t k;
    size_t at = pb_off(r);
    ps_status st = pb_varint(r, &k, err);
    if (st) return st;
    *field = (uint32_t)(k >> 3);
    *wire = (int)(k & 7);
    if ((k >> 3) == 0 || (k >> 3) > 0x1FFFFFFF)
        return ps_errf(err, PS_EFORMAT, "%s: offset %zu: field number %llu, expected 1..2^29-1",
                       r->what, at, (unsigned long long)(k >> 3));
    if (*wire != PB_VARINT && *wire != PB_I64 && *wire != PB_LEN && *wire != PB_I32)
        return ps_errf(
            err, PS_EFORMAT,
            "%s: offset %zu: field %u has wire type %d (groups and 6/7 are not valid here)",
            r->what, at, *field, *wire);
    return PS_OK;
}

/* A length-delimited payload: *sub reads exactly it. */
static ps_status pb_len(pb_reader *r, pb_reader *sub, ps_err *err) {
    uint64_t n;
    size_t at = pb_off(r);
    ps_status st = pb_varint(r, &n, err);
    if (st) return st;
    if (n > (uint64_t)(r->end - r->p))
        return ps_errf(err, PS_EFORMAT, "%s: offset %zu: length %llu exceeds the %zu bytes left",
                       r->what, at, (unsigned long long)n, (size_t)(r->end - r->p));
    *sub = (pb_reader){r->p, r->p + n, r->base, r->what};
    r->p += n;
    return PS_OK;
}

static ps_status pb_skip(pb_reader *r, int wire, ps_err *err) {
    uint64_t v;
    pb_reader sub = {0};
    size_t need = wire == PB_I64 ? 8 : 4;
    switch (wire) {
    case PB_VARINT: return pb_varint(r, &v, err);
    case PB_LEN: return pb_len(r, &sub, err);
    default:
        if ((size_t)(r->end - r->p) < need)
            return ps_errf(err, PS_EFORMAT, "%s: offset %zu: truncated %zu-byte field", r->what,
                           pb_off(r), need);
        r->p += need;
        return PS_OK;
    }
}

static ps_status pb_expect(const pb_reader *r, const char *msg, uint32_t field, const char *name,
                           int wire, int want, ps_err *err) {
    if (wire == want) return PS_OK;
    return ps_errf(err, PS_EFORMAT,
                   "%s: offset %zu: %s field %u (%s) has wire type %d, expected %d", r->what,
                   pb_off(r), msg, field, name, wire, want);
}

static ps_status pb_float(pb_reader *r, float *f, ps_err *err) {
    if (r->end - r->p < 4)
        return ps_errf(err, PS_EFORMAT, "%s: offset %zu: truncated float", r->what, pb_off(r));
    uint32_t u = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 |
                 (uint32_t)r->p[3] << 24;
    memcpy(f, &u, 4);
    r->p += 4;
    return PS_OK;
}

/* A string field into a fixed buffer (piece names, unk surface). */
static ps_status pb_string(pb_reader *r, const char *name, char *dst, size_t cap, ps_err *err) {
    pb_reader s = {0};
    ps_status st = pb_len(r, &s, err);
    if (st) return st;
    size_t n = (size_t)(s.end - s.p);
    if (n >= cap)
        return ps_errf(err, PS_ENOTSUP, "%s: %s is %zu bytes, limit %zu", r->what, name, n,
                       cap - 1);
    memcpy(dst, s.p, n);
    dst[n] = '\0';
    return PS_OK;
}

/* ModelProto.SentencePiece { string piece = 1; float score = 2; Type type = 3; } */
static ps_status tok_spm_piece(pb_reader *r, tok_spec *s, ps_err *err) {
    pb_reader piece = {NULL, NULL, r->base, r->what};
    float score = 0;
    uint64_t type = TOK_T_NORMAL;
    ps_status st;
    while (r->p < r->end) {
        uint32_t f;
        int w;
        if ((st = pb_key(r, &f, &w, err))) return st;
        if (f == 1) {
            if ((st = pb_expect(r, "piece", f, "piece", w, PB_LEN, err))) return st;
            if ((st = pb_len(r, &piece, err))) return st;
        } else if (f == 2) {
            if ((st = pb_expect(r, "piece", f, "score", w, PB_I32, err))) return st;
            if ((st = pb_float(r, &score, err))) return st;
        } else if (f == 3) {
            if ((st = pb_expect(r, "piece", f, "type", w, PB_VARINT, err))) return st;
            if ((st = pb_varint(r, &type, err))) return st;
            if (type < TOK_T_NORMAL || type > TOK_T_BYTE)
                return ps_errf(err, PS_EFORMAT, "%s: piece %d: type %llu, expected 1..6", r->what,
                               s->n, (unsigned long long)type);
        } else if ((st = pb_skip(r, w, err))) {
            return st;
        }
    }
    return tok_spec_add(s, (const char *)piece.p, piece.p ? (size_t)(piece.end - piece.p) : 0,
                        score, (int)type, err);
}

static ps_status tok_spm_trainer(pb_reader *r, tok_spec *s, ps_err *err) {
    ps_status st;
    while (r->p < r->end) {
        uint32_t f;
        int w;
        uint64_t v;
        if ((st = pb_key(r, &f, &w, err))) return st;
        switch (f) {
        case 3:  /* model_type */
        case 24: /* treat_whitespace_as_suffix */
        case 35: /* byte_fallback */
            if ((st = pb_expect(r, "trainer_spec", f, f == 3 ? "model_type" : "bool", w, PB_VARINT,
                                err)))
                return st;
            if ((st = pb_varint(r, &v, err))) return st;
            if (f == 3 && (v < TOK_MODEL_UNIGRAM || v > TOK_MODEL_CHAR))
                return ps_errf(err, PS_EFORMAT, "%s: trainer_spec.model_type %llu, expected 1..4",
                               r->what, (unsigned long long)v);
            if (f == 3) s->model_type = (int)v;
            if (f == 24) s->treat_ws_as_suffix = v != 0;
            if (f == 35) s->byte_fallback = v != 0;
            break;
        case 44: /* unk_surface */
        case 46: /* bos_piece */
        case 47: /* eos_piece */
            if ((st = pb_expect(r, "trainer_spec", f, "string", w, PB_LEN, err))) return st;
            st = f == 44   ? pb_string(r, "trainer_spec.unk_surface", s->unk_surface,
                                       sizeof s->unk_surface, err)
                 : f == 46 ? pb_string(r, "trainer_spec.bos_piece", s->bos_piece,
                                       sizeof s->bos_piece, err)
                           : pb_string(r, "trainer_spec.eos_piece", s->eos_piece,
                                       sizeof s->eos_piece, err);
            if (st) return st;
            break;
        default:
            if ((st = pb_skip(r, w, err))) return st;
        }
    }
    return PS_OK;
}

/* NormalizerSpec; the denormalizer only matters if it carries a charsmap. */
static ps_status tok_spm_normalizer(pb_reader *r, tok_spec *s, bool denorm, char *name,
                                    size_t *charsmap, ps_err *err) {
    const char *msg = denorm ? "denormalizer_spec" : "normalizer_spec";
    ps_status st;
    while (r->p < r->end) {
        uint32_t f;
        int w;
        uint64_t v;
        pb_reader sub = {0};
        if ((st = pb_key(r, &f, &w, err))) return st;
        if (f == 1 || f == 2) {
            if ((st = pb_expect(r, msg, f, f == 1 ? "name" : "precompiled_charsmap", w, PB_LEN,
                                err)))
                return st;
            if ((st = pb_len(r, &sub, err))) return st;
            size_t n = (size_t)(sub.end - sub.p), k = n < 31 ? n : 31;
            if (f == 2) *charsmap = n;
            if (f == 1) {
                memcpy(name, sub.p, k);
                name[k] = '\0';
            }
        } else if (!denorm && f >= 3 && f <= 5) {
            if ((st = pb_expect(r, msg, f, "bool", w, PB_VARINT, err))) return st;
            if ((st = pb_varint(r, &v, err))) return st;
            if (f == 3) s->add_dummy_prefix = v != 0;
            if (f == 4) s->remove_extra_whitespaces = v != 0;
            if (f == 5) s->escape_whitespaces = v != 0;
        } else if ((st = pb_skip(r, w, err))) {
            return st;
        }
    }
    return PS_OK;
}

ps_status tok_spm_parse(const uint8_t *buf, size_t n, tok_spec *s, ps_err *err) {
    pb_reader r = {buf, buf + n, buf, s->what};
    char norm_name[32] = "", denorm_name[32] = "";
    size_t charsmap = 0, decharsmap = 0;
    ps_status st;
    while (r.p < r.end) {
        uint32_t f;
        int w;
        pb_reader sub = {0};
        if ((st = pb_key(&r, &f, &w, err))) return st;
        if (f < 1 || f > 5 || f == 4) { /* 4: self_test_data */
            if ((st = pb_skip(&r, w, err))) return st;
            continue;
        }
        if ((st = pb_expect(&r, "ModelProto", f, "message", w, PB_LEN, err))) return st;
        if ((st = pb_len(&r, &sub, err))) return st;
        if (f == 1) st = tok_spm_piece(&sub, s, err);
        if (f == 2) st = tok_spm_trainer(&sub, s, err);
        if (f == 3) st = tok_spm_normalizer(&sub, s, false, norm_name, &charsmap, err);
        if (f == 5) st = tok_spm_normalizer(&sub, s, true, denorm_name, &decharsmap, err);
        if (st) return st;
    }
    if (s->n == 0)
        return ps_errf(err, PS_EFORMAT, "%s: no pieces (not a sentencepiece model?)", s->what);
    if (charsmap > 0)
        return ps_errf(err, PS_ENOTSUP,
                       "%s: normalizer '%s' uses a precompiled charsmap (%zu bytes); only identity "
                       "normalisation is supported",
                       s->what, norm_name, charsmap);
    if (decharsmap > 0)
        return ps_errf(
            err, PS_ENOTSUP,
            "%s: denormalizer '%s' uses a precompiled charsmap (%zu bytes); not supported", s->what,
            denorm_name, decharsmap);
    return PS_OK;
}

ps_status tok_load_spm_buffer(const void *buf, size_t n, tokenizer **out, ps_err *err) {
    tok_spec s;
    *out = NULL;
    if (!buf && n > 0) return ps_errf(err, PS_EINVAL, "tok_load_spm_buffer: NULL buffer");
    if (n > TOK_MAX_FILE_BYTES)
        return ps_errf(err, PS_ETOOLARGE, "tokenizer.model: %zu bytes, limit %zu", n,
                       TOK_MAX_FILE_BYTES);
    if (n >= 4 && memcmp(buf, "GGUF", 4) == 0)
        return ps_errf(
            err, PS_EFORMAT,
            "tokenizer.model: starts with \"GGUF\": a GGUF file, not a sentencepiece model");
    tok_spec_init(&s, "tokenizer.model");
    ps_status st = tok_spm_parse(buf, n, &s, err);
    if (st) {
        tok_spec_free(&s);
        return st;
    }
    return tok_build(&s, out, err);
}

ps_status tok_load_spm(const char *path, tokenizer **out, ps_err *err) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return ps_errf(err, PS_EIO, "tokenizer '%s': cannot open", path);
    uint8_t *buf = NULL;
    ps_status st;
    long size = -1;
    if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) {
        st = ps_errf(err, PS_EIO, "tokenizer '%s': cannot determine the size", path);
        goto fail;
    }
    if ((size_t)size > TOK_MAX_FILE_BYTES) {
        st = ps_errf(err, PS_ETOOLARGE, "tokenizer '%s': %ld bytes, limit %zu", path, size,
                     TOK_MAX_FILE_BYTES);
        goto fail;
    }
    buf = malloc((size_t)size + 1);
    if (!buf) {
        st = ps_errf(err, PS_ENOMEM, "tokenizer '%s': %ld bytes", path, size);
        goto fail;
    }
    if (fread(buf, 1, (size_t)size, f) != (size_t)size) {
        st = ps_errf(err, PS_EIO, "tokenizer '%s': short read", path);
        goto fail;
    }
    st = tok_load_spm_buffer(buf, (size_t)size, out, err);
    if (st) ps_err_wrap(err, "tokenizer '%s'", path);
fail:
    free(buf);
    fclose(f);
    return st;
}
