/* CLIP's BPE tokenizer: OpenAI clip/simple_tokenizer.py + clip.tokenize(truncate=True).
 *
 * encode = html.unescape twice, strip, \s+ -> ' ', strip, str.lower(), the
 * reference regex (<|startoftext|>, <|endoftext|>, contractions, [\p{L}]+,
 * [\p{N}], [^\s\p{L}\p{N}]+), GPT-2 bytes_to_unicode, '</w>' on the last
 * symbol, BPE by lowest merge rank. ftfy.fix_text is the identity here (as in
 * the fixtures; ftfy is not available to the reference either), so text that
 * ftfy would repair (mojibake, curly quotes, NFC, ...) is encoded as written.
 * Hugging Face's CLIPTokenizer(Fast) differs on some inputs (no html.unescape,
 * NFC, CJK spacing): we follow OpenAI's, which the embeddings were trained with.
 *
 * Usage:
 *   clip_tokenizer *t; clip_tok_load(dir, &t, &err);   // vocab.json+merges.txt or tokenizer.json
 *   int32_t ids[77]; int eot; bool trunc;
 *   clip_tok_tokenize(t, "a photo of a dog", 16, 77, ids, &eot, &trunc, &err);
 *   clip_tok_free(t);
 * A loaded tokenizer is read-only: any number of threads may encode at once. */
#ifndef PS_ENGINE_CLIP_TOKENIZER_H
#define PS_ENGINE_CLIP_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef struct clip_tokenizer clip_tokenizer;

/* Longest run of one regex piece (a word with no space) BPE will take; the
 * reference's BPE is quadratic in it and a 77-token model never reads that far. */
#define CLIP_TOK_MAX_WORD_BYTES 16384

/* Loads dir/vocab.json + dir/merges.txt (HF CLIPTokenizer layout: merges
 * after a "#version" line), or else dir/tokenizer.json (model.vocab,
 * model.merges as "a b" strings or [a, b] pairs). Every merge's parts and
 * result must be in the vocabulary, as must <|startoftext|> and <|endoftext|>. */
ps_status clip_tok_load(const char *dir, clip_tokenizer **out, ps_err *err);
/* The same from explicit files (merges_path NULL: vocab_path is a tokenizer.json). */
ps_status clip_tok_load_files(const char *vocab_path, const char *merges_path,
                              clip_tokenizer **out, ps_err *err);
void clip_tok_free(clip_tokenizer *t); /* accepts NULL */

int clip_tok_vocab_size(const clip_tokenizer *t);
int32_t clip_tok_sot(const clip_tokenizer *t);
int32_t clip_tok_eot(const clip_tokenizer *t);
/* The vocabulary string of an id (byte-level symbols, '</w>' kept), NULL if out of range. */
const char *clip_tok_piece(const clip_tokenizer *t, int32_t id);

/* SimpleTokenizer.encode: BPE ids without sot/eot. text is UTF-8 of len bytes
 * (NULs allowed). max_ids > 0 stops after the word that reaches max_ids ids
 * (later words cannot change the first max_ids). *ids is malloc'd.
 * Errors: EINVAL (invalid UTF-8), ETOOLARGE (a word over CLIP_TOK_MAX_WORD_BYTES). */
ps_status clip_tok_encode(const clip_tokenizer *t, const char *text, size_t len, int max_ids,
                          int32_t **ids, int *n, ps_err *err);

/* clip.tokenize(text, context_length=ctx, truncate=True): [sot] + ids + [eot],
 * cut to ctx with the last set to eot, zero-padded to ctx. eot_index =
 * argmax = position of the first eot; *truncated tells whether it was cut.
 * Either of eot_index / truncated may be NULL. */
ps_status clip_tok_tokenize(const clip_tokenizer *t, const char *text, size_t len, int ctx,
                            int32_t *input_ids, int *eot_index, bool *truncated, ps_err *err);

#endif
