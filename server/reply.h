/* Sending complete replies: JSON bodies, OpenAI error bodies, plain text.
 *
 * Every function writes status line, headers and the whole body, and returns
 * the HTTP status it sent, so a handler can `return reply_error(conn, &e);`
 * (CivetWeb records a handler's return value as the status). Streams are in
 * sse.c. */
#ifndef PS_SERVER_REPLY_H
#define PS_SERVER_REPLY_H

#include <civetweb.h>
#include <jansson.h>
#include <stddef.h>

#include "api_error.h"

/* The log line of a request names its error: http.c points the connection's
 * user data (mg_set_user_connection_data) at one of these for the request's
 * lifetime, and reply_error fills it with "error=<code> param=<name>". */
typedef struct {
    char text[112];
} reply_note;

/* extra_headers: NULL or "Name: value\r\n" lines. body is borrowed. */
int reply_json(struct mg_connection *conn, int status, const json_t *body, const char *extra_headers);

/* {"error":{"message","type","param","code"}} with the status of e->kind;
 * adds Retry-After to 503 busy and WWW-Authenticate to 401. */
int reply_error(struct mg_connection *conn, const api_error *e);
int reply_error_h(struct mg_connection *conn, const api_error *e, const char *extra_headers);

/* Shortcut: builds the api_error from a kind and a format. */
int reply_errorf(struct mg_connection *conn, srv_err_kind kind, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The error object alone (new reference), also used for SSE error events. */
json_t *reply_error_json(const api_error *e);

/* Adds a Date header between mg_response_header_start and _send (every
 * response must: see reply.c). */
void reply_add_date(struct mg_connection *conn);

int reply_bytes(struct mg_connection *conn, int status, const char *content_type, const char *body,
                size_t len, const char *extra_headers);

#endif
