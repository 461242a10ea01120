/* The reply channel on its own: text splitting over continuation events
 * (no truncation, no split UTF-8 character), pushes that never wait for a
 * reader, the final event repeating, cancellation, and both release orders
 * (run under ASan/LSan for the frees and TSan for the threads). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stream.h"
#include "testutil.h"

static void test_split(void) {
    /* 700 bytes mixing 1-, 2-, 3- and 4-byte characters */
    const char *chars[] = {"a", "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80"};
    char text[1024];
    size_t n = 0;
    for (int i = 0; n < 700; i++) {
        const char *c = chars[(i * 7) % 4];
        memcpy(text + n, c, strlen(c));
        n += strlen(c);
    }
    text[n] = 0;
    engine_stream *s;
    TU_CHECK(stream_create(1, &s, NULL) == PS_OK, "create");
    engine_event t = {.kind = ENGINE_EV_TOKEN, .token = 42, .logprob = -0.5f, .n_top = 2};
    stream_push_text(s, &t, text, n, false);
    stream_push_text(s, &t, "", 0, false); /* an empty token still makes one event */
    engine_event done = {.kind = ENGINE_EV_DONE, .finish_reason = "length"};
    stream_push(s, &done);
    char got[1024];
    size_t g = 0;
    int events = 0, conts = 0;
    engine_event ev;
    for (engine_stream_next(s, &ev); ev.kind == ENGINE_EV_TOKEN; engine_stream_next(s, &ev)) {
        size_t k = strlen(ev.text);
        TU_CHECK(k < sizeof ev.text, "event text overflow");
        if (k > 0) TU_CHECK(((unsigned char)ev.text[0] & 0xC0) != 0x80, "event starts mid-character");
        TU_CHECK(ev.token == 42, "token id kept on every part");
        if (events == 0) TU_CHECK(!ev.cont && ev.n_top == 2, "first part carries the token data");
        if (events > 0 && events < 3) TU_CHECK(ev.cont && ev.n_top == 0, "later parts are continuations");
        conts += ev.cont;
        if (g + k < sizeof got) memcpy(got + g, ev.text, k), g += k;
        events++;
    }
    got[g] = 0;
    TU_CHECK(g == n && strcmp(got, text) == 0, "reassembled %zu of %zu bytes", g, n);
    TU_CHECK(events == 4 && conts == 2, "events %d conts %d (700 bytes in 255-byte parts + empty)",
             events, conts);
    TU_CHECK(ev.kind == ENGINE_EV_DONE, "done");
    engine_stream_next(s, &ev);
    TU_CHECK(ev.kind == ENGINE_EV_DONE && strcmp(ev.finish_reason, "length") == 0, "final repeats");
    stream_push(s, &t); /* after the final event: ignored */
    engine_stream_next(s, &ev);
    TU_CHECK(ev.kind == ENGINE_EV_DONE, "push after final ignored");
    stream_engine_release(s);
    engine_stream_free(s);
}

/* Engine side pushes 20000 events with nobody reading, then the client reads all. */
static void test_no_wait(void) {
    engine_stream *s;
    stream_create(2, &s, NULL);
    engine_event t = {.kind = ENGINE_EV_TOKEN};
    for (int i = 0; i < 20000; i++) {
        t.token = i;
        stream_push(s, &t);
    }
    TU_CHECK(!stream_cancelled(s), "not cancelled");
    engine_event ev;
    int ok = 1;
    for (int i = 0; i < 20000; i++) {
        engine_stream_next(s, &ev);
        ok &= ev.kind == ENGINE_EV_TOKEN && ev.token == i;
    }
    TU_CHECK(ok, "events out of order");
    engine_stream_free(s); /* client first: cancels, engine still holds it */
    TU_CHECK(stream_cancelled(s), "client free cancels");
    stream_engine_release(s);
}

typedef struct {
    engine_stream *s;
    int got;
    engine_event_kind last;
} reader;

static void *reader_main(void *arg) {
    reader *r = arg;
    engine_event ev;
    for (engine_stream_next(r->s, &ev); ev.kind == ENGINE_EV_TOKEN; engine_stream_next(r->s, &ev))
        r->got++;
    r->last = ev.kind;
    engine_stream_free(r->s);
    return NULL;
}

static void test_threads(void) {
    for (int round = 0; round < 20; round++) {
        reader r = {0};
        stream_create(3, &r.s, NULL);
        pthread_t th;
        pthread_create(&th, NULL, reader_main, &r);
        engine_event t = {.kind = ENGINE_EV_TOKEN};
        for (int i = 0; i < 500; i++) stream_push(r.s, &t);
        engine_event err = {.kind = ENGINE_EV_ERROR};
        ps_errf(&err.err, PS_ECANCELED, "x");
        stream_push(r.s, &err);
        if (round % 2) stream_engine_release(r.s); /* engine lets go before or after the reader */
        pthread_join(th, NULL);
        if (round % 2 == 0) stream_engine_release(r.s);
        TU_CHECK(r.got == 500 && r.last == ENGINE_EV_ERROR, "round %d: %d events, last %d", round,
                 r.got, r.last);
    }
}

int main(void) {
    test_split();
    test_no_wait();
    test_threads();
    engine_stream_free(NULL);
    return tu_finish("stream");
}
