/* Fuzz target: the CLIP tokenizer (html.unescape, Python-style cleanup and
 * lower-casing, the pre-tokenising regex, BPE, truncation) on arbitrary bytes.
 * It needs no fixture: a small byte-level vocabulary with a few merges is
 * written to a temporary folder on the first call. Checks: invalid UTF-8 is
 * refused, otherwise input_ids start with sot, hold eot at eot_index, pad
 * with 0 and stay inside the vocabulary. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clip_tokenizer.h"
#include "unicode.h"

static clip_tokenizer *tok;

/* GPT-2 bytes_to_unicode as JSON-escaped text of one symbol. */
static void symbol(int b, char *out) {
    int n = 0;
    for (int c = 0; c < b; c++) {
        bool printable = (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || c >= 0xAE;
        n += !printable;
    }
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    unsigned cp = printable ? (unsigned)b : 256u + (unsigned)n;
    if (cp == '"' || cp == '\\') sprintf(out, "\\%c", (char)cp);
    else if (cp < 128) sprintf(out, "%c", (char)cp);
    else sprintf(out, "\\u%04x", cp);
}

static void load(void) {
    char dir[] = "/tmp/fuzz_clip_tok_XXXXXX", path[64];
    if (!mkdtemp(dir)) abort();
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    FILE *v = fopen(path, "w");
    int id = 0;
    char s[16];
    fprintf(v, "{");
    for (int b = 0; b < 256; b++) symbol(b, s), fprintf(v, "\"%s\": %d, ", s, id++);
    for (int b = 0; b < 256; b++) symbol(b, s), fprintf(v, "\"%s</w>\": %d, ", s, id++);
    static const char *merged[] = {"th", "the</w>", "an", "and</w>", "ph", "pho", "to</w>", "photo</w>",
                                   "do", "dog</w>"};
    for (int i = 0; i < 10; i++) fprintf(v, "\"%s\": %d, ", merged[i], id++);
    fprintf(v, "\"<|startoftext|>\": %d, \"<|endoftext|>\": %d}", id, id + 1);
    fclose(v);
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    FILE *m = fopen(path, "w");
    fprintf(m, "#version: 0.2\nt h\nth e</w>\na n\nan d</w>\np h\nph o\nt o</w>\npho to</w>\nd o\ndo g</w>\n");
    fclose(m);
    ps_err err;
    if (clip_tok_load(dir, &tok, &err) != PS_OK) {
        fprintf(stderr, "fuzz_clip_tokenizer: %s\n", err.msg);
        abort();
    }
    snprintf(path, sizeof path, "%s/vocab.json", dir), unlink(path);
    snprintf(path, sizeof path, "%s/merges.txt", dir), unlink(path);
    rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!tok) load();
    int32_t ids[77];
    int eot = -1;
    bool trunc;
    ps_err err;
    ps_status st = clip_tok_tokenize(tok, (const char *)data, size, 77, ids, &eot, &trunc, &err);
    uint32_t *cps;
    size_t n;
    ps_status utf8 = uni_utf8_decode((const char *)data, size, &cps, &n, NULL);
    if (utf8 == PS_OK) free(cps);
    if ((utf8 != PS_OK) != (st == PS_EINVAL)) abort();
    if (st != PS_OK) return 0;
    int V = clip_tok_vocab_size(tok);
    if (ids[0] != clip_tok_sot(tok) || eot < 1 || ids[eot] != clip_tok_eot(tok)) abort();
    for (int i = 0; i < 77; i++)
        if (ids[i] < 0 || ids[i] >= V) abort();
    int32_t *all;
    int k;
    if (clip_tok_encode(tok, (const char *)data, size, 0, &all, &k, &err) == PS_OK) {
        if (trunc != (k + 2 > 77)) abort();
        for (int i = 0; i < k && i < 75; i++)
            if (all[i] != ids[i + 1]) abort();
        if (!trunc && ids[k + 1] != clip_tok_eot(tok)) abort();
        for (int i = k + 2; !trunc && i < 77; i++)
            if (ids[i] != 0) abort();
        if (trunc && ids[76] != clip_tok_eot(tok)) abort();
        free(all);
    }
    return 0;
}
