/* Fuzz target for the multipart/form-data parser: the first line of the
 * input is the Content-Type, the rest the body. Any bytes must give a form
 * or an error with a kind and a message, never a crash or an overread; every
 * part returned must lie inside the body. The body is copied to an
 * exact-size allocation so ASan sees any read past it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "multipart.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nl = memchr(data, '\n', size);
    size_t ct_len = nl ? (size_t)(nl - data) : size;
    char *ct = malloc(ct_len + 1);
    size_t blen = nl ? size - ct_len - 1 : 0;
    char *body = malloc(blen ? blen : 1);
    if (!ct || !body) abort();
    memcpy(ct, data, ct_len);
    ct[ct_len] = 0;
    if (blen) memcpy(body, nl + 1, blen);
    char b[MULTIPART_BOUNDARY_MAX + 1];
    api_error e = {0};
    multipart_form *f = malloc(sizeof *f);
    if (!multipart_boundary(ct, b, &e)) {
        if (e.kind == SRV_ERR_NONE || !e.msg[0]) abort();
    } else if (!multipart_parse(body, blen, b, f, &e)) {
        if (e.kind == SRV_ERR_NONE || !e.msg[0]) abort();
    } else {
        for (int i = 0; i < f->n; i++) {
            const multipart_part *p = &f->parts[i];
            if (p->data < body || p->data + p->len > body + blen || !p->name[0]) abort();
        }
    }
    free(f);
    free(ct);
    free(body);
    return 0;
}
