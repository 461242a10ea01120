/* CLIP tokenizer against the OpenAI reference: every case of
 * tokenizers/clip/cases.jsonl (BPE ids exact, input_ids with truncation
 * exact) and clip-tiny/ref/text.json (77-token input_ids and eot index);
 * the tokenizer.json loading path gives identical ids; html.unescape and
 * str.lower pieces against values printed by CPython 3.11.2. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clip_pretok.h"
#include "clip_tokenizer.h"
#include "html_unescape.h"
#include "testutil.h"
#include "unicode.h"

/* html.unescape(in) as printed by CPython 3.11.2 */
static const char *const html_cases[][2] = {
    {"&notanentity;", "\302\254anentity;"},
    {"&#128;", "\342\202\254"},
    {"&#0;", "\357\277\275"},
    {"&#x110000;", "\357\277\275"},
    {"&#1;", ""},
    {"&amp", "&"},
    {"&ampx", "&x"},
    {"&#xD800;", "\357\277\275"},
    {"&;", "&;"},
    {"&#;", "&#;"},
    {"&#x;", "&#x;"},
    {"&#xZ", "&#xZ"},
    {"&#65", "A"},
    {"&#x41x", "Ax"},
    {"&AMP;", "&"},
    {"&amp;amp;", "&amp;"},
    {"&aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa;", "&aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa;"},
    {"&notin;", "\342\210\211"},
    {"&notin", "\302\254in"},
    {"&NotEqualTilde;", "\342\211\202\314\270"},
    {"&#99999999999999999999;", "\357\277\275"},
    {"&#13;", "\015"},
    {"&lt&gt", "<>"},
    {"&&amp;", "&&"},
    {"a&b", "a&b"},
    {"&#x263A;", "\342\230\272"},
    {"&nbsp", "\302\240"},
    {"&ltx", "<x"},
    {"&\303\251acute;", "&\303\251acute;"},
    {"&aacute\303\251", "\303\241\303\251"},
    {"&bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbblt;", "&bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbblt;"},
    {"&#x1F600;", "\360\237\230\200"},
    {"&#150;", "\342\200\223"},
};

/* str.lower(in) as printed by CPython 3.11.2 (Final_Sigma contexts, U+0130) */
static const char *const lower_cases[][2] = {
    {"\316\221\316\243", "\316\261\317\202"},
    {"\316\221\316\243\316\221", "\316\261\317\203\316\261"},
    {"\316\243", "\317\203"},
    {"\316\221\316\243.", "\316\261\317\202."},
    {"\316\221'\316\243", "\316\261'\317\202"},
    {"\316\221\314\201\316\243", "\316\261\314\201\317\202"},
    {"\316\221\316\243\314\201", "\316\261\317\202\314\201"},
    {"\316\221\316\243\314\201\316\221", "\316\261\317\203\314\201\316\261"},
    {"1\316\243", "1\317\203"},
    {"\304\260x", "i\314\207x"},
    {"\307\205", "\307\206"},
    {"\341\272\236", "\303\237"},
    {"\342\205\253", "\342\205\273"},
    {"\341\216\240", "\352\255\260"},
    {"\316\221\316\243\302\255\316\221", "\316\261\317\203\302\255\316\261"},
    {"\342\223\220\342\222\266", "\342\223\220\342\223\220"},
    {"\316\221\316\243 \316\221", "\316\261\317\202 \316\261"},
};

static char *utf8_of(const uint32_t *cps, size_t n) {
    char *s = malloc(4 * n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += (size_t)uni_utf8_put(cps[i], (unsigned char *)s + k);
    s[k] = 0;
    return s;
}

static void test_html(void) {
    for (size_t c = 0; c < sizeof html_cases / sizeof html_cases[0]; c++) {
        uint32_t *in;
        size_t n;
        TU_CHECK(uni_utf8_decode(html_cases[c][0], strlen(html_cases[c][0]), &in, &n, NULL) == PS_OK,
                 "decode html case %zu", c);
        uint32_t *out = malloc(sizeof(uint32_t) * (n + 1));
        size_t m = html_unescape(in, n, out);
        char *got = utf8_of(out, m);
        TU_CHECK(strcmp(got, html_cases[c][1]) == 0, "html.unescape('%s') = '%s', want '%s'",
                 html_cases[c][0], got, html_cases[c][1]);
        free(got);
        free(out);
        free(in);
    }
}

static void test_lower(void) {
    for (size_t c = 0; c < sizeof lower_cases / sizeof lower_cases[0]; c++) {
        uint32_t *in;
        size_t n;
        uni_utf8_decode(lower_cases[c][0], strlen(lower_cases[c][0]), &in, &n, NULL);
        uint32_t *out = malloc(sizeof(uint32_t) * (3 * n + 1));
        size_t m = 0;
        for (size_t i = 0; i < n; i++) m += (size_t)uni_py_lower_at(in, n, i, out + m);
        char *got = utf8_of(out, m);
        TU_CHECK(strcmp(got, lower_cases[c][1]) == 0, "lower case %zu: got '%s' want '%s'", c, got,
                 lower_cases[c][1]);
        free(got);
        free(out);
        free(in);
    }
}

static void test_utf8_errors(void) {
    static const char *const bad[] = {"\xff", "\xc0\x80", "\xed\xa0\x80", "\xf4\x90\x80\x80", "a\xe2\x82"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint32_t *cps = NULL;
        size_t n;
        ps_err err = {0};
        ps_status st = uni_utf8_decode(bad[i], strlen(bad[i]), &cps, &n, &err);
        TU_CHECK(st == PS_EINVAL && strstr(err.msg, "UTF-8"), "invalid utf-8 %zu accepted (%s)", i,
                 err.msg);
        free(cps);
    }
}

static int hexval(char c) { return c <= '9' ? c - '0' : (c | 32) - 'a' + 10; }

static char *unhex(const char *hex, size_t *len) {
    size_t n = strlen(hex) / 2;
    char *s = malloc(n + 1);
    for (size_t i = 0; i < n; i++) s[i] = (char)(hexval(hex[2 * i]) * 16 + hexval(hex[2 * i + 1]));
    s[n] = 0;
    *len = n;
    return s;
}

static bool ids_equal(const int32_t *got, int n, json_t *want) {
    if ((size_t)n != json_array_size(want)) return false;
    for (int i = 0; i < n; i++)
        if (got[i] != json_integer_value(json_array_get(want, (size_t)i))) return false;
    return true;
}

/* One case: full BPE ids and the 77-token input ids. Returns 1 if all exact. */
static int check_case(const clip_tokenizer *t, const char *what, json_t *c, const char *ids_key,
                      const char *input_key, bool padded) {
    size_t len;
    char *text = unhex(json_string_value(json_object_get(c, "text_utf8_hex")), &len);
    int32_t *ids = NULL, input[77];
    int n = 0, eot = -1;
    bool trunc = false;
    ps_err err = {0};
    int ok = 1;
    if (clip_tok_encode(t, text, len, 0, &ids, &n, &err) ||
        clip_tok_tokenize(t, text, len, 77, input, &eot, &trunc, &err)) {
        TU_CHECK(0, "%s '%s': %s", what, json_string_value(json_object_get(c, "text")), err.msg);
        ok = 0;
        goto done;
    }
    json_t *want_in = json_object_get(c, input_key);
    int n_in = padded ? 77 : (int)json_array_size(want_in);
    if (!ids_equal(ids, n, json_object_get(c, ids_key)) || !ids_equal(input, n_in, want_in) ||
        trunc != json_is_true(json_object_get(c, "truncated"))) {
        ok = 0;
        TU_CHECK(0, "%s '%s': ids differ (got %d ids, want %zu; truncated %d)", what,
                 json_string_value(json_object_get(c, "text")), n,
                 json_array_size(json_object_get(c, ids_key)), trunc);
        for (int i = 0; i < n && i < 24; i++) fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n");
    }
    for (int i = n_in; i < 77; i++)
        if (input[i] != 0) ok = 0;
    TU_CHECK(ok, "%s: padding is not zero", what);
    json_t *we = json_object_get(c, "eot_index");
    if (we) TU_CHECK(eot == json_integer_value(we), "%s: eot_index %d want %d", what, eot,
                     (int)json_integer_value(we));
    if (!we) { /* the reference's argmax of its own input ids */
        int am = 0;
        for (int i = 1; i < n_in; i++)
            if (json_integer_value(json_array_get(want_in, (size_t)i)) >
                json_integer_value(json_array_get(want_in, (size_t)am)))
                am = i;
        TU_CHECK(eot == am, "%s: eot_index %d want %d", what, eot, am);
    }
done:
    free(ids);
    free(text);
    return ok;
}

static int run_jsonl(const clip_tokenizer *t, const char *path, int *total) {
    FILE *f = fopen(path, "rb");
    TU_CHECK(f != NULL, "open %s", path);
    if (!f) return 0;
    char *line = NULL;
    size_t cap = 0;
    int exact = 0;
    while (getline(&line, &cap, f) > 0) {
        json_error_t je;
        json_t *c = json_loads(line, JSON_ALLOW_NUL, &je);
        TU_CHECK(c != NULL, "bad jsonl line: %s", je.text);
        if (!c) continue;
        (*total)++;
        exact += check_case(t, "cases.jsonl", c, "ids", "input_ids_unpadded", false);
        json_decref(c);
    }
    free(line);
    fclose(f);
    return exact;
}

static int run_text_json(const clip_tokenizer *t, const char *path, int *total) {
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    TU_CHECK(root != NULL, "load %s: %s", path, je.text);
    if (!root) return 0;
    size_t i;
    json_t *c;
    int exact = 0;
    json_array_foreach(json_object_get(root, "items"), i, c) {
        (*total)++;
        exact += check_case(t, "text.json", c, "bpe_ids", "input_ids", true);
    }
    json_decref(root);
    return exact;
}

/* tokenizer.json built from the same vocab/merges must tokenize identically. */
static void test_tokenizer_json(const clip_tokenizer *ref, const char *dir) {
    char path[4200], tmpl[] = "/tmp/clip_tok_XXXXXX";
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    json_t *vocab = json_load_file(path, 0, NULL);
    json_t *merges = json_array();
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    FILE *f = fopen(path, "rb");
    char *line = NULL;
    size_t cap = 0;
    int k = 0;
    while (f && getline(&line, &cap, f) > 0) {
        line[strcspn(line, "\r\n")] = 0;
        if (k++ == 0 || !*line) continue;
        char *sp = strchr(line, ' ');
        *sp = 0; /* the newer [a, b] form for half of them, "a b" for the rest */
        json_array_append_new(merges, k % 2 ? json_pack("[ss]", line, sp + 1)
                                            : json_sprintf("%s %s", line, sp + 1));
    }
    free(line);
    if (f) fclose(f);
    json_t *root = json_pack("{s:{s:s,s:o,s:o}}", "model", "type", "BPE", "vocab", vocab, "merges", merges);
    char tj[4300];
    TU_CHECK(mkdtemp(tmpl) != NULL, "mkdtemp");
    snprintf(tj, sizeof tj, "%s/tokenizer.json", tmpl);
    json_dump_file(root, tj, 0);
    json_decref(root);
    clip_tokenizer *t = NULL;
    ps_err err = {0};
    /* the folder has only tokenizer.json: clip_tok_load must pick it */
    TU_CHECK(clip_tok_load(tmpl, &t, &err) == PS_OK, "tokenizer.json: %s", err.msg);
    unlink(tj);
    rmdir(tmpl);
    if (!t) return;
    static const char *const texts[] = {"a photo of a dog.", "supercalifragilisticexpialidocious",
                                        "\xe4\xb8\x80\xe5\x8f\xaa\xe7\x8b\x97", "don't <|endoftext|>"};
    for (int i = 0; i < 4; i++) {
        int32_t a[77], b[77];
        clip_tok_tokenize(ref, texts[i], strlen(texts[i]), 77, a, NULL, NULL, NULL);
        clip_tok_tokenize(t, texts[i], strlen(texts[i]), 77, b, NULL, NULL, NULL);
        TU_CHECK(memcmp(a, b, sizeof a) == 0, "tokenizer.json ids differ for '%s'", texts[i]);
    }
    clip_tok_free(t);
}

static void test_errors(const clip_tokenizer *t) {
    int32_t ids[77];
    ps_err err = {0};
    TU_CHECK(clip_tok_tokenize(t, "a\xff", 2, 77, ids, NULL, NULL, &err) == PS_EINVAL,
             "invalid utf-8 accepted");
    size_t n = CLIP_TOK_MAX_WORD_BYTES + 10;
    char *big = malloc(n);
    memset(big, 'a', n);
    TU_CHECK(clip_tok_tokenize(t, big, n, 77, ids, NULL, NULL, &err) == PS_ETOOLARGE,
             "oversized word accepted");
    /* many short words are fine (encoding stops once the context is full) */
    for (size_t i = 0; i < n; i += 2) big[i + 1] = ' ';
    TU_CHECK(clip_tok_tokenize(t, big, n, 77, ids, NULL, NULL, &err) == PS_OK && ids[76] == clip_tok_eot(t),
             "long text: %s", err.msg);
    free(big);
    clip_tokenizer *bad = NULL;
    TU_CHECK(clip_tok_load("/nonexistent-dir", &bad, &err) == PS_ENOTFOUND && bad == NULL,
             "missing dir not reported");
}

int main(void) {
    tu_fixtures_or_skip("tokenizers/clip");
    test_html();
    test_lower();
    test_utf8_errors();
    clip_tokenizer *t = NULL;
    ps_err err = {0};
    TU_CHECK(clip_tok_load(tu_path("tokenizers/clip"), &t, &err) == PS_OK, "load: %s", err.msg);
    if (!t) return tu_finish("clip tokenizer");
    TU_CHECK(clip_tok_vocab_size(t) == 49408 && clip_tok_sot(t) == 49406 && clip_tok_eot(t) == 49407,
             "vocab %d sot %d eot %d", clip_tok_vocab_size(t), clip_tok_sot(t), clip_tok_eot(t));
    int total = 0, exact = run_jsonl(t, tu_path("tokenizers/clip/cases.jsonl"), &total);
    printf("tokenizers/clip/cases.jsonl: %d/%d exact\n", exact, total);
    TU_CHECK(total == 270 && exact == total, "cases exact %d/%d", exact, total);
    clip_tokenizer *t2 = NULL;
    TU_CHECK(clip_tok_load(tu_path("clip-tiny"), &t2, &err) == PS_OK, "load clip-tiny: %s", err.msg);
    if (t2) {
        int total2 = 0, exact2 = run_text_json(t2, tu_path("clip-tiny/ref/text.json"), &total2);
        printf("clip-tiny/ref/text.json: %d/%d exact\n", exact2, total2);
        TU_CHECK(total2 == 40 && exact2 == total2, "text.json exact %d/%d", exact2, total2);
        clip_tok_free(t2);
    }
    test_tokenizer_json(t, tu_path("tokenizers/clip"));
    test_errors(t);
    clip_tok_free(t);
    return tu_finish("clip tokenizer");
}
