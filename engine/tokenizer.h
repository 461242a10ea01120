/* Tokenizers: SentencePiece BPE models (tokenizer.model or a llama.cpp "llama"
 * vocab GGUF) and a demo byte tokenizer, with a streaming decoder.
 *
 * Encoding reproduces sentencepiece 0.1.97 `sp.encode(text)` exactly for BPE
 * models with identity normalisation (LLaMA, LLaMA-2, Mistral, phi-3 style):
 * dummy-prefix '▁', spaces -> '▁', score-ordered merges, byte fallback. Models
 * that need a precompiled normaliser (nmt_nfkc ...) or are unigram/word/char
 * are refused with PS_ENOTSUP at load time, never encoded approximately.
 *
 * Usage:
 *   tokenizer *t; if (tok_load_spm("tokenizer.model", &t, &err)) ...;
 *   int32_t *ids; int n; tok_encode(t, text, strlen(text), true, &ids, &n, &err); free(ids);
 *   tok_decoder d; tok_decoder_init(&d, false);
 *   for each id: k = tok_decode_next(t, &d, id, buf, sizeof buf);   // k complete UTF-8 bytes
 *   k = tok_decode_flush(t, &d, buf, sizeof buf);
 *   tok_free(t);
 *
 * Threads: a loaded tokenizer is read-only; any number of threads may encode
 * and decode with it at once (each with its own tok_decoder).
 */
#ifndef PS_TOKENIZER_H
#define PS_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef struct tokenizer tokenizer;

/* SentencePiece tokenizer.model (protobuf ModelProto). Errors: EIO (open/read),
 * EFORMAT (malformed protobuf or an inconsistent vocabulary), ENOTSUP (a model
 * type or normaliser this code does not implement), ETOOLARGE (file > 256 MiB). */
ps_status tok_load_spm(const char *path, tokenizer **out, ps_err *err);
/* Same from memory; buf is not kept (the pieces are copied). */
ps_status tok_load_spm_buffer(const void *buf, size_t n, tokenizer **out, ps_err *err);

/* llama.cpp GGUF (v2/v3): reads tokenizer.ggml.* metadata only, so a full
 * model file works too (it is mapped, never read whole). Only
 * tokenizer.ggml.model == "llama" (SentencePiece) is supported; other vocab
 * types (gpt2, bert, ...) return PS_ENOTSUP naming the type. */
ps_status tok_load_gguf(const char *path, tokenizer **out, ps_err *err);
ps_status tok_load_gguf_buffer(const void *buf, size_t n, tokenizer **out, ps_err *err);

/* Demo model: <unk>=0 <s>=1 </s>=2, then <0x00>..<0xFF> = 3..258; encoding is
 * the UTF-8 bytes of the text (no dummy prefix, no merges). */
ps_status tok_init_bytes(tokenizer **out, ps_err *err);

void tok_free(tokenizer *t); /* accepts NULL */

int tok_vocab_size(const tokenizer *t);
int32_t tok_bos(const tokenizer *t); /* -1 when the model has none */
int32_t tok_eos(const tokenizer *t); /* -1 when the model has none */

/* Encodes `len` bytes of text (NUL bytes and invalid UTF-8 allowed: invalid
 * bytes become U+FFFD as in sentencepiece). add_bos prepends tok_bos(t)
 * (EINVAL if the model has no BOS). No EOS is appended. *ids is malloc'd (the
 * caller frees it; NULL when *n == 0). Errors: EINVAL, ENOMEM, ETOOLARGE
 * (text over 256 MiB). */
ps_status tok_encode(const tokenizer *t, const char *text, size_t len, bool add_bos, int32_t **ids,
                     int *n, ps_err *err);

/* Raw piece as stored in the model (with '▁', "<0x0A>", "<s>"), NUL-terminated;
 * NULL if id is out of range. Valid as long as t. */
const char *tok_piece(const tokenizer *t, int32_t id);

/* Streaming decode: emits only complete UTF-8 characters, byte-fallback pieces
 * reassembled; '▁' -> ' '; control pieces (BOS/EOS) emit nothing; the unknown
 * piece emits the model's unk surface (" ⁇ "). Bytes that cannot form a valid
 * character become U+FFFD (one per byte, as sentencepiece's decoder does). */
typedef struct {
    unsigned char pending[8]; /* bytes of an incomplete UTF-8 character */
    int n_pending;
    bool at_start; /* nothing emitted yet and no leading space dropped */
    bool strip_leading_space;
} tok_decoder;

/* strip_leading_space true: drop the dummy-prefix space of the first piece that
 * is not a control piece (sentencepiece's decode, e.g. decoding a whole
 * answer); false: keep it (continuations of a prompt). */
void tok_decoder_init(tok_decoder *d, bool strip_leading_space);

/* Decodes one id; writes the released bytes to out and returns their number
 * (0 is normal: control piece or a partial character). A NUL is written after
 * them when room remains. Returns -1, leaving the decoder unchanged, when id is
 * out of range or cap < the bytes this id releases; cap >= tok_max_token_bytes(t)
 * always suffices. */
int tok_decode_next(const tokenizer *t, tok_decoder *d, int32_t id, char *out, int cap);
/* Releases pending bytes at the end of a stream (each leftover byte -> U+FFFD).
 * Returns the bytes written, or -1 when cap is too small (cap >= 16 suffices). */
int tok_decode_flush(const tokenizer *t, tok_decoder *d, char *out, int cap);
/* Most bytes one tok_decode_next can write (excluding the NUL). */
int tok_max_token_bytes(const tokenizer *t);

#endif
