/* Tokenizer exactness against the reference fixtures:
 *  - tokenizers/llama2/cases.jsonl: sentencepiece 0.1.97 ids (no BOS) for 212
 *    strings with Meta's LLaMA-2 tokenizer.model; also the pieces, and the
 *    streaming decoder (one id at a time) against sp.decode's `decoded`;
 *  - tokenizers/gguf/ggml-vocab-llama-spm.gguf + .inp/.out (HF ids, no BOS),
 *    and phi-3 (also a "llama" SentencePiece vocab);
 *  - the other GGUF vocab types must be refused with PS_ENOTSUP;
 *  - llama-tiny/ref/cases.json: input_ids (with BOS) of every prompt, and the
 *    greedy continuations' text = sp.decode(greedy ids);
 *  - encode time for 4 KB and 100 KB texts (reported; a loose bound catches
 *    quadratic behaviour).
 * Every set must be N/N exact; the first mismatches are printed with both id lists. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "testutil.h"
#include "tok_testlib.h"
#include "tokenizer.h"

#define MAX_SHOWN 5

typedef struct {
    const char *name;
    int total, exact, shown;
} tally;

static void tally_case(tally *t, const char *what, const char *text, const int32_t *got, int ngot,
                       const int32_t *want, int nwant) {
    t->total++;
    if (tt_ids_equal(got, ngot, want, nwant)) {
        t->exact++;
        return;
    }
    tu_failures++;
    if (t->shown++ >= MAX_SHOWN) return;
    fprintf(stderr, "MISMATCH %s %s: text '%.80s'\n", t->name, what, text);
    tt_print_ids("got ", got, ngot);
    tt_print_ids("want", want, nwant);
}

static void tally_report(const tally *t) {
    printf("%-28s %d/%d exact\n", t->name, t->exact, t->total);
}

static int32_t *json_ids(json_t *arr, int *n) {
    *n = (int)json_array_size(arr);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(*n + 1));
    for (int i = 0; i < *n; i++)
        ids[i] = (int32_t)json_integer_value(json_array_get(arr, (size_t)i));
    return ids;
}

/* Streams ids through the decoder; returns the concatenation (malloc'd) and
 * counts chunks that are not valid UTF-8. */
static char *decode_stream(const tokenizer *t, const int32_t *ids, int n, bool strip,
                           size_t *out_len, int *bad_chunks) {
    int cap = tok_max_token_bytes(t) + 1;
    char *chunk = malloc((size_t)cap), *all = malloc((size_t)(n + 1) * (size_t)cap + 16);
    size_t len = 0;
    tok_decoder d;
    tok_decoder_init(&d, strip);
    for (int i = 0; i <= n; i++) {
        int k = i < n ? tok_decode_next(t, &d, ids[i], chunk, cap)
                      : tok_decode_flush(t, &d, chunk, cap);
        if (k < 0) {
            (*bad_chunks)++;
            continue;
        }
        if (!tt_utf8_valid((const unsigned char *)chunk, (size_t)k)) (*bad_chunks)++;
        memcpy(all + len, chunk, (size_t)k);
        len += (size_t)k;
    }
    all[len] = 0;
    free(chunk);
    *out_len = len;
    return all;
}

static void check_decode(tally *t, const tokenizer *tk, const char *what, const int32_t *ids, int n,
                         const char *want, size_t want_len) {
    int bad = 0;
    size_t got_len;
    char *got = decode_stream(tk, ids, n, true, &got_len, &bad);
    t->total++;
    if (bad == 0 && got_len == want_len && memcmp(got, want, want_len) == 0) {
        t->exact++;
    } else {
        tu_failures++;
        if (t->shown++ < MAX_SHOWN)
            fprintf(stderr, "MISMATCH %s %s: decoded '%s' want '%.*s' (%d invalid chunks)\n",
                    t->name, what, got, (int)want_len, want, bad);
    }
    free(got);
}

static void test_llama2(const tokenizer *tk) {
    size_t n;
    char *buf = tu_read_file(tu_path("tokenizers/llama2/cases.jsonl"), &n);
    TU_CHECK(buf != NULL, "cannot read llama2/cases.jsonl");
    if (!buf) return;
    tally ids_t = {"llama2 cases: ids"}, pieces_t = {"llama2 cases: pieces"},
          dec_t = {"llama2 cases: stream decode"};
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t jerr;
        json_t *c = json_loads(line, JSON_ALLOW_NUL, &jerr);
        TU_CHECK(c != NULL, "cases.jsonl: %s", jerr.text);
        if (!c) continue;
        json_t *jt = json_object_get(c, "text"), *jd = json_object_get(c, "decoded");
        const char *text = json_string_value(jt);
        int nwant, ngot = 0;
        int32_t *want = json_ids(json_object_get(c, "ids"), &nwant), *got = NULL;
        ps_err err = {0};
        ps_status st = tok_encode(tk, text, json_string_length(jt), false, &got, &ngot, &err);
        TU_CHECK(st == PS_OK, "encode: %s", err.msg);
        tally_case(&ids_t, json_string_value(json_object_get(c, "category")), text, got, ngot, want,
                   nwant);
        /* pieces: every id's stored piece equals the reference piece string */
        json_t *jp = json_object_get(c, "pieces");
        bool same = (int)json_array_size(jp) == nwant;
        for (int i = 0; same && i < nwant; i++) {
            const char *p = tok_piece(tk, want[i]);
            same = p && strcmp(p, json_string_value(json_array_get(jp, (size_t)i))) == 0;
        }
        pieces_t.total++;
        pieces_t.exact += same;
        if (!same) {
            tu_failures++;
            fprintf(stderr, "MISMATCH pieces for '%.80s'\n", text);
        }
        check_decode(&dec_t, tk, "decode", want, nwant, json_string_value(jd),
                     json_string_length(jd));
        free(want);
        free(got);
        json_decref(c);
    }
    tally_report(&ids_t);
    tally_report(&pieces_t);
    tally_report(&dec_t);
    TU_CHECK(ids_t.total == 212, "expected 212 llama2 cases, read %d", ids_t.total);
    free(buf);
}

/* llama.cpp tests/test-tokenizer-0.cpp read_tests: .inp split on the separator, .out one line each.
 */
static void test_gguf_file(const char *name, bool expect_ok) {
    char rel[200], inp_rel[256], out_rel[256];
    snprintf(rel, sizeof rel, "tokenizers/gguf/ggml-vocab-%s.gguf", name);
    snprintf(inp_rel, sizeof inp_rel, "%s.inp", rel);
    snprintf(out_rel, sizeof out_rel, "%s.out", rel);
    tokenizer *tk = NULL;
    ps_err err = {0};
    ps_status st = tok_load_gguf(tu_path(rel), &tk, &err);
    if (!expect_ok) {
        TU_CHECK(st == PS_ENOTSUP, "%s: expected ENOTSUP, got %s (%s)", name, ps_status_name(st),
                 err.msg);
        printf("%-28s refused: %s\n", name, err.msg);
        tok_free(tk);
        return;
    }
    TU_CHECK(st == PS_OK, "%s: %s", name, err.msg);
    if (st) return;
    size_t ni, no;
    char *inp = tu_read_file(tu_path(inp_rel), &ni), *out = tu_read_file(tu_path(out_rel), &no);
    TU_CHECK(inp && out, "%s: cannot read .inp/.out", name);
    const char *sep = "\n__ggml_vocab_test__\n";
    char label[64];
    snprintf(label, sizeof label, "gguf %s", name);
    tally t = {label};
    char *ip = inp, *op = out;
    while (inp && out && *ip) {
        char *end = strstr(ip, sep);
        if (!end) break;
        char *eol = strchr(op, '\n');
        if (!eol) break;
        *eol = 0;
        int32_t want[512];
        int nwant = 0;
        for (char *q = op; *q && nwant < 512;) {
            char *e;
            long v = strtol(q, &e, 10);
            if (e == q) break;
            want[nwant++] = (int32_t)v;
            q = e;
        }
        int32_t *got = NULL;
        int ngot = 0;
        st = tok_encode(tk, ip, (size_t)(end - ip), false, &got, &ngot, &err);
        TU_CHECK(st == PS_OK, "%s encode: %s", name, err.msg);
        *end = 0;
        tally_case(&t, "case", ip, got, ngot, want, nwant);
        free(got);
        ip = end + strlen(sep);
        op = eol + 1;
    }
    tally_report(&t);
    TU_CHECK(t.total == 46, "%s: expected 46 tests, read %d", name, t.total);
    free(inp);
    free(out);
    tok_free(tk);
}

/* The GGUF holds the same vocabulary as llama2/tokenizer.model. */
static void test_gguf_same_vocab(const tokenizer *spm) {
    tokenizer *g = NULL;
    ps_err err = {0};
    if (tok_load_gguf(tu_path("tokenizers/gguf/ggml-vocab-llama-spm.gguf"), &g, &err)) return;
    int diff = tok_vocab_size(g) != tok_vocab_size(spm);
    for (int i = 0; !diff && i < tok_vocab_size(g); i++)
        diff += strcmp(tok_piece(g, i), tok_piece(spm, i)) != 0;
    TU_CHECK(diff == 0, "llama-spm gguf pieces differ from llama2 tokenizer.model");
    TU_CHECK(tok_bos(g) == 1 && tok_eos(g) == 2, "gguf bos/eos %d/%d", tok_bos(g), tok_eos(g));
    tok_free(g);
}

static void test_llama_tiny(void) {
    tokenizer *tk = NULL;
    ps_err err = {0};
    ps_status st = tok_load_spm(tu_path("llama-tiny/tokenizer.model"), &tk, &err);
    TU_CHECK(st == PS_OK, "llama-tiny tokenizer: %s", err.msg);
    if (st) return;
    TU_CHECK(tok_vocab_size(tk) == 2000 && tok_bos(tk) == 1 && tok_eos(tk) == 2,
             "llama-tiny vocab %d bos %d eos %d", tok_vocab_size(tk), tok_bos(tk), tok_eos(tk));
    json_error_t jerr;
    json_t *root = json_load_file(tu_path("llama-tiny/ref/cases.json"), 0, &jerr);
    TU_CHECK(root != NULL, "cases.json: %s", jerr.text);
    tally ids_t = {"llama-tiny prompts (BOS)"}, dec_t = {"llama-tiny greedy decode"};
    json_t *prompts = json_object_get(root, "prompts"), *p;
    size_t i;
    json_array_foreach(prompts, i, p) {
        json_t *jt = json_object_get(p, "text");
        int nwant, ngot = 0;
        int32_t *want = json_ids(json_object_get(p, "input_ids"), &nwant), *got = NULL;
        st = tok_encode(tk, json_string_value(jt), json_string_length(jt), true, &got, &ngot, &err);
        TU_CHECK(st == PS_OK, "encode: %s", err.msg);
        tally_case(&ids_t, json_string_value(json_object_get(p, "id")), json_string_value(jt), got,
                   ngot, want, nwant);
        free(want);
        free(got);
        const char *kinds[] = {"greedy_fp", "greedy_nf4"};
        for (int k = 0; k < 2; k++) {
            json_t *g = json_object_get(p, kinds[k]), *gt = json_object_get(g, "text");
            if (!g || !gt) continue;
            int ng;
            int32_t *gids = json_ids(json_object_get(g, "ids"), &ng);
            check_decode(&dec_t, tk, kinds[k], gids, ng, json_string_value(gt),
                         json_string_length(gt));
            free(gids);
        }
    }
    /* adapters' greedy continuations (prompt "en") */
    json_t *ad, *adapters = json_object_get(root, "adapters");
    const char *aname;
    json_object_foreach(adapters, aname, ad) {
        const char *kinds[] = {"fp", "nf4"};
        for (int k = 0; k < 2; k++) {
            json_t *g = json_object_get(json_object_get(ad, kinds[k]), "greedy");
            json_t *gt = json_object_get(g, "text");
            if (!gt) continue;
            int ng;
            int32_t *gids = json_ids(json_object_get(g, "ids"), &ng);
            check_decode(&dec_t, tk, aname, gids, ng, json_string_value(gt),
                         json_string_length(gt));
            free(gids);
        }
    }
    tally_report(&ids_t);
    tally_report(&dec_t);
    TU_CHECK(ids_t.total == 6, "expected 6 llama-tiny prompts, read %d", ids_t.total);
    json_decref(root);
    tok_free(tk);
}

/* Property on the real model: for valid UTF-8 x (random code points mixed
 * with ASCII words and runs of spaces), decode(encode(x)) == x, a '▁' in x
 * reading as ' '. */
static void test_round_trip(const tokenizer *tk) {
    static const char *words[] = {" ", "  ", "the", " a", "\n", "\xE2\x96\x81", "12", "\t"};
    uint64_t r = 777;
    int ok = 0, total = 300;
    for (int it = 0; it < total; it++) {
        char s[1024], want[1024];
        size_t len = 0, wl = 0;
        for (int part = 0; part < 8; part++) {
            len += tt_random_utf8(&r, s + len, 4);
            const char *w = words[tt_rand(&r) % 8];
            memcpy(s + len, w, strlen(w));
            len += strlen(w);
        }
        for (size_t i = 0; i < len;) {
            bool sp = i + 3 <= len && memcmp(s + i, "\xE2\x96\x81", 3) == 0;
            want[wl++] = sp ? ' ' : s[i];
            i += sp ? 3 : 1;
        }
        int32_t *ids = NULL;
        int n = 0, bad = 0;
        ps_err err = {0};
        size_t got_len = 0;
        char *got = NULL;
        if (tok_encode(tk, s, len, false, &ids, &n, &err) == PS_OK)
            got = decode_stream(tk, ids, n, true, &got_len, &bad);
        bool same = got && bad == 0 && got_len == wl && memcmp(got, want, wl) == 0;
        ok += same;
        if (!same && it - ok < 3)
            fprintf(stderr, "round trip %d: '%.*s' -> '%s' (%d bad chunks) %s\n", it, (int)wl, want,
                    got ? got : "", bad, err.msg);
        free(got);
        free(ids);
    }
    printf("%-28s %d/%d exact\n", "llama2 random round trip", ok, total);
    TU_CHECK(ok == total, "round trip %d/%d", ok, total);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Mixed English/code/CJK text repeated to `n` bytes (cut at a character boundary). */
static char *make_text(size_t n) {
    static const char *chunk =
        "The quick brown fox jumps over the lazy dog. def f(x):\n    return x * 2.0\n"
        "大语言模型的参数高效微调方法有哪些？ 2023年5月 😀  done!\t";
    size_t cl = strlen(chunk);
    char *s = malloc(n + cl + 1);
    size_t len = 0;
    while (len + cl <= n) {
        memcpy(s + len, chunk, cl);
        len += cl;
    }
    s[len] = 0;
    return s;
}

static void test_timing(const tokenizer *tk) {
    size_t sizes[] = {4096, 100 * 1024};
    double limits[] = {0.05, 1.0}; /* seconds: ~100x the measured time, only catches O(n^2) */
    for (int k = 0; k < 2; k++) {
        char *text = make_text(sizes[k]);
        size_t len = strlen(text);
        int reps = k == 0 ? 50 : 3, n = 0;
        double best = 1e9;
        for (int r = 0; r < reps; r++) {
            int32_t *ids;
            ps_err err;
            double t0 = now_s();
            tok_encode(tk, text, len, true, &ids, &n, &err);
            double dt = now_s() - t0;
            if (dt < best) best = dt;
            free(ids);
        }
        printf("encode %zu bytes -> %d ids: %.3f ms (best of %d)\n", len, n, best * 1e3, reps);
        TU_CHECK(best < limits[k], "encoding %zu bytes took %.3f s (limit %.2f s)", len, best,
                 limits[k]);
        free(text);
    }
}

int main(void) {
    tu_fixtures_or_skip("tokenizers/llama2/tokenizer.model");
    tokenizer *tk = NULL;
    ps_err err = {0};
    ps_status st = tok_load_spm(tu_path("tokenizers/llama2/tokenizer.model"), &tk, &err);
    TU_CHECK(st == PS_OK, "llama2 tokenizer.model: %s", err.msg);
    if (st) return tu_finish("tokenizer");
    TU_CHECK(tok_vocab_size(tk) == 32000 && tok_bos(tk) == 1 && tok_eos(tk) == 2,
             "llama2 vocab %d bos %d eos %d", tok_vocab_size(tk), tok_bos(tk), tok_eos(tk));
    test_llama2(tk);
    test_gguf_same_vocab(tk);
    test_gguf_file("llama-spm", true);
    test_gguf_file("phi-3", true);
    const char *refused[] = {"gpt-2", "falcon", "deepseek-coder", "bert-bge"};
    for (int i = 0; i < 4; i++)
        test_gguf_file(refused[i], false);
    test_llama_tiny();
    test_round_trip(tk);
    test_timing(tk);
    tok_free(tk);
    return tu_finish("tokenizer");
}
