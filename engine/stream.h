/* The reply channel between the engine thread and one client (a request's
 * engine_stream): a mutex, a condition variable and a growable event queue.
 *
 * Two owners hold a reference each: the client (released by
 * engine_stream_free, which also cancels) and the engine (released by
 * stream_engine_release once the final event is queued or the request is
 * dropped). The last release frees. The engine side never waits for the
 * client: pushes only append under the mutex, so a slow reader costs memory
 * (bounded by the request's max_tokens), never engine time.
 *
 * The client-side API (engine_stream_next, engine_stream_free) is declared in
 * engine.h; this header is the engine side. */
#ifndef PS_ENGINE_STREAM_H
#define PS_ENGINE_STREAM_H

#include <stdbool.h>
#include <stdint.h>

#include "engine.h"

/* A new stream with two references (client + engine). */
ps_status stream_create(uint64_t req_id, engine_stream **out, ps_err *err);

/* Appends an event. DONE or ERROR is final: later pushes are ignored. If the
 * queue cannot grow, the stream turns into an ENOMEM error for the client and
 * reports itself cancelled so the engine drops the request. */
void stream_push(engine_stream *s, const engine_event *ev);

/* Sends text as one event made from *tmpl (kind TOKEN, its token fields)
 * plus continuation events (cont = true, n_top = 0) for what does not fit
 * the event's text buffer, cut at UTF-8 character starts: no truncation, no
 * split character. as_cont: every event is a continuation (text released
 * after the last token). n == 0 sends one event with empty text. */
void stream_push_text(engine_stream *s, const engine_event *tmpl, const char *text, size_t n,
                      bool as_cont);

/* True once the client freed its end (or the stream failed): stop working on it. */
bool stream_cancelled(engine_stream *s);

/* The engine's reference. Call exactly once. */
void stream_engine_release(engine_stream *s);

#endif
