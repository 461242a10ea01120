/* Text cleanup and pre-tokenisation of the CLIP reference tokenizer
 * (simple_tokenizer.py: basic_clean, whitespace_clean, lower, self.pat), on
 * code points. Internal to engine/clip_tokenizer.c and its tests. */
#ifndef PS_ENGINE_CLIP_PRETOK_H
#define PS_ENGINE_CLIP_PRETOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

/* whitespace_clean(basic_clean(text)).lower() with ftfy = identity:
 * html.unescape twice, strip, \s+ -> ' ', strip, str.lower. *out malloc'd. */
ps_status clip_clean(const char *text, size_t len, uint32_t **out, size_t *n, ps_err *err);

enum { CLIP_PIECE_TEXT = 0, CLIP_PIECE_SOT, CLIP_PIECE_EOT };

/* The next match of the reference regex (IGNORECASE) at or after *pos in s:
 * sets [*start, *end) and *kind (SOT/EOT only for the exact special strings)
 * and moves *pos past it. Returns false when no match is left. */
bool clip_next_piece(const uint32_t *s, size_t n, size_t *pos, size_t *start, size_t *end,
                     int *kind);

#endif
