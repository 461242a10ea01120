/* Base64 (RFC 4648 section 4, standard alphabet) for image uploads in JSON
 * bodies and for OpenAI's encoding_format "base64" embeddings, plus the
 * data: URI wrapper (RFC 2397) clients put around images.
 *
 * Decoding is strict about the alphabet and padding (a '=' only at the end,
 * at most two, and the length must work out), tolerant of ASCII whitespace
 * (line-wrapped base64 from `base64` or MIME tools) and of missing padding
 * (the URL-safe habit of dropping it). */
#ifndef PS_SERVER_BASE64_H
#define PS_SERVER_BASE64_H

#include <stddef.h>

#include "base/status.h"

/* Decodes len characters; *out is malloc'd (*n bytes). Errors: PS_EINVAL
 * naming the offset and the character. */
ps_status b64_decode(const char *s, size_t len, unsigned char **out, size_t *n, ps_err *err);

/* Encodes n bytes; returns a malloc'd NUL-terminated string, NULL without memory. */
char *b64_encode(const void *data, size_t n);

/* "data:[<mediatype>][;base64],<data>" -> the payload after the comma (not
 * decoded) and its media type (e.g. "image/png", may be empty). Returns
 * PS_EINVAL unless s is a base64 data: URI. Other strings are not touched
 * (*payload = NULL, PS_OK) so callers can take them as bare base64. */
ps_status b64_data_uri(const char *s, size_t len, const char **payload, size_t *payload_len,
                       char *media_type, size_t media_cap, ps_err *err);

#endif
