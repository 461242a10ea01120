/* Contract header for the tokenizers (owner: helper "tok"). This copy holds
 * exactly the declarations of COMMON.md so the engine runtime compiles before
 * the tokenizer lands; the real header replaces it on merge. */
#ifndef PS_TOKENIZER_H
#define PS_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef struct tokenizer tokenizer;
ps_status tok_load_spm(const char *path, tokenizer **out, ps_err *err);
ps_status tok_load_gguf(const char *path, tokenizer **out, ps_err *err);
ps_status tok_init_bytes(tokenizer **out, ps_err *err);
void tok_free(tokenizer *t);
int tok_vocab_size(const tokenizer *t);
int32_t tok_bos(const tokenizer *t);
int32_t tok_eos(const tokenizer *t);
ps_status tok_encode(const tokenizer *t, const char *text, size_t len, bool add_bos,
                     int32_t **ids, int *n, ps_err *err);
const char *tok_piece(const tokenizer *t, int32_t id);
typedef struct {
    unsigned char pending[8];
    int n_pending;
    bool at_start;
    bool strip_leading_space;
} tok_decoder;
void tok_decoder_init(tok_decoder *d, bool strip_leading_space);
int tok_decode_next(const tokenizer *t, tok_decoder *d, int32_t id, char *out, int cap);
int tok_decode_flush(const tokenizer *t, tok_decoder *d, char *out, int cap);

#endif
