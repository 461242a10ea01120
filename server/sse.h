/* Server-sent events for streamed completions: `data: {json}\n\n` per event,
 * `data: [DONE]\n\n` last, as OpenAI streams them.
 *
 * Each event goes out in one write (one chunk of chunked transfer encoding
 * on HTTP/1.1, raw bytes and connection close on HTTP/1.0), so a client sees
 * every token as soon as it is produced. A failed write marks the writer
 * failed: the caller treats it as "client gone" and cancels generation. */
#ifndef PS_SERVER_SSE_H
#define PS_SERVER_SSE_H

#include <civetweb.h>
#include <jansson.h>
#include <stdbool.h>

typedef struct {
    struct mg_connection *conn;
    bool chunked;
    bool failed;
} sse_writer;

/* Sends the 200 response header for an event stream. */
bool sse_begin(sse_writer *w, struct mg_connection *conn);
/* `data: <compact json>\n\n`. false once the client is gone. */
bool sse_send_json(sse_writer *w, const json_t *event);
/* `data: [DONE]\n\n` and the end of the chunked body. */
bool sse_send_done(sse_writer *w);

#endif
