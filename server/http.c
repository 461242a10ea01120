/* CivetWeb setup and the route table. One catch-all CivetWeb handler
 * dispatches through `routes[]`, so unknown paths get an OpenAI-shaped 404
 * and known paths with another method a 405 with Allow (CivetWeb's own
 * answers are HTML). Auth (Bearer, --api-key) applies to /v1/ routes only:
 * /health and /metrics stay open for probes and scrapers.
 * Mirrors llama.cpp's server: routes in one place, one error mapping. */
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "adapters_routes.h"
#include "auth.h"
#include "base/log.h"
#include "clip_routes.h"
#include "openai_chat.h"
#include "openai_completions.h"
#include "reply.h"
#include "routes_misc.h"

typedef struct {
    const char *method;
    const char *path;
    bool prefix; /* path is a prefix: "/v1/models/" + id */
    bool auth;   /* needs the API key when one is set */
    bool quiet;  /* log at debug (probes, scrapes), not info */
    http_handler fn;
} http_route;

static const http_route routes[] = {
    {"GET", "/health", false, false, true, routes_health},
    {"GET", "/metrics", false, false, true, routes_metrics},
    {"GET", "/v1/models", false, true, false, routes_models},
    {"GET", "/v1/models/", true, true, false, routes_model_get},
    {"POST", "/v1/completions", false, true, false, openai_completions_handle},
    {"POST", "/v1/chat/completions", false, true, false, openai_chat_handle},
    {"POST", "/v1/adapters", false, true, false, adapters_upload},
    {"GET", "/v1/adapters", false, true, false, adapters_list},
    {"GET", "/v1/adapters/", true, true, false, adapters_get},
    {"DELETE", "/v1/adapters/", true, true, false, adapters_delete},
    {"POST", "/v1/classify", false, true, false, clip_routes_classify},
    {"POST", "/v1/embeddings", false, true, false, clip_routes_embeddings},
};
#define N_ROUTES ((int)(sizeof routes / sizeof routes[0]))

typedef struct {
    struct mg_context *ctx;
    int port;
} http_state;

static bool path_matches(const http_route *r, const char *path) {
    if (r->prefix) return strncmp(path, r->path, strlen(r->path)) == 0 && path[strlen(r->path)];
    return strcmp(path, r->path) == 0;
}

static int reply_method_not_allowed(http_req *rq, const char *method, const char *path) {
    char methods[64] = "", header[96];
    for (int i = 0; i < N_ROUTES; i++) {
        if (!path_matches(&routes[i], path) || strstr(methods, routes[i].method)) continue;
        if (methods[0]) strcat(methods, ", ");
        strcat(methods, routes[i].method);
    }
    snprintf(header, sizeof header, "Allow: %s\r\n", methods);
    api_error e;
    api_errorf(&e, SRV_ERR_METHOD, NULL, "method %.16s is not allowed on %.200s (allowed: %s)", method, path,
               methods);
    return reply_error_h(rq->conn, &e, header);
}

static int dispatch(http_req *rq, const char *method, const char *path, int *route_idx, bool *quiet) {
    int found = -1;
    bool path_known = false;
    for (int i = 0; i < N_ROUTES && found < 0; i++) {
        if (!path_matches(&routes[i], path)) continue;
        path_known = true;
        if (strcmp(routes[i].method, method) == 0) found = i;
    }
    *route_idx = found;
    if (found < 0 && path_known) return reply_method_not_allowed(rq, method, path);
    if (found < 0)
        return reply_errorf(rq->conn, SRV_ERR_NO_ROUTE, NULL, "unknown route: %.16s %.200s", method, path);
    const http_route *r = &routes[found];
    *quiet = r->quiet;
    bool missing;
    if (r->auth && !auth_bearer_ok(mg_get_header(rq->conn, "Authorization"), rq->srv->opts.api_key, &missing))
        return reply_errorf(rq->conn, SRV_ERR_AUTH, NULL,
                            missing ? "missing API key: send the header 'Authorization: Bearer <key>'"
                                    : "incorrect API key provided");
    return r->fn(rq);
}

static int on_request(struct mg_connection *conn, void *cbdata) {
    server *srv = cbdata;
    const struct mg_request_info *ri = mg_get_request_info(conn);
    const char *method = ri->request_method ? ri->request_method : "?";
    const char *path = ri->local_uri ? ri->local_uri : "/";
    http_req rq = {.conn = conn, .srv = srv};
    reply_note note = {{0}};
    double t0 = server_now_ms();
    int route = -1;
    bool quiet = false;
    mg_set_user_connection_data(conn, &note); /* the connection outlives this request: reset below */
    int status = dispatch(&rq, method, path, &route, &quiet);
    mg_set_user_connection_data(conn, NULL);
    metrics_count_request(&srv->metrics, route, status);
    PS_LOG_AT(quiet && status < 400 ? PS_LOG_LEVEL_DEBUG : PS_LOG_LEVEL_INFO, "server",
              "req=%s %s %.200s status=%d ms=%.1f%s%s%s%s", rq.id[0] ? rq.id : "-", method, path, status,
              server_now_ms() - t0, rq.detail[0] ? " " : "", rq.detail, note.text[0] ? " " : "", note.text);
    return status;
}

static int on_log_message(const struct mg_connection *conn, const char *message) {
    PS_LOG_WARN("civetweb", "%s", message);
    return 1;
}

/* "127.0.0.1:8080", "[::1]:8080" */
static void listen_spec(const server_opts *o, char *buf, size_t cap) {
    if (strchr(o->host, ':')) snprintf(buf, cap, "[%s]:%d", o->host, o->port);
    else snprintf(buf, cap, "%s:%d", o->host, o->port);
}

ps_status http_start(server *srv, ps_err *err) {
    char ports[300], threads[16];
    listen_spec(&srv->opts, ports, sizeof ports);
    snprintf(threads, sizeof threads, "%d", srv->opts.http_threads);
    const char *options[] = {
        "listening_ports", ports,
        "num_threads", threads,
        "enable_keep_alive", "yes",
        "keep_alive_timeout_ms", "5000",
        "tcp_nodelay", "1",                /* one SSE event = one packet, now */
        "request_timeout_ms", "60000",     /* a stalled reader fails a write after this */
        NULL, NULL,
    };
    static const char *names[N_ROUTES];
    for (int i = 0; i < N_ROUTES; i++) names[i] = routes[i].path;
    metrics_set_routes(&srv->metrics, names, N_ROUTES);
    http_state *st = calloc(1, sizeof *st);
    if (!st) return ps_errf(err, PS_ENOMEM, "http: out of memory");
    struct mg_callbacks cb = {0};
    cb.log_message = on_log_message;
    char why[256] = "";
    struct mg_error_data ed = {.text = why, .text_buffer_size = sizeof why};
    struct mg_init_data init = {.callbacks = &cb, .user_data = srv, .configuration_options = options};
    mg_init_library(0);
    st->ctx = mg_start2(&init, &ed);
    if (!st->ctx) {
        free(st);
        mg_exit_library();
        return ps_errf(err, PS_EIO, "cannot listen on %s: %s", ports, why[0] ? why : "unknown reason");
    }
    mg_set_request_handler(st->ctx, "**", on_request, srv);
    struct mg_server_port sp[4];
    int n = mg_get_server_ports(st->ctx, 4, sp);
    st->port = n > 0 ? sp[0].port : srv->opts.port;
    srv->http = st;
    return PS_OK;
}

int http_bound_port(const server *srv) {
    const http_state *st = srv->http;
    return st ? st->port : 0;
}

void http_stop(server *srv) {
    http_state *st = srv->http;
    if (!st) return;
    mg_stop(st->ctx);
    mg_exit_library();
    free(st);
    srv->http = NULL;
}
