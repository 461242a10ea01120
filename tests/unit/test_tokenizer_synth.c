/* Tokenizer behaviour on small hand-built models (no fixtures needed):
 *  - BPE merge order (score first, leftmost on ties, stale pairs skipped),
 *    user-defined pieces kept whole, UNUSED pieces re-split, unknown runs,
 *    byte fallback, invalid UTF-8 -> U+FFFD, the normaliser options;
 *  - the streaming decoder's leading-space and U+FFFD rules and its cap;
 *  - the byte tokenizer (round trip of random valid UTF-8);
 *  - malformed / unsupported tokenizer.model and GGUF files -> precise errors.
 * Expected pieces were derived by hand from sentencepiece's bpe_model.cc,
 * normalizer.cc and SentencePieceProcessor::Decode (walkthroughs in comments). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "tok_testlib.h"
#include "tok_testmodel.h"
#include "tokenizer.h"

#define SP "\xE2\x96\x81" /* '▁' */

static const tm_piece base_pieces[] = {
    {"<unk>", 0, TM_UNKNOWN}, {"<s>", 0, TM_CONTROL},   {"</s>", 0, TM_CONTROL},
    {SP, -10, TM_NORMAL},     {"a", -11, TM_NORMAL},    {"b", -12, TM_NORMAL},
    {"c", -13, TM_NORMAL},    {"ab", -1, TM_NORMAL},    {"bc", -2, TM_NORMAL},
    {"abc", -3, TM_NORMAL},   {SP "a", -4, TM_NORMAL},  {"aa", -5, TM_NORMAL},
    {"<sep>", 0, TM_USER},    {"xy", -0.5f, TM_UNUSED}, {"x", -14, TM_NORMAL},
    {"y", -15, TM_NORMAL},    {SP "xy", -6, TM_NORMAL}, {"z", -16, TM_NORMAL},
    {"zw", -0.5f, TM_UNUSED}, {"w", -17, TM_NORMAL},
};
#define N_BASE ((int)(sizeof base_pieces / sizeof base_pieces[0]))

static tokenizer *load(const tm_opts *o) {
    tm_buf m = tm_spm_model(base_pieces, N_BASE, o);
    tokenizer *t = NULL;
    ps_err err = {0};
    ps_status st = tok_load_spm_buffer(m.b, m.n, &t, &err);
    TU_CHECK(st == PS_OK, "synthetic model: %s", err.msg);
    free(m.b);
    return t;
}

/* Encodes text and compares the piece strings with `want` ("|"-separated). */
static void expect_pieces(const tokenizer *t, const char *label, const char *text, size_t len,
                          const char *want) {
    int32_t *ids = NULL;
    int n = 0;
    ps_err err = {0};
    if (!t) return;
    ps_status st = tok_encode(t, text, len, false, &ids, &n, &err);
    char got[512] = "";
    for (int i = 0; st == PS_OK && i < n; i++) {
        if (i) strncat(got, "|", sizeof got - strlen(got) - 1);
        strncat(got, tok_piece(t, ids[i]), sizeof got - strlen(got) - 1);
    }
    TU_CHECK(st == PS_OK && strcmp(got, want) == 0, "%s: '%s' -> '%s', want '%s' (%s)", label, text,
             got, want, err.msg);
    free(ids);
}
#define EXPECT(t, label, text, want) expect_pieces(t, label, text, strlen(text), want)

static void test_bpe(void) {
    tm_opts o = tm_opts_bpe();
    tokenizer *t = load(&o);
    /* ▁ a b c: ab(-1) first, then abc(-3); ▁a(-4) is stale by then */
    EXPECT(t, "score order", "abc", SP "|abc");
    /* ▁ b a a a: two aa(-5) pairs tie -> the left one merges, the right is stale */
    EXPECT(t, "leftmost tie", "baaa", SP "|b|aa|a");
    /* ▁a(-4) beats aa(-5); the pair (a,a) at 1 goes stale */
    EXPECT(t, "stale pair", "aaa", SP "a|aa");
    /* q is no piece and there is no byte fallback: a run of unknowns is one <unk> */
    EXPECT(t, "unk run", "aqqb", SP "a|<unk>|b");
    EXPECT(t, "unk split", "qaq", SP "|<unk>|a|<unk>");
    /* user-defined pieces are frozen symbols */
    EXPECT(t, "user piece", "a<sep>b", SP "a|<sep>|b");
    EXPECT(t, "user first", "<sep>a", SP "|<sep>|a");
    /* xy is UNUSED but ▁xy is normal: merged through xy, kept */
    EXPECT(t, "unused merged on", "xy", SP "xy");
    /* zw is UNUSED and nothing grows from it: re-split into z, w */
    EXPECT(t, "unused resegment", "zw", SP "|z|w");
    /* spaces: each becomes ▁; no whitespace collapsing */
    EXPECT(t, "spaces", "a  b", SP "a|" SP "|" SP "|b");
    EXPECT(t, "empty", "", "");
    /* strings that look like control pieces are plain text */
    EXPECT(t, "control text", "<s>", SP "|<unk>");
    int32_t *ids;
    int n;
    ps_err err;
    TU_CHECK(tok_encode(t, "a", 1, true, &ids, &n, &err) == PS_OK && n == 2 && ids[0] == 1,
             "add_bos");
    free(ids);
    TU_CHECK(tok_bos(t) == 1 && tok_eos(t) == 2 && tok_vocab_size(t) == N_BASE, "specials");
    tok_free(t);

    o.byte_fallback = 1;
    t = load(&o);
    EXPECT(t, "byte fallback", "a\xC3\xA9", SP "a|<0xC3>|<0xA9>");
    /* an invalid byte is U+FFFD (EF BF BD) after normalisation */
    EXPECT(t, "invalid utf8", "\xFF", SP "|<0xEF>|<0xBF>|<0xBD>");
    expect_pieces(t, "nul byte", "a\0b", 3, SP "a|<0x00>|b");
    tok_free(t);
}

static void test_normalizer_options(void) {
    tm_opts o = tm_opts_bpe();
    o.remove_extra_ws = 1;
    tokenizer *t = load(&o);
    /* heading spaces dropped, inner runs collapsed, trailing ▁ removed: ▁a▁b */
    EXPECT(t, "remove_extra_ws", "  a  b  ", SP "a|" SP "|b");
    EXPECT(t, "only spaces", "   ", "");
    tok_free(t);

    o = tm_opts_bpe();
    o.add_dummy_prefix = 0;
    t = load(&o);
    EXPECT(t, "no dummy prefix", "a b", "a|" SP "|b");
    EXPECT(t, "no dummy prefix merge", "abc", "abc");
    tok_free(t);

    o = tm_opts_bpe();
    o.ws_suffix = 1;
    t = load(&o);
    EXPECT(t, "whitespace suffix", "a", "a|" SP);
    tok_free(t);
}

/* Streams ids; the concatenation goes to out (NUL-terminated); returns its length. */
static size_t decode_ids(const tokenizer *t, bool strip, const int32_t *ids, int n, char *out,
                         size_t cap) {
    tok_decoder d;
    char chunk[256];
    size_t len = 0;
    tok_decoder_init(&d, strip);
    for (int i = 0; i <= n; i++) {
        int k = i < n ? tok_decode_next(t, &d, ids[i], chunk, sizeof chunk)
                      : tok_decode_flush(t, &d, chunk, sizeof chunk);
        TU_CHECK(k >= 0 && tt_utf8_valid((unsigned char *)chunk, (size_t)k), "chunk %d invalid", i);
        if (k > 0 && len + (size_t)k < cap) {
            memcpy(out + len, chunk, (size_t)k);
            len += (size_t)k;
        }
    }
    out[len] = 0;
    return len;
}

static void expect_decode(const tokenizer *t, bool strip, const int32_t *ids, int n,
                          const char *want, const char *label) {
    char got[256];
    decode_ids(t, strip, ids, n, got, sizeof got);
    TU_CHECK(strcmp(got, want) == 0, "decode %s: '%s', want '%s'", label, got, want);
}

static void test_decode_rules(void) {
    tm_opts o = tm_opts_bpe();
    o.byte_fallback = 1;
    o.unk_surface = "<?>";
    tokenizer *t = load(&o);
    if (!t) return;
    int32_t a_sp = 10, sp = 3, a = 4, bos = 1, unk = 0, byte_A = N_BASE + 0x41;
    expect_decode(t, true, (int32_t[]){a_sp}, 1, "a", "strip first");
    expect_decode(t, false, (int32_t[]){a_sp}, 1, " a", "keep first");
    expect_decode(t, true, (int32_t[]){bos, a_sp}, 2, "a", "strip after control");
    /* only the first ▁ is dropped: sentencepiece decodes ▁ ▁a as " a" */
    expect_decode(t, true, (int32_t[]){sp, a_sp}, 2, " a", "strip once");
    expect_decode(t, true, (int32_t[]){a, a_sp}, 2, "a a", "no strip after text");
    expect_decode(t, true, (int32_t[]){byte_A, a_sp}, 2, "A a", "no strip after bytes");
    expect_decode(t, true, (int32_t[]){unk, a}, 2, "<?>a", "unk surface");
    tok_free(t);
    /* remove_extra_whitespaces: keeps stripping while nothing was emitted */
    o = tm_opts_bpe();
    o.remove_extra_ws = 1;
    t = load(&o);
    if (!t) return;
    expect_decode(t, true, (int32_t[]){sp, a_sp}, 2, "a", "strip while empty");
    expect_decode(t, true, (int32_t[]){unk}, 1, " \xE2\x81\x87 ", "default unk surface");
    tok_free(t);
}

/* ids of raw bytes in the byte tokenizer */
static int bytes_to_ids(const char *s, size_t n, int32_t *ids) {
    for (size_t i = 0; i < n; i++)
        ids[i] = 3 + (unsigned char)s[i];
    return (int)n;
}

static void test_byte_invalid(const tokenizer *t) {
    static const struct {
        const char *in;
        size_t n;
        const char *want;
    } cases[] = {
        /* ProcessBytePieces: each byte that does not start a valid character is one U+FFFD */
        {"\xE4\xB8", 2, "\xEF\xBF\xBD\xEF\xBF\xBD"}, /* truncated at the end */
        {"\xE4"
         "A",
         2,
         "\xEF\xBF\xBD"
         "A"},                                                       /* interrupted */
        {"\xC0\x80", 2, "\xEF\xBF\xBD\xEF\xBF\xBD"},                 /* overlong */
        {"\xED\xA0\x80", 3, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* surrogate */
        {"\xF4\x90\x80\x80", 4,
         "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"}, /* > U+10FFFF */
        {"\xFF\xE4\xB8\xAD", 4, "\xEF\xBF\xBD\xE4\xB8\xAD"},  /* bad then 中 */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int32_t ids[8];
        int n = bytes_to_ids(cases[c].in, cases[c].n, ids);
        char label[32];
        snprintf(label, sizeof label, "invalid bytes #%zu", c);
        expect_decode(t, false, ids, n, cases[c].want, label);
    }
    /* a control piece ends a byte run: E4 | <s> | B8 AD -> three U+FFFD */
    int32_t ids[4] = {3 + 0xE4, 1, 3 + 0xB8, 3 + 0xAD};
    expect_decode(t, false, ids, 4, "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD", "control in byte run");
}

static void test_byte_tokenizer(void) {
    tokenizer *t = NULL;
    ps_err err = {0};
    TU_CHECK(tok_init_bytes(&t, &err) == PS_OK, "tok_init_bytes: %s", err.msg);
    if (!t) return;
    TU_CHECK(tok_vocab_size(t) == 259 && tok_bos(t) == 1 && tok_eos(t) == 2, "byte vocab");
    TU_CHECK(strcmp(tok_piece(t, 0), "<unk>") == 0 &&
                 strcmp(tok_piece(t, 3 + 0x41), "<0x41>") == 0 && tok_piece(t, 259) == NULL &&
                 tok_piece(t, -1) == NULL,
             "byte pieces");
    const char *text = "h\xC3\xA9llo \xF0\x9F\x98\x80";
    int32_t *ids;
    int n;
    TU_CHECK(tok_encode(t, text, strlen(text), true, &ids, &n, &err) == PS_OK, "encode");
    TU_CHECK(n == 1 + (int)strlen(text) && ids[0] == 1 && ids[2] == 3 + 0xC3, "byte ids");
    /* é: nothing after C3, "é" after A9 */
    tok_decoder d;
    char out[16];
    tok_decoder_init(&d, false);
    TU_CHECK(tok_decode_next(t, &d, ids[0], out, sizeof out) == 0, "bos emits nothing");
    TU_CHECK(tok_decode_next(t, &d, ids[1], out, sizeof out) == 1 && out[0] == 'h', "h");
    TU_CHECK(tok_decode_next(t, &d, ids[2], out, sizeof out) == 0, "half of é held back");
    TU_CHECK(tok_decode_next(t, &d, ids[3], out, sizeof out) == 2 &&
                 memcmp(out, "\xC3\xA9", 2) == 0,
             "é");
    /* cap too small: -1 and nothing consumed; then it works */
    for (int i = 4; i < n - 1; i++)
        tok_decode_next(t, &d, ids[i], out, sizeof out);
    TU_CHECK(tok_decode_next(t, &d, ids[n - 1], out, 3) == -1, "cap 3 for a 4-byte char");
    TU_CHECK(tok_decode_next(t, &d, ids[n - 1], out, 5) == 4 && out[4] == 0, "emoji after retry");
    TU_CHECK(tok_decode_next(t, &d, 259, out, sizeof out) == -1 &&
                 tok_decode_next(t, &d, -5, out, 8) == -1,
             "out-of-range ids");
    free(ids);
    test_byte_invalid(t);
    /* random valid UTF-8 round trips */
    uint64_t r = 12345;
    for (int it = 0; it < 300; it++) {
        char s[256], back[512];
        size_t len = tt_random_utf8(&r, s, 40);
        if (tok_encode(t, s, len, false, &ids, &n, &err) != PS_OK) {
            TU_CHECK(0, "encode: %s", err.msg);
            continue;
        }
        size_t blen = decode_ids(t, false, ids, n, back, sizeof back);
        TU_CHECK(blen == len && memcmp(back, s, len) == 0, "round trip %d", it);
        free(ids);
    }
    tok_free(t);
}

static void expect_load_error(const tm_buf *m, ps_status want, const char *substr,
                              const char *label) {
    tokenizer *t = NULL;
    ps_err err = {0};
    ps_status st = tok_load_spm_buffer(m->b, m->n, &t, &err);
    TU_CHECK(st == want && strstr(err.msg, substr) != NULL && t == NULL,
             "%s: got %s '%s', want %s containing '%s'", label, ps_status_name(st), err.msg,
             ps_status_name(want), substr);
    tok_free(t);
}

static void test_bad_models(void) {
    tm_opts o = tm_opts_bpe();
    tm_buf m = {0};
    expect_load_error(&m, PS_EFORMAT, "no pieces", "empty file");
    tm_put(&m, "\x0A\x80", 2);
    expect_load_error(&m, PS_EFORMAT, "truncated varint", "truncated varint");
    m.n = 0;
    tm_put(&m,
           "\x0A\x05"
           "ab",
           4);
    expect_load_error(&m, PS_EFORMAT, "exceeds the 2 bytes left", "length past end");
    m.n = 0;
    tm_put(&m, "\x08\x01", 2);
    expect_load_error(&m, PS_EFORMAT, "wire type 0, expected 2", "wrong wire type");
    m.n = 0;
    tm_put(&m, "\x0B", 1);
    expect_load_error(&m, PS_EFORMAT, "wire type 3", "group");
    m.n = 0;
    tm_put(&m, "\x0A\x81\x80\x80\x80\x80\x80\x80\x80\x80\x02", 11);
    expect_load_error(&m, PS_EFORMAT, "varint", "varint over 64 bits");
    free(m.b);

    struct {
        tm_piece p[4];
        int n;
        int byte_fallback;
        ps_status st;
        const char *msg;
    } cases[] = {
        {{{"<s>", 0, TM_CONTROL}, {"a", 0, TM_NORMAL}},
         2,
         0,
         PS_EFORMAT,
         "no piece of type unknown"},
        {{{"<unk>", 0, TM_UNKNOWN}, {"<u2>", 0, TM_UNKNOWN}},
         2,
         0,
         PS_EFORMAT,
         "both of type unknown"},
        {{{"<unk>", 0, TM_UNKNOWN}, {"a", 0, TM_NORMAL}, {"a", 0, TM_NORMAL}},
         3,
         0,
         PS_EFORMAT,
         "already defined"},
        {{{"<unk>", 0, TM_UNKNOWN}, {"<0x41>", 0, TM_BYTE}},
         2,
         0,
         PS_EFORMAT,
         "byte_fallback is false"},
        {{{"<unk>", 0, TM_UNKNOWN}, {"<0x41>", 0, TM_BYTE}},
         2,
         -2,
         PS_EFORMAT,
         "<0x00> is missing"},
        {{{"<unk>", 0, TM_UNKNOWN}, {"<0xzz>", 0, TM_BYTE}}, 2, -2, PS_EFORMAT, "expected <0xXX>"},
        {{{"<unk>", 0, TM_UNKNOWN}, {"a", 0, 9}}, 2, 0, PS_EFORMAT, "type 9, expected 1..6"},
        {{{"<unk>", 0, TM_UNKNOWN}, {"", 0, TM_NORMAL}}, 2, 0, PS_EFORMAT, "piece 1 is empty"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        o = tm_opts_bpe();
        /* -2: byte_fallback set but no automatic byte pieces */
        o.byte_fallback = cases[c].byte_fallback == -2 ? 0 : cases[c].byte_fallback;
        tm_buf b = tm_spm_model(cases[c].p, cases[c].n, &o);
        if (cases[c].byte_fallback == -2) {
            tm_buf tr = {0};
            tm_uint(&tr, 35, 1);
            tm_msg(&b, 2, &tr); /* a second trainer_spec merges into the first */
        }
        char label[32];
        snprintf(label, sizeof label, "bad vocab #%zu", c);
        expect_load_error(&b, cases[c].st, cases[c].msg, label);
        free(b.b);
    }
    o = tm_opts_bpe();
    o.model_type = 0; /* proto default: unigram */
    m = tm_spm_model(base_pieces, N_BASE, &o);
    expect_load_error(&m, PS_ENOTSUP, "unigram", "unigram model");
    free(m.b);
    o = tm_opts_bpe();
    o.charsmap = "\x04\x00\x00\x00xxxx";
    m = tm_spm_model(base_pieces, N_BASE, &o);
    expect_load_error(&m, PS_ENOTSUP, "charsmap", "nfkc charsmap");
    /* every truncation of a valid model: an error or a smaller model, never a crash */
    o = tm_opts_bpe();
    free(m.b);
    m = tm_spm_model(base_pieces, N_BASE, &o);
    for (size_t k = 0; k < m.n; k++) {
        tokenizer *t = NULL;
        ps_status st = tok_load_spm_buffer(m.b, k, &t, NULL);
        TU_CHECK((st == PS_OK) == (t != NULL), "truncation %zu: status/out disagree", k);
        tok_free(t);
    }
    free(m.b);
    tokenizer *t = NULL;
    ps_err err = {0};
    TU_CHECK(tok_load_spm("/nonexistent/tokenizer.model", &t, &err) == PS_EIO &&
                 strstr(err.msg, "/nonexistent/tokenizer.model"),
             "missing file: %s", err.msg);
}

static void test_gguf(void) {
    tm_buf g = tm_gguf("llama", base_pieces, N_BASE, 3);
    tokenizer *t = NULL;
    ps_err err = {0};
    TU_CHECK(tok_load_gguf_buffer(g.b, g.n, &t, &err) == PS_OK, "gguf: %s", err.msg);
    EXPECT(t, "gguf encode", "abc", SP "|abc");
    EXPECT(t, "gguf unused", "zw", SP "|z|w");
    tok_free(t);
    for (size_t k = 0; k < g.n; k++) { /* truncations */
        t = NULL;
        ps_status st = tok_load_gguf_buffer(g.b, k, &t, &err);
        TU_CHECK(st != PS_OK && t == NULL, "gguf truncated at %zu accepted", k);
        tok_free(t);
    }
    g.b[0] = 'X';
    TU_CHECK(tok_load_gguf_buffer(g.b, g.n, &t, &err) == PS_EFORMAT && strstr(err.msg, "magic"),
             "bad magic: %s", err.msg);
    free(g.b);
    g = tm_gguf("llama", base_pieces, N_BASE, 1);
    TU_CHECK(tok_load_gguf_buffer(g.b, g.n, &t, &err) == PS_ENOTSUP && strstr(err.msg, "version 1"),
             "gguf v1: %s", err.msg);
    free(g.b);
    g = tm_gguf("gpt2", base_pieces, N_BASE, 3);
    TU_CHECK(tok_load_gguf_buffer(g.b, g.n, &t, &err) == PS_ENOTSUP && strstr(err.msg, "'gpt2'"),
             "gguf gpt2: %s", err.msg);
    free(g.b);
}

int main(void) {
    test_bpe();
    test_normalizer_options();
    test_decode_rules();
    test_byte_tokenizer();
    test_bad_models();
    test_gguf();
    return tu_finish("tokenizer synthetic");
}
