/* Fuzz target: multipart/form-data parsing. The first line of the input is
 * the Content-Type header value, the rest the body. Any input must parse or
 * fail cleanly; parts found must lie inside the body. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "multipart.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nl = memchr(data, '\n', size);
    size_t ct_len = nl ? (size_t)(nl - data) : size;
    char *ct = malloc(ct_len + 1);
    memcpy(ct, data, ct_len);
    ct[ct_len] = 0;
    const uint8_t *body = nl ? nl + 1 : data + size;
    size_t blen = size - (size_t)(body - data);
    /* a private copy so out-of-bounds reads are caught by the sanitizers */
    uint8_t *copy = malloc(blen ? blen : 1);
    memcpy(copy, body, blen);
    mp_form f;
    ps_err err;
    if (mp_parse(ct, copy, blen, 8, &f, &err) == PS_OK) {
        for (int i = 0; i < f.n; i++)
            if (f.parts[i].data < copy || f.parts[i].data + f.parts[i].len > copy + blen) abort();
        mp_find(&f, "image");
        mp_free(&f);
    }
    free(copy);
    free(ct);
    return 0;
}
