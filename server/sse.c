/* text/event-stream writer (WHATWG HTML "server-sent events"; OpenAI's
 * streaming format is `data:` lines only, no `event:` or `id:` fields).
 * X-Accel-Buffering: no keeps a fronting nginx from buffering the stream. */
#include "sse.h"

#include "reply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool sse_write(sse_writer *w, const char *data, size_t len) {
    if (w->failed) return false;
    char head[24];
    int hl = w->chunked ? snprintf(head, sizeof head, "%zx\r\n", len) : 0;
    size_t total = (size_t)hl + len + (w->chunked ? 2 : 0);
    char stack[4096];
    char *buf = total <= sizeof stack ? stack : malloc(total);
    if (!buf) return !(w->failed = true);
    memcpy(buf, head, (size_t)hl);
    memcpy(buf + hl, data, len);
    if (w->chunked) memcpy(buf + hl + len, "\r\n", 2);
    int k = mg_write(w->conn, buf, total);
    if (buf != stack) free(buf);
    if (k <= 0 || (size_t)k != total) w->failed = true;
    return !w->failed;
}

bool sse_begin(sse_writer *w, struct mg_connection *conn) {
    const struct mg_request_info *ri = mg_get_request_info(conn);
    w->conn = conn;
    w->failed = false;
    w->chunked = ri->http_version && strcmp(ri->http_version, "1.1") == 0;
    mg_response_header_start(conn, 200);
    mg_response_header_add(conn, "Content-Type", "text/event-stream; charset=utf-8", -1);
    mg_response_header_add(conn, "Cache-Control", "no-cache", -1);
    mg_response_header_add(conn, "X-Accel-Buffering", "no", -1);
    reply_add_date(conn);
    if (w->chunked) {
        mg_response_header_add(conn, "Transfer-Encoding", "chunked", -1);
    } else {
        mg_disable_connection_keep_alive(conn); /* HTTP/1.0: the body ends when we close */
    }
    if (mg_response_header_send(conn) != 0) w->failed = true;
    return !w->failed;
}

bool sse_send_json(sse_writer *w, const json_t *event) {
    char *text = json_dumps(event, JSON_COMPACT);
    if (!text) return !(w->failed = true);
    size_t n = strlen(text);
    char *msg = malloc(n + 9);
    if (!msg) {
        free(text);
        return !(w->failed = true);
    }
    memcpy(msg, "data: ", 6);
    memcpy(msg + 6, text, n);
    memcpy(msg + 6 + n, "\n\n", 3);
    bool ok = sse_write(w, msg, n + 8);
    free(msg);
    free(text);
    return ok;
}

bool sse_send_done(sse_writer *w) {
    static const char done[] = "data: [DONE]\n\n";
    bool ok = sse_write(w, done, sizeof done - 1);
    if (ok && w->chunked && mg_write(w->conn, "0\r\n\r\n", 5) != 5) w->failed = true;
    return ok && !w->failed;
}
