/* Shared server state: init from the engine's facts, request ids, the
 * generation slots that keep CivetWeb workers free for /health and /metrics
 * (each open generation blocks one worker; STYLE.md 1). */
#include "server.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

void server_init(server *srv, engine *eng, const server_opts *opts) {
    memset(srv, 0, sizeof *srv);
    srv->eng = eng;
    srv->opts = *opts;
    if (srv->opts.http_threads < 2) srv->opts.http_threads = 2;
    /* keep workers for /health, /metrics and quick 4xx answers while streams run */
    if (srv->opts.max_streams <= 0) srv->opts.max_streams = srv->opts.http_threads - 4;
    if (srv->opts.max_streams > srv->opts.http_threads - 1) srv->opts.max_streams = srv->opts.http_threads - 1;
    if (srv->opts.max_streams < 1) srv->opts.max_streams = 1;
    engine_info info;
    engine_get_info(eng, &info);
    snprintf(srv->model_id, sizeof srv->model_id, "%s", info.model_id ? info.model_id : "model");
    snprintf(srv->device, sizeof srv->device, "%s", info.device ? info.device : "cpu");
    snprintf(srv->quant, sizeof srv->quant, "%s", info.quant ? info.quant : "");
    snprintf(srv->chat_template, sizeof srv->chat_template, "%s", info.chat_template ? info.chat_template : "");
    srv->demo = info.demo;
    srv->ctx_len = info.ctx_len;
    srv->vocab_size = info.vocab_size;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    srv->started = (long long)ts.tv_sec;
    srv->id_salt = splitmix64((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid());
    metrics_init(&srv->metrics);
}

void server_new_id(server *srv, const char *prefix, char *buf, size_t cap) {
    uint64_t n = atomic_fetch_add(&srv->id_counter, 1);
    snprintf(buf, cap, "%s-%016llx", prefix, (unsigned long long)splitmix64(srv->id_salt + n));
}

bool server_gen_acquire(server *srv) {
    if (atomic_load(&srv->stopping)) return false;
    int n = atomic_fetch_add(&srv->active_gens, 1);
    if (n >= srv->opts.max_streams) {
        atomic_fetch_sub(&srv->active_gens, 1);
        return false;
    }
    return true;
}

void server_gen_release(server *srv) { atomic_fetch_sub(&srv->active_gens, 1); }

static bool wait_idle(server *srv, double ms) {
    double end = server_now_ms() + ms;
    while (atomic_load(&srv->active_gens) > 0 && server_now_ms() < end) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return atomic_load(&srv->active_gens) == 0;
}

void server_drain(server *srv, int grace_s) {
    atomic_store(&srv->stopping, true);
    if (wait_idle(srv, grace_s * 1e3)) return;
    atomic_store(&srv->cancel_all, true);
    wait_idle(srv, 5e3);
}

double server_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}
