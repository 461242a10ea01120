/* Fuzz target: base64 and data: URI decoding of arbitrary text; whatever
 * decodes must re-encode and decode to the same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *s = (const char *)data, *payload;
    size_t plen;
    char mt[32];
    ps_err err;
    if (b64_data_uri(s, size, &payload, &plen, mt, sizeof mt, &err) != PS_OK) return 0;
    if (!payload) payload = s, plen = size;
    unsigned char *d;
    size_t n;
    if (b64_decode(payload, plen, &d, &n, &err) != PS_OK) return 0;
    char *e = b64_encode(d, n);
    unsigned char *d2;
    size_t n2;
    if (!e || b64_decode(e, strlen(e), &d2, &n2, &err) != PS_OK || n2 != n || memcmp(d, d2, n)) abort();
    free(d2);
    free(e);
    free(d);
    return 0;
}
