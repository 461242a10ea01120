/* Fuzz target: encode arbitrary bytes, decode the ids back.
 *  - byte tokenizer: decode(encode(x)) == x for valid UTF-8 x;
 *  - a SentencePiece model when the fixtures are present ($PEFTSERVE_FIXTURES
 *    or $PS_FIXTURES_DEFAULT: llama2 and llama-tiny tokenizer.model):
 *    ids in range, and for valid UTF-8 x, decode(encode(x)) == x with '▁'
 *    read as ' ' (identity normalisation, dummy prefix stripped on decode);
 *  - every decoded chunk is valid UTF-8, whatever the input.
 * Any violation aborts (a crash is what the fuzzer reports). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer.h"
#include "unit/tok_testlib.h" /* tt_utf8_valid: the tests' independent validator */

#define MAX_INPUT 8192

static tokenizer *models[3];
static int n_models;

static void fz_fail(const char *what) {
    fprintf(stderr, "fuzz_tokenizer: %s\n", what);
    abort();
}

static void fz_init(void) {
    static bool done;
    if (done) return;
    done = true;
    ps_err err;
    if (tok_init_bytes(&models[n_models], &err) != PS_OK) fz_fail(err.msg);
    n_models++;
    const char *root = getenv("PEFTSERVE_FIXTURES");
    if (!root || !*root) root = getenv("PS_FIXTURES_DEFAULT");
    const char *rel[] = {"tokenizers/llama2/tokenizer.model", "llama-tiny/tokenizer.model"};
    for (int i = 0; root && i < 2; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", root, rel[i]);
        if (tok_load_spm(path, &models[n_models], &err) == PS_OK) n_models++;
    }
    if (n_models == 1) fprintf(stderr, "fuzz_tokenizer: no fixtures, byte tokenizer only\n");
}

/* Decodes ids one at a time into out; returns the length. */
static size_t fz_decode(const tokenizer *t, const int32_t *ids, int n, bool strip, char *out) {
    tok_decoder d;
    char chunk[2048];
    size_t len = 0;
    tok_decoder_init(&d, strip);
    for (int i = 0; i <= n; i++) {
        int k = i < n ? tok_decode_next(t, &d, ids[i], chunk, sizeof chunk)
                      : tok_decode_flush(t, &d, chunk, sizeof chunk);
        if (k < 0) fz_fail("decode returned -1 for an id from encode");
        if (!tt_utf8_valid((const unsigned char *)chunk, (size_t)k)) fz_fail("invalid UTF-8 chunk");
        memcpy(out + len, chunk, (size_t)k);
        len += (size_t)k;
    }
    return len;
}

/* x with every '▁' (E2 96 81) read as ' '. */
static size_t fz_expected(const uint8_t *x, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (i + 3 <= n && memcmp(x + i, "\xE2\x96\x81", 3) == 0) {
            out[o++] = ' ';
            i += 3;
        } else {
            out[o++] = (char)x[i++];
        }
    }
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_init();
    if (size > MAX_INPUT) size = MAX_INPUT;
    bool valid = tt_utf8_valid(data, size);
    /* decoded text: at most 3 bytes (U+FFFD) per input byte + the unk surface per id */
    char *out = malloc(size * 16 + 64), *want = malloc(size + 1);
    for (int m = 0; m < n_models; m++) {
        const tokenizer *t = models[m];
        int32_t *ids = NULL;
        int n = 0;
        ps_err err;
        if (tok_encode(t, (const char *)data, size, m > 0, &ids, &n, &err) != PS_OK)
            fz_fail(err.msg);
        for (int i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= tok_vocab_size(t)) fz_fail("id out of range");
        size_t len = fz_decode(t, ids, n, m > 0, out);
        if (valid) {
            size_t wl = m == 0 ? size : fz_expected(data, size, want);
            if (m == 0) memcpy(want, data, size);
            if (len != wl || memcmp(out, want, wl) != 0) fz_fail("round trip differs");
        }
        free(ids);
    }
    free(out);
    free(want);
    return 0;
}
