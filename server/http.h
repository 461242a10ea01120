/* The HTTP listener: CivetWeb setup, the route table (in one place, http.c),
 * method and auth checks, and one log line per request.
 *
 *   server srv; server_init(&srv, eng, &opts);
 *   if (http_start(&srv, &err)) ...;     // logs "listening on http://host:port"
 *   ... wait for a signal ...;
 *   atomic_store(&srv.stopping, true); http_stop(&srv);
 */
#ifndef PS_SERVER_HTTP_H
#define PS_SERVER_HTTP_H

#include <civetweb.h>

#include "base/status.h"
#include "server.h"

/* What a route handler gets. A handler sends exactly one reply (or stream)
 * and returns the HTTP status it sent. */
typedef struct http_req {
    struct mg_connection *conn;
    server *srv;
    char id[48];      /* request id, when the handler made one */
    char detail[240]; /* the handler's facts for the log line (no prompt text) */
} http_req;

typedef int (*http_handler)(http_req *rq);

/* Binds and starts the workers. PS_EIO with CivetWeb's reason (port in use...). */
ps_status http_start(server *srv, ps_err *err);

/* Port actually bound (differs from opts.port when that was 0). */
int http_bound_port(const server *srv);

/* Stops accepting, waits for the workers to finish. Accepts a server whose
 * http_start failed or never ran. */
void http_stop(server *srv);

#endif
