/* Server-side counters for GET /metrics (Prometheus text format 0.0.4).
 *
 * Lock-free: every counter is an atomic, updated by CivetWeb workers and read
 * by the /metrics handler. Engine-side numbers (running/waiting, tokens) are
 * read from engine_get_info at scrape time, not stored here. */
#ifndef PS_SERVER_METRICS_H
#define PS_SERVER_METRICS_H

#include <stdatomic.h>
#include <stdint.h>

#define METRICS_MAX_ROUTES 16
#define METRICS_N_CLASSES 5 /* 1xx..5xx */
#define METRICS_N_BUCKETS 12

typedef struct {
    const char *route_names[METRICS_MAX_ROUTES + 1]; /* last slot: "other" */
    atomic_uint_fast64_t requests[METRICS_MAX_ROUTES + 1][METRICS_N_CLASSES];
    /* generation requests (completions + chat) */
    atomic_uint_fast64_t prompt_tokens, completion_tokens;
    atomic_uint_fast64_t finish_stop, finish_length, finish_error, client_gone;
    atomic_uint_fast64_t rejected_busy;
    /* histograms in seconds: cumulative buckets are built at render time */
    atomic_uint_fast64_t latency_bucket[METRICS_N_BUCKETS + 1], ttft_bucket[METRICS_N_BUCKETS + 1];
    atomic_uint_fast64_t latency_count, ttft_count;
    atomic_uint_fast64_t latency_sum_us, ttft_sum_us;
} server_metrics;

void metrics_init(server_metrics *m);
/* names[i] is the label of route i (static strings); n <= METRICS_MAX_ROUTES. */
void metrics_set_routes(server_metrics *m, const char *const *names, int n);
/* route < 0 or >= n: counted as "other". */
void metrics_count_request(server_metrics *m, int route, int http_status);
void metrics_observe_latency(server_metrics *m, double seconds);
void metrics_observe_ttft(server_metrics *m, double seconds);

/* Appends the exposition text; *buf is malloc'd (caller frees). extra is
 * pre-rendered text appended verbatim (engine gauges). Returns length or -1. */
long metrics_render(server_metrics *m, const char *extra, char **buf);

#endif
