/* Reply channel (see stream.h). Events are copied by value into a ring that
 * doubles when full; after the final event the client keeps reading it. */
#include "stream.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct engine_stream {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    bool cancelled;
    bool final_set;
    engine_event final; /* DONE or ERROR, returned forever once reached */
    engine_event *q;    /* ring of pending TOKEN events */
    int head, n, cap;
    uint64_t req_id;
};

ps_status stream_create(uint64_t req_id, engine_stream **out, ps_err *err) {
    *out = NULL;
    engine_stream *s = calloc(1, sizeof *s);
    if (!s) return ps_errf(err, PS_ENOMEM, "request stream: out of memory");
    s->cap = 16;
    s->q = malloc((size_t)s->cap * sizeof *s->q);
    if (!s->q) {
        free(s);
        return ps_errf(err, PS_ENOMEM, "request stream: out of memory");
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->refs = 2;
    s->req_id = req_id;
    *out = s;
    return PS_OK;
}

static void stream_destroy(engine_stream *s) {
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s->q);
    free(s);
}

/* Called with the mutex held. */
static bool stream_grow(engine_stream *s) {
    int cap = s->cap * 2;
    engine_event *q = malloc((size_t)cap * sizeof *q);
    if (!q) return false;
    for (int i = 0; i < s->n; i++) q[i] = s->q[(s->head + i) % s->cap];
    free(s->q);
    s->q = q;
    s->cap = cap;
    s->head = 0;
    return true;
}

void stream_push(engine_stream *s, const engine_event *ev) {
    pthread_mutex_lock(&s->mu);
    if (s->final_set) goto out;
    if (ev->kind != ENGINE_EV_TOKEN) {
        s->final = *ev;
        s->final_set = true;
    } else if (s->n < s->cap || stream_grow(s)) {
        s->q[(s->head + s->n) % s->cap] = *ev;
        s->n++;
    } else {
        memset(&s->final, 0, sizeof s->final);
        s->final.kind = ENGINE_EV_ERROR;
        ps_errf(&s->final.err, PS_ENOMEM,
                "request %llu: reply queue of %d events could not grow: out of memory",
                (unsigned long long)s->req_id, s->cap);
        s->final_set = true;
        s->cancelled = true;
    }
    pthread_cond_signal(&s->cv);
out:
    pthread_mutex_unlock(&s->mu);
}

void stream_push_text(engine_stream *s, const engine_event *tmpl, const char *text, size_t n,
                      bool as_cont) {
    engine_event ev = *tmpl;
    ev.cont = as_cont;
    if (as_cont) ev.n_top = 0;
    const size_t room = sizeof ev.text - 1;
    do {
        size_t k = n;
        if (k > room) {
            k = room;
            while (k > 0 && ((unsigned char)text[k] & 0xC0) == 0x80) k--; /* back to a char start */
            if (k == 0) k = room; /* not UTF-8 at all: cut anyway rather than loop */
        }
        memcpy(ev.text, text, k);
        ev.text[k] = 0;
        stream_push(s, &ev);
        text += k;
        n -= k;
        ev.cont = true; /* the token's own data went with the first part */
        ev.n_top = 0;
    } while (n > 0);
}

bool stream_cancelled(engine_stream *s) {
    pthread_mutex_lock(&s->mu);
    bool c = s->cancelled;
    pthread_mutex_unlock(&s->mu);
    return c;
}

static void stream_unref(engine_stream *s) {
    /* called with the mutex held; unlocks */
    bool last = --s->refs == 0;
    pthread_mutex_unlock(&s->mu);
    if (last) stream_destroy(s);
}

void stream_engine_release(engine_stream *s) {
    pthread_mutex_lock(&s->mu);
    stream_unref(s);
}

void engine_stream_next(engine_stream *s, engine_event *ev) {
    pthread_mutex_lock(&s->mu);
    while (s->n == 0 && !s->final_set) pthread_cond_wait(&s->cv, &s->mu);
    if (s->n > 0) {
        *ev = s->q[s->head];
        s->head = (s->head + 1) % s->cap;
        s->n--;
    } else {
        *ev = s->final;
    }
    pthread_mutex_unlock(&s->mu);
}

void engine_stream_free(engine_stream *s) {
    if (!s) return;
    pthread_mutex_lock(&s->mu);
    s->cancelled = true;
    stream_unref(s);
}
