/* Reading a request: body with a size cap, Content-Type check, JSON parse.
 *
 * The pure parts (request_check_content_type, request_parse_json) take no
 * connection, so tests and the fuzz target call them directly. The
 * `_or_reply` helper answers the error itself and returns the HTTP status it
 * sent (0 = success, nothing sent), Redis style. */
#ifndef PS_SERVER_REQUEST_H
#define PS_SERVER_REQUEST_H

#include <civetweb.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "api_error.h"

/* NULL or a type that can carry JSON -> true. Accepted: application/json,
 * any +json type, text/plain and application/x-www-form-urlencoded (what
 * `curl -d` sends when -H is forgotten); others -> 415. */
bool request_check_content_type(const char *content_type, api_error *e);

/* Parses a JSON object from buf[0..len). On failure e names the line and
 * column the parser stopped at. *out is a new reference. */
bool request_parse_json(const char *buf, size_t len, json_t **out, api_error *e);

/* Reads the whole body (Content-Length or chunked) up to max bytes into a
 * malloc'd, NUL-terminated buffer. Over max -> 413, after draining what is
 * left (up to a bound) so the client can read the answer. */
bool request_read_body(struct mg_connection *conn, size_t max, char **buf, size_t *len, api_error *e);

/* Content-Type check + read + parse. Returns 0 with *out set, or the status
 * of the error reply it sent. */
int request_json_or_reply(struct mg_connection *conn, size_t max, json_t **out);

#endif
