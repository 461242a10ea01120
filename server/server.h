/* The server's shared state: what every handler sees through its cbdata.
 *
 * One `server` lives for the whole process (main.c owns it). Handlers run on
 * CivetWeb worker threads, so the mutable parts are atomics; the rest is set
 * before the listener starts and read-only afterwards. The server never owns
 * a tensor: it holds the engine handle and talks through engine/include/engine.h. */
#ifndef PS_SERVER_SERVER_H
#define PS_SERVER_SERVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "metrics.h"

typedef struct {
    const char *host;         /* listen address; "127.0.0.1" unless --host */
    int port;                 /* 0 = any free port (the log line says which) */
    const char *api_key;      /* NULL/"" = no auth on /v1 */
    int http_threads;         /* CivetWeb workers */
    int max_streams;          /* concurrent generations; <= 0: http_threads - 4 */
    size_t max_body;          /* request body cap in bytes */
    size_t clip_max_body;     /* body cap of /v1/classify and /v1/embeddings (images) */
    int default_max_tokens;   /* cap when a request gives no max_tokens */
    const char *adapters_dir; /* engine's --adapters-dir (shown in /health) */
    size_t max_upload;        /* adapter upload body cap in bytes */
    int shutdown_grace_s;     /* on SIGTERM: how long in-flight generations may finish */
} server_opts;

server_opts server_opts_default(void);

typedef struct server {
    engine *eng;
    clip_service *clip;       /* NULL unless --clip; set before the listener starts */
    server_opts opts;
    /* facts copied from engine_get_info at start (stable for the process) */
    char model_id[256];
    char device[16], quant[16], chat_template[64];
    bool demo;
    int ctx_len, vocab_size;
    long long started;        /* unix time, the models' `created` */
    /* live state */
    atomic_int active_gens;   /* generations holding a worker now */
    atomic_bool stopping;     /* set on SIGINT/SIGTERM: new generations get 503 */
    atomic_bool cancel_all;   /* grace over: running generations end now */
    atomic_uint_fast64_t id_counter;
    uint64_t id_salt;
    server_metrics metrics;
    void *http;               /* http.c's listener state */
} server;

/* Copies the engine facts and sets limits; does not start listening. */
void server_init(server *srv, engine *eng, const server_opts *opts);

/* Request id "<prefix>-<16 hex>", unique within the process and unlikely to
 * repeat across restarts. cap >= strlen(prefix) + 18. */
void server_new_id(server *srv, const char *prefix, char *buf, size_t cap);

/* Takes one generation slot; false when max_streams are busy or stopping. */
bool server_gen_acquire(server *srv);
void server_gen_release(server *srv);

/* Shutdown, before http_stop (CivetWeb refuses writes once stopping): new
 * generations get 503, running ones get grace_s to finish, then are cut
 * with an error event; returns when none holds a worker (or after 5 s more). */
void server_drain(server *srv, int grace_s);

/* Monotonic milliseconds. */
double server_now_ms(void);

#endif
