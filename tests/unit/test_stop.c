/* Stop strings over streamed pieces: matches across piece boundaries, held
 * text released when a match fails or the stream ends, several stops (the
 * earliest wins), UTF-8 never split, and a randomised comparison with the
 * plain rule: generation ends after the first piece that completes a stop,
 * and the output is the text before the earliest stop occurrence so far. */
#define _GNU_SOURCE /* memmem */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stop.h"
#include "testutil.h"

typedef struct {
    char out[4096];
    size_t n;
    bool stopped;
} sink;

/* Feeds the pieces (the last one final unless keep_open) and collects output;
 * also checks that each release is a prefix-extension of what came before. */
static void run(const char *const *stops, int n_stops, const char *const *pieces, int n_pieces,
                bool keep_open, sink *k) {
    stop_matcher m;
    memset(k, 0, sizeof *k);
    TU_CHECK(stop_init(&m, stops, n_stops, NULL) == PS_OK, "stop_init");
    for (int i = 0; i < n_pieces; i++) {
        stop_result r;
        bool final = !keep_open && i == n_pieces - 1;
        TU_CHECK(stop_feed(&m, pieces[i], strlen(pieces[i]), final, &r, NULL) == PS_OK, "feed");
        memcpy(k->out + k->n, r.text, r.n);
        k->n += r.n;
        k->out[k->n] = 0;
        if (r.stopped) k->stopped = true;
    }
    stop_free(&m);
}

#define EXPECT(stops, pieces, keep_open, want, want_stopped)                                     \
    do {                                                                                         \
        sink k_;                                                                                 \
        run(stops, (int)(sizeof stops / sizeof stops[0]), pieces,                                \
            (int)(sizeof pieces / sizeof pieces[0]), keep_open, &k_);                            \
        TU_CHECK(strcmp(k_.out, want) == 0, "emitted '%s', want '%s'", k_.out, want);            \
        TU_CHECK(k_.stopped == (want_stopped), "stopped %d, want %d", k_.stopped, want_stopped); \
    } while (0)

static void test_cases(void) {
    {   /* across three pieces, text after the stop dropped */
        const char *s[] = {"<END>"};
        const char *p[] = {"abc<E", "N", "D>tail", "more"};
        EXPECT(s, p, false, "abc", true);
    }
    {   /* held back, then released when the match fails */
        const char *s[] = {"END"};
        const char *p[] = {"xE", "Nx"};
        EXPECT(s, p, true, "xENx", false);
    }
    {   /* held back text must not be out before it is decided */
        const char *s[] = {"END"};
        const char *p[] = {"xEN"};
        EXPECT(s, p, true, "x", false);
    }
    {   /* end of stream releases held text */
        const char *s[] = {"END"};
        const char *p[] = {"xE", "N"};
        EXPECT(s, p, false, "xEN", false);
    }
    {   /* overlapping prefix: "aab" after "aaa" */
        const char *s[] = {"aab"};
        const char *p[] = {"aaa", "b", "zzz"};
        EXPECT(s, p, false, "a", true);
    }
    {   /* several stops: "###" completes while "\n\n" cannot any more */
        const char *s[] = {"\n\n", "###"};
        const char *p[] = {"a\n#", "##", "x"};
        EXPECT(s, p, false, "a\n", true);
    }
    {   /* earliest start wins over the first listed */
        const char *s[] = {"bc", "abcd"};
        const char *p[] = {"xab", "cd"};
        EXPECT(s, p, false, "x", true);
    }
    {   /* the stop is the very first text */
        const char *s[] = {"Hi"};
        const char *p[] = {"H", "i there"};
        EXPECT(s, p, false, "", true);
    }
    {   /* UTF-8: "é" (2 bytes) held whole, then released */
        const char *s[] = {"\xC3\xA9!"};
        const char *p[] = {"caf\xC3\xA9", "?"};
        EXPECT(s, p, true, "caf\xC3\xA9?", false);
    }
    {   /* UTF-8 stop across pieces, CJK and emoji */
        const char *s[] = {"\xE6\x97\xA5\xE6\x9C\xAC", "\xF0\x9F\x98\x80"};
        const char *p[] = {"a\xE6\x97\xA5", "\xE6\x9C\xAC" "b"};
        EXPECT(s, p, false, "a", true);
        const char *p2[] = {"x\xF0\x9F\x98\x81y\xF0\x9F\x98\x80z"};
        EXPECT(s, p2, false, "x\xF0\x9F\x98\x81y", true);
    }
    {   /* no stops: pass-through */
        stop_matcher m;
        stop_init(&m, NULL, 0, NULL);
        stop_result r;
        stop_feed(&m, "abc", 3, false, &r, NULL);
        TU_CHECK(r.n == 3 && memcmp(r.text, "abc", 3) == 0 && !r.stopped, "pass-through");
        stop_free(&m);
    }
    {   /* after a stop, nothing more comes out */
        stop_matcher m;
        const char *s[] = {"x"};
        stop_init(&m, s, 1, NULL);
        stop_result r;
        stop_feed(&m, "axb", 3, false, &r, NULL);
        TU_CHECK(r.stopped && r.n == 1, "stop at x");
        stop_feed(&m, "ccc", 3, true, &r, NULL);
        TU_CHECK(r.stopped && r.n == 0, "output after stop: %zu bytes", r.n);
        stop_free(&m);
    }
}

/* Checks that no release ever ends inside a UTF-8 character. */
static void test_utf8_boundaries(void) {
    const char *s[] = {"\xE2\x82\xAC\xE2\x82\xAC" "X"}; /* "€€X" */
    stop_matcher m;
    stop_init(&m, s, 1, NULL);
    const char *text = "a\xE2\x82\xAC\xE2\x82\xAC" "b\xE2\x82\xAC";
    size_t total = 0;
    for (const char *p = text; *p;) { /* one character per piece */
        size_t len = ((unsigned char)*p < 0x80) ? 1 : 3;
        stop_result r;
        stop_feed(&m, p, len, false, &r, NULL);
        TU_CHECK(r.n == 0 || memcmp(r.text, text + total, r.n) == 0, "release is not the text");
        total += r.n;
        TU_CHECK(((unsigned char)text[total] & 0xC0) != 0x80, "release ends mid-character at %zu", total);
        p += len;
    }
    TU_CHECK(total == 1 + 6 + 1, "released %zu bytes before the open '€', want 8", total);
    stop_free(&m);
}

static uint64_t rng_state = 12345;
static unsigned rnd(unsigned n) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (unsigned)(rng_state % n);
}

/* Random texts over {a,b,c}, random stops and random piece cuts, against
 * the rule written out plainly. */
static void test_random(void) {
    for (int iter = 0; iter < 3000; iter++) {
        char text[64], stops_buf[3][6];
        const char *stops[3];
        int len = 1 + (int)rnd(40), ns = 1 + (int)rnd(3);
        for (int i = 0; i < len; i++) text[i] = (char)('a' + rnd(3));
        text[len] = 0;
        for (int j = 0; j < ns; j++) {
            int sl = 1 + (int)rnd(4);
            for (int i = 0; i < sl; i++) stops_buf[j][i] = (char)('a' + rnd(3));
            stops_buf[j][sl] = 0;
            stops[j] = stops_buf[j];
        }
        /* piece cuts first: the reference stops after the first piece whose end
         * completes a stop, at the earliest occurrence in the text so far */
        int cuts[64], n_cuts = 0;
        for (int pos = 0; pos < len;) {
            int pl = 1 + (int)rnd(5);
            pos = pos + pl > len ? len : pos + pl;
            cuts[n_cuts++] = pos;
        }
        size_t want = (size_t)len;
        for (int c = 0; c < n_cuts && want == (size_t)len; c++) {
            for (int j = 0; j < ns; j++) {
                const char *h = memmem(text, (size_t)cuts[c], stops[j], strlen(stops[j]));
                if (h && (size_t)(h - text) < want) want = (size_t)(h - text);
            }
        }
        bool want_stop = want < (size_t)len;
        stop_matcher m;
        stop_init(&m, stops, ns, NULL);
        char out[64];
        size_t n = 0;
        bool stopped = false;
        for (int c = 0, pos = 0; c < n_cuts; c++) {
            int pl = cuts[c] - pos;
            stop_result r;
            stop_feed(&m, text + pos, (size_t)pl, pos + pl == len, &r, NULL);
            memcpy(out + n, r.text, r.n);
            n += r.n;
            stopped |= r.stopped;
            /* never ahead of the truth */
            if (n > want || memcmp(out, text, n) != 0) {
                TU_CHECK(0, "iter %d: emitted '%.*s' is not a prefix of '%.*s'", iter, (int)n, out,
                         (int)want, text);
                break;
            }
            pos += pl;
        }
        TU_CHECK(n == want && stopped == want_stop,
                 "iter %d: text '%s' stops '%s' '%s' '%s': emitted %zu bytes (stop %d), want %zu (%d)",
                 iter, text, stops[0], ns > 1 ? stops[1] : "", ns > 2 ? stops[2] : "", n, stopped,
                 want, want_stop);
        stop_free(&m);
        if (tu_failures > 5) break;
    }
}

int main(void) {
    test_cases();
    test_utf8_boundaries();
    test_random();
    return tu_finish("stop");
}
