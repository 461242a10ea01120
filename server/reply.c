/* JSON and OpenAI error replies over CivetWeb (v1.15 header API:
 * mg_response_header_start/add/send, which writes a Connection header
 * matching the keep-alive decision; the Date header is ours, see below). Status and error type come only
 * from error_map.c. Nothing here reads the request. */
#include "reply.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Our own Date header: CivetWeb 1.15 writes one with gmtime(), whose static
 * buffer races between workers (ThreadSanitizer caught it); with a Date
 * present it writes none. RFC 9110 IMF-fixdate. */
void reply_add_date(struct mg_connection *conn) {
    char date[64];
    struct tm tm;
    time_t now = time(NULL);
    if (!gmtime_r(&now, &tm) || !strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm)) return;
    mg_response_header_add(conn, "Date", date, -1);
}

int reply_bytes(struct mg_connection *conn, int status, const char *content_type, const char *body,
                size_t len, const char *extra_headers) {
    char clen[32];
    snprintf(clen, sizeof clen, "%zu", len);
    mg_response_header_start(conn, status);
    mg_response_header_add(conn, "Content-Type", content_type, -1);
    mg_response_header_add(conn, "Content-Length", clen, -1);
    mg_response_header_add(conn, "Cache-Control", "no-store", -1);
    reply_add_date(conn);
    if (extra_headers) mg_response_header_add_lines(conn, extra_headers);
    mg_response_header_send(conn);
    if (len) mg_write(conn, body, len);
    return status;
}

int reply_json(struct mg_connection *conn, int status, const json_t *body, const char *extra_headers) {
    char *text = json_dumps(body, JSON_COMPACT);
    if (!text) {
        static const char oom[] = "{\"error\":{\"message\":\"out of memory while encoding the reply\","
                                  "\"type\":\"server_error\",\"param\":null,\"code\":\"internal_error\"}}";
        return reply_bytes(conn, 500, "application/json", oom, sizeof oom - 1, NULL);
    }
    reply_bytes(conn, status, "application/json", text, strlen(text), extra_headers);
    free(text);
    return status;
}

json_t *reply_error_json(const api_error *e) {
    http_error_kind k = http_error_of_kind(e->kind);
    json_t *inner = json_pack("{s:s, s:s, s:o, s:o}", "message", e->msg, "type", k.type ? k.type : "server_error",
                              "param", e->param[0] ? json_string(e->param) : json_null(),
                              "code", k.code ? json_string(k.code) : json_null());
    if (!inner) return NULL;
    return json_pack("{s:o}", "error", inner);
}

static void note_error(struct mg_connection *conn, const api_error *e, const http_error_kind *k) {
    reply_note *note = mg_get_user_connection_data(conn);
    if (!note) return;
    snprintf(note->text, sizeof note->text, "error=%s%s%.64s", k->code ? k->code : k->type,
             e->param[0] ? " param=" : "", e->param);
}

int reply_error_h(struct mg_connection *conn, const api_error *e, const char *extra_headers) {
    http_error_kind k = http_error_of_kind(e->kind);
    note_error(conn, e, &k);
    char headers[256] = "";
    if (k.http_status == 503) snprintf(headers, sizeof headers, "Retry-After: 1\r\n");
    if (k.http_status == 401) snprintf(headers, sizeof headers, "WWW-Authenticate: Bearer\r\n");
    if (extra_headers) strncat(headers, extra_headers, sizeof headers - strlen(headers) - 1);
    json_t *body = reply_error_json(e);
    if (!body) return reply_bytes(conn, k.http_status, "text/plain", e->msg, strlen(e->msg), headers);
    int st = reply_json(conn, k.http_status, body, headers);
    json_decref(body);
    return st;
}

int reply_error(struct mg_connection *conn, const api_error *e) { return reply_error_h(conn, e, NULL); }

int reply_errorf(struct mg_connection *conn, srv_err_kind kind, const char *param, const char *fmt, ...) {
    api_error e = {.kind = kind};
    snprintf(e.param, sizeof e.param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e.msg, sizeof e.msg, fmt, ap);
    va_end(ap);
    return reply_error(conn, &e);
}
