/* Fuzz target: tokenizer files from memory. Every input goes to both
 * tok_load_spm_buffer (protobuf ModelProto) and tok_load_gguf_buffer; a model
 * that loads is used to encode and decode a few strings. Errors are fine,
 * crashes, hangs and leaks are not; a loaded model must give ids in range. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"

static void fz_exercise(const tokenizer *t) {
    static const char *texts[] = {"",
                                  "Hello world",
                                  "  a  b\tc\n",
                                  "\xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x98\x80",
                                  "<s>ab<sep>c",
                                  "\xFF\xFE",
                                  "aaaaaaaaaaaaaaaaaaaa"};
    int cap = tok_max_token_bytes(t) + 1;
    char *buf = malloc((size_t)cap);
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        int32_t *ids = NULL;
        int n = 0;
        ps_err err;
        if (tok_encode(t, texts[i], strlen(texts[i]), tok_bos(t) >= 0, &ids, &n, &err) != PS_OK)
            continue;
        tok_decoder d;
        tok_decoder_init(&d, true);
        for (int k = 0; k < n; k++) {
            if (ids[k] < 0 || ids[k] >= tok_vocab_size(t)) abort();
            if (tok_decode_next(t, &d, ids[k], buf, cap) < 0) abort();
        }
        if (tok_decode_flush(t, &d, buf, cap) < 0) abort();
        free(ids);
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tokenizer *t = NULL;
    if (tok_load_spm_buffer(data, size, &t, NULL) == PS_OK) fz_exercise(t);
    tok_free(t);
    t = NULL;
    if (tok_load_gguf_buffer(data, size, &t, NULL) == PS_OK) fz_exercise(t);
    tok_free(t);
    return 0;
}
