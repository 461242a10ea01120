/* Shared by the engine/tok_*.c files only: the vocabulary a file format yields
 * (tok_spec), the loaded tokenizer, the piece hash and the UTF-8 rules.
 *
 * Piece types and their roles mirror sentencepiece's ModelInterface
 * (model_interface.cc InitializePieces): NORMAL, USER_DEFINED and UNUSED pieces
 * may be produced by merges; CONTROL, UNKNOWN and BYTE pieces are "reserved"
 * and only found by exact lookup. */
#ifndef PS_TOK_INTERNAL_H
#define PS_TOK_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* sentencepiece ModelProto.SentencePiece.Type == llama.cpp token_type values */
enum {
    TOK_T_NORMAL = 1,
    TOK_T_UNKNOWN = 2,
    TOK_T_CONTROL = 3,
    TOK_T_USER_DEFINED = 4,
    TOK_T_UNUSED = 5,
    TOK_T_BYTE = 6,
};

/* sentencepiece TrainerSpec.ModelType; TOK_MODEL_BYTES is our demo model */
enum {
    TOK_MODEL_UNIGRAM = 1,
    TOK_MODEL_BPE = 2,
    TOK_MODEL_WORD = 3,
    TOK_MODEL_CHAR = 4,
    TOK_MODEL_BYTES = 100
};

/* Limits well above any real vocabulary (LLaMA 32000 pieces of <= 16 chars);
 * they bound memory and keep every offset in 32 bits. */
#define TOK_MAX_PIECES (1 << 22)
#define TOK_MAX_PIECE_BYTES 1024
#define TOK_MAX_FILE_BYTES ((size_t)256 << 20)
#define TOK_MAX_TEXT_BYTES ((size_t)256 << 20)
#define TOK_SURFACE_MAX 64

typedef struct {
    uint32_t off, len; /* into tok_spec.blob */
    float score;
    uint8_t type;
} tok_entry;

/* What a parser extracts from a file. Owning; tok_spec_free accepts zeroed. */
typedef struct {
    char *blob; /* piece bytes, each followed by a NUL */
    size_t blob_len, blob_cap;
    tok_entry *pieces;
    int n, cap;
    int model_type; /* TOK_MODEL_* */
    bool byte_fallback;
    bool add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces;
    bool treat_ws_as_suffix;
    /* SPM: BOS/EOS found by piece name (sentencepiece bos_id()); GGUF: by id.
     * bos_id/eos_id == -2 means "resolve bos_piece/eos_piece". */
    int32_t bos_id, eos_id;
    char bos_piece[TOK_SURFACE_MAX], eos_piece[TOK_SURFACE_MAX];
    char unk_surface[TOK_SURFACE_MAX];
    const char *what; /* file kind for messages: "tokenizer.model", "gguf" */
} tok_spec;

void tok_spec_init(tok_spec *s, const char *what); /* sentencepiece proto defaults */
void tok_spec_free(tok_spec *s);
/* Appends a piece (copied). EFORMAT for an empty piece, ETOOLARGE over the limits. */
ps_status tok_spec_add(tok_spec *s, const char *piece, size_t len, float score, int type,
                       ps_err *err);

/* Open-addressing table of piece ids keyed by piece bytes. */
typedef struct {
    int32_t *slot; /* -1 = empty */
    uint32_t mask;
} tok_hash;

ps_status tok_hash_init(tok_hash *h, int n_keys, ps_err *err);
void tok_hash_free(tok_hash *h);
/* Id of the piece equal to key[0..len), or -1. */
int32_t tok_hash_find(const tok_hash *h, const tok_spec *s, const char *key, size_t len);
/* Inserts id (keyed by its own piece); returns the id already holding that
 * piece (nothing inserted) or -1. */
int32_t tok_hash_insert(tok_hash *h, const tok_spec *s, int32_t id);
uint64_t tok_hash_bytes(const char *key, size_t len);

struct tokenizer {
    tok_spec spec;     /* pieces + options */
    tok_hash normal;   /* NORMAL / USER_DEFINED / UNUSED: what merges can make */
    tok_hash reserved; /* CONTROL / UNKNOWN / BYTE: exact lookup, checked first */
    tok_hash user;     /* USER_DEFINED: the prefix matcher (may be empty) */
    int user_max_len;
    uint32_t user_first[8]; /* bitmap of first bytes of user-defined pieces */
    int32_t byte_id[256]; /* id of <0xXX>, -1 when absent */
    int32_t unk_id, bos_id, eos_id;
    int max_piece_len;
};

/* Checks the vocabulary like sentencepiece's InitializePieces and builds the
 * tables. Takes ownership of *spec (zeroed on return, success or not). */
ps_status tok_build(tok_spec *spec, tokenizer **out, ps_err *err);

/* sentencepiece string_util::DecodeUTF8: returns the code point, or -1 for an
 * invalid sequence; *mblen = bytes consumed (1 when invalid). */
int32_t tok_utf8_decode(const unsigned char *s, size_t n, size_t *mblen);
/* string_util::OneCharLen: length implied by a lead byte (1..4), unchecked. */
static inline int tok_utf8_len(unsigned char lead) {
    static const unsigned char len_of_high_nibble[16] = {1, 1, 1, 1, 1, 1, 1, 1,
                                                         1, 1, 1, 1, 2, 2, 3, 4};
    return len_of_high_nibble[lead >> 4];
}
/* Longest user-defined piece that prefixes s[0..n), or 0. */
size_t tok_user_match(const tokenizer *t, const char *s, size_t n);
/* Normalises text as sentencepiece's Normalizer::Normalize does for an identity
 * model; *out malloc'd (NULL when *n_out == 0). */
ps_status tok_normalize(const tokenizer *t, const char *text, size_t len, char **out, size_t *n_out,
                        ps_err *err);
/* BPE over normalised text; appends ids to ids[*n] (capacity >= len). */
ps_status tok_bpe_encode(const tokenizer *t, const char *norm, size_t len, int32_t *ids, int *n,
                         ps_err *err);

/* Parsers: fill a spec initialised with tok_spec_init. */
ps_status tok_spm_parse(const uint8_t *buf, size_t n, tok_spec *s, ps_err *err);
ps_status tok_gguf_parse(const uint8_t *buf, size_t n, tok_spec *s, ps_err *err);

#endif
