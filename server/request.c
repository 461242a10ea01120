/* Request bodies: size cap (413), Content-Type (415), JSON parse (400 with
 * the parser's line and column). jansson rejects "\u0000" inside strings by
 * default, which keeps every string we pass on a plain C string, and caps
 * nesting depth, so a hostile body cannot exhaust the stack. */
#include "request.h"

#include "reply.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* CivetWeb workers run on small stacks and jansson's parser recurses per
 * nesting level (its own cap is 2048): a 2000-deep body overflowed a 100 KiB
 * worker stack. OpenAI bodies nest a handful of levels. */
#define REQUEST_JSON_MAX_DEPTH 64

/* beyond this we stop draining an oversized body and close the connection */
#define REQUEST_DRAIN_MAX ((long long)64 << 20)

bool request_check_content_type(const char *ct, api_error *e) {
    if (!ct || !*ct) return true;
    size_t n = strcspn(ct, ";");
    while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t')) n--;
    static const char *ok[] = {"application/json", "text/plain", "application/x-www-form-urlencoded"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (n == strlen(ok[i]) && !strncasecmp(ct, ok[i], n)) return true;
    if (n >= 5 && !strncasecmp(ct + n - 5, "+json", 5)) return true;
    return api_errorf(e, SRV_ERR_MEDIA_TYPE, NULL,
                      "content type '%.*s' cannot carry a JSON body (send application/json)", (int)(n > 100 ? 100 : n), ct);
}

/* Nesting depth of brackets outside strings; stops counting past the cap. */
static bool json_depth_ok(const char *buf, size_t len, size_t *at) {
    int depth = 0;
    bool in_str = false, esc = false;
    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (in_str) {
            if (esc) esc = false;
            else if (c == '\\') esc = true;
            else if (c == '"') in_str = false;
        } else if (c == '"') {
            in_str = true;
        } else if (c == '[' || c == '{') {
            if (++depth > REQUEST_JSON_MAX_DEPTH) {
                *at = i;
                return false;
            }
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return true;
}

bool request_parse_json(const char *buf, size_t len, json_t **out, api_error *e) {
    json_error_t jerr;
    size_t at = 0;
    *out = NULL;
    if (len == 0) return api_errorf(e, SRV_ERR_INVALID_JSON, NULL, "request body is empty, expected a JSON object");
    if (!json_depth_ok(buf, len, &at))
        return api_errorf(e, SRV_ERR_INVALID_JSON, NULL, "JSON nesting is deeper than %d levels (at byte %zu)",
                          REQUEST_JSON_MAX_DEPTH, at);
    json_t *root = json_loadb(buf, len, 0, &jerr);
    if (!root)
        return api_errorf(e, SRV_ERR_INVALID_JSON, NULL, "invalid JSON body at line %d column %d: %s", jerr.line,
                          jerr.column, jerr.text);
    if (!json_is_object(root)) {
        static const char *names[] = {"object", "array", "string", "integer", "number", "true", "false", "null"};
        int t = json_typeof(root);
        json_decref(root);
        return api_errorf(e, SRV_ERR_INVALID_JSON, NULL, "request body must be a JSON object, got %s",
                          t >= 0 && t < 8 ? names[t] : "?");
    }
    *out = root;
    return true;
}

static void drain(struct mg_connection *conn, long long left) {
    char tmp[16384];
    if (left > REQUEST_DRAIN_MAX || left < 0) {
        mg_disable_connection_keep_alive(conn);
        return;
    }
    while (left > 0) {
        int k = mg_read(conn, tmp, sizeof tmp);
        if (k <= 0) break;
        left -= k;
    }
}

bool request_read_body(struct mg_connection *conn, size_t max, char **out, size_t *out_len, api_error *e) {
    const struct mg_request_info *ri = mg_get_request_info(conn);
    long long clen = ri->content_length;
    *out = NULL;
    *out_len = 0;
    if (clen > (long long)max) {
        drain(conn, clen);
        return api_errorf(e, SRV_ERR_BODY_TOO_LARGE, NULL, "request body of %lld bytes is over the limit of %zu bytes",
                          clen, max);
    }
    size_t cap = clen >= 0 ? (size_t)clen + 1 : 65536;
    char *buf = malloc(cap);
    if (!buf) return api_errorf(e, SRV_ERR_INTERNAL, NULL, "out of memory reading a %zu-byte body", cap);
    size_t n = 0;
    for (;;) {
        if (n + 1 >= cap) {
            if (cap > max) break; /* chunked body over the cap */
            size_t ncap = cap * 2 > max + 2 ? max + 2 : cap * 2;
            char *nb = realloc(buf, ncap);
            if (!nb) { free(buf); return api_errorf(e, SRV_ERR_INTERNAL, NULL, "out of memory reading the body"); }
            buf = nb;
            cap = ncap;
        }
        int k = mg_read(conn, buf + n, cap - 1 - n);
        if (k <= 0) break;
        n += (size_t)k;
    }
    if (n > max) {
        free(buf);
        mg_disable_connection_keep_alive(conn);
        return api_errorf(e, SRV_ERR_BODY_TOO_LARGE, NULL, "request body is over the limit of %zu bytes", max);
    }
    buf[n] = 0;
    *out = buf;
    *out_len = n;
    return true;
}

int request_json_or_reply(struct mg_connection *conn, size_t max, json_t **out) {
    api_error e = {0};
    char *buf = NULL;
    size_t len = 0;
    *out = NULL;
    bool ok = request_check_content_type(mg_get_header(conn, "Content-Type"), &e);
    if (!ok) drain(conn, mg_get_request_info(conn)->content_length);
    ok = ok && request_read_body(conn, max, &buf, &len, &e) && request_parse_json(buf, len, out, &e);
    free(buf);
    if (!ok) return reply_error(conn, &e);
    return 0;
}
