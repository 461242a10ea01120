/* Stop strings over streamed text (OpenAI's `stop`).
 *
 * Text arrives piece by piece (the decoded tokens); a stop string may span
 * several pieces. Text that could still become the start of a stop string is
 * held back; it is released as soon as it cannot (the match failed) or at the
 * end of the stream, and never released if the stop completes. The stop
 * string itself and everything after it are never released.
 *
 * Matching is on bytes. With valid UTF-8 input and stop strings (the decoder
 * only emits complete characters; the server checks JSON strings) a held-back
 * suffix always starts on a character boundary, so released text never splits
 * a character.
 *
 * Usage:
 *   stop_matcher m; stop_init(&m, stops, n, &err);
 *   stop_result r; stop_feed(&m, piece, len, false, &r, &err);  // emit r.text[0..r.n)
 *   if (r.stopped) ...;                                           // finish "stop"
 *   stop_feed(&m, "", 0, true, &r, &err);                         // end: release the rest
 *   stop_free(&m);
 */
#ifndef PS_ENGINE_STOP_H
#define PS_ENGINE_STOP_H

#include <stdbool.h>
#include <stddef.h>

#include "base/status.h"

typedef struct {
    char **stops;   /* copies */
    size_t *lens;
    int n;
    char *buf;      /* pending text: [0, n_release) released by the last feed, rest held */
    size_t n_buf, n_release, cap;
    bool stopped;
} stop_matcher;

/* Copies the n stop strings (each non-empty; the caller validates lengths). */
ps_status stop_init(stop_matcher *m, const char *const *stops, int n, ps_err *err);
void stop_free(stop_matcher *m); /* accepts zeroed */

typedef struct {
    const char *text; /* text that may be emitted now; valid until the next feed */
    size_t n;
    bool stopped;     /* a stop string completed: text ends right before it */
} stop_result;

/* Appends text. final = the stream ends after this piece: everything not cut
 * by a stop is released. After a stop, further feeds release nothing.
 * Errors: ENOMEM only. */
ps_status stop_feed(stop_matcher *m, const char *text, size_t n, bool final, stop_result *r,
                    ps_err *err);

#endif
