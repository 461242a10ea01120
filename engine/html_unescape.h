/* Python's html.unescape (HTML5 character references), on code points.
 *
 * Mirrors CPython Lib/html/__init__.py exactly: the reference regex
 * &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?), numeric references
 * through _invalid_charrefs / _invalid_codepoints, named ones through the
 * HTML5 table with the longest-prefix rule for names written without ';'
 * ("&notit;" -> "¬it;"). One pass, like the original: the CLIP reference
 * calls it twice. Tables: engine/html_entities.c (generated). */
#ifndef PS_ENGINE_HTML_UNESCAPE_H
#define PS_ENGINE_HTML_UNESCAPE_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

/* out receives at most n code points (the result is never longer than the
 * input); returns the number written. in and out must not overlap. */
size_t html_unescape(const uint32_t *in, size_t n, uint32_t *out);

typedef struct {
    const char *name;  /* without '&', with the ';' if the reference has it */
    const char *value; /* UTF-8, 1 or 2 code points */
} html_entity;

extern const html_entity html_entities[];
extern const int html_entities_n;
extern const uint32_t html_invalid_charrefs[][2];
extern const int html_invalid_charrefs_n;
extern const uint32_t html_invalid_codepoints[];
extern const int html_invalid_codepoints_n;

#endif
