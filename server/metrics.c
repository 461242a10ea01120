/* Prometheus counters and histograms for the HTTP side. Text exposition
 * format 0.0.4: HELP/TYPE lines, cumulative `le` buckets ending in +Inf,
 * _sum and _count. Does not know routes or the engine: callers pass labels
 * and the engine's gauges as text. */
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* seconds; spans a cached short answer on a GPU to a long CPU generation */
static const double bucket_le[METRICS_N_BUCKETS] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                                    1, 2.5, 5, 10, 30, 120};

void metrics_init(server_metrics *m) {
    memset(m, 0, sizeof *m);
    m->route_names[METRICS_MAX_ROUTES] = "other";
}

void metrics_set_routes(server_metrics *m, const char *const *names, int n) {
    for (int i = 0; i < n && i < METRICS_MAX_ROUTES; i++) m->route_names[i] = names[i];
}

void metrics_count_request(server_metrics *m, int route, int http_status) {
    if (route < 0 || route >= METRICS_MAX_ROUTES || !m->route_names[route]) route = METRICS_MAX_ROUTES;
    int c = http_status / 100 - 1;
    if (c < 0 || c >= METRICS_N_CLASSES) c = METRICS_N_CLASSES - 1;
    atomic_fetch_add(&m->requests[route][c], 1);
}

static void observe(atomic_uint_fast64_t *buckets, atomic_uint_fast64_t *count,
                    atomic_uint_fast64_t *sum_us, double s) {
    int b = 0;
    while (b < METRICS_N_BUCKETS && s > bucket_le[b]) b++;
    atomic_fetch_add(&buckets[b], 1);
    atomic_fetch_add(count, 1);
    atomic_fetch_add(sum_us, (uint_fast64_t)(s > 0 ? s * 1e6 : 0));
}

void metrics_observe_latency(server_metrics *m, double s) {
    observe(m->latency_bucket, &m->latency_count, &m->latency_sum_us, s);
}

void metrics_observe_ttft(server_metrics *m, double s) {
    observe(m->ttft_bucket, &m->ttft_count, &m->ttft_sum_us, s);
}

typedef struct {
    char *p;
    size_t n, cap;
    int failed;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
        va_end(ap);
        if (k < 0) { b->failed = 1; return; }
        if ((size_t)k < b->cap - b->n) { b->n += (size_t)k; return; }
        size_t cap = b->cap * 2 + (size_t)k;
        char *p = realloc(b->p, cap);
        if (!p) { b->failed = 1; return; }
        b->p = p;
        b->cap = cap;
    }
}

static void render_hist(sbuf *b, const char *name, const char *help, atomic_uint_fast64_t *buckets,
                        atomic_uint_fast64_t *count, atomic_uint_fast64_t *sum_us) {
    sb_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cum = 0;
    for (int i = 0; i < METRICS_N_BUCKETS; i++) {
        cum += atomic_load(&buckets[i]);
        sb_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, bucket_le[i], (unsigned long long)cum);
    }
    cum += atomic_load(&buckets[METRICS_N_BUCKETS]);
    sb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
    sb_printf(b, "%s_sum %.6f\n%s_count %llu\n", name, (double)atomic_load(sum_us) / 1e6, name,
              (unsigned long long)atomic_load(count));
}

static void render_counter(sbuf *b, const char *name, const char *help, uint64_t v) {
    sb_printf(b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name, help, name, name,
              (unsigned long long)v);
}

long metrics_render(server_metrics *m, const char *extra, char **out) {
    sbuf b = {malloc(4096), 0, 4096, 0};
    if (!b.p) return -1;
    b.p[0] = 0;
    sb_printf(&b, "# HELP peftserve_http_requests_total HTTP requests answered, by route and status class\n"
                  "# TYPE peftserve_http_requests_total counter\n");
    for (int r = 0; r <= METRICS_MAX_ROUTES; r++) {
        if (!m->route_names[r]) continue;
        for (int c = 0; c < METRICS_N_CLASSES; c++) {
            uint64_t v = atomic_load(&m->requests[r][c]);
            if (v || c == 1)
                sb_printf(&b, "peftserve_http_requests_total{route=\"%s\",code=\"%dxx\"} %llu\n",
                          m->route_names[r], c + 1, (unsigned long long)v);
        }
    }
    render_counter(&b, "peftserve_prompt_tokens_total", "prompt tokens of finished generation requests",
                   atomic_load(&m->prompt_tokens));
    render_counter(&b, "peftserve_completion_tokens_total", "tokens generated for finished requests",
                   atomic_load(&m->completion_tokens));
    sb_printf(&b, "# HELP peftserve_request_finish_total generation requests by how they ended\n"
                  "# TYPE peftserve_request_finish_total counter\n"
                  "peftserve_request_finish_total{reason=\"stop\"} %llu\n"
                  "peftserve_request_finish_total{reason=\"length\"} %llu\n"
                  "peftserve_request_finish_total{reason=\"error\"} %llu\n"
                  "peftserve_request_finish_total{reason=\"client_gone\"} %llu\n",
              (unsigned long long)atomic_load(&m->finish_stop),
              (unsigned long long)atomic_load(&m->finish_length),
              (unsigned long long)atomic_load(&m->finish_error),
              (unsigned long long)atomic_load(&m->client_gone));
    render_counter(&b, "peftserve_rejected_busy_total", "generation requests refused with 503 (busy)",
                   atomic_load(&m->rejected_busy));
    render_hist(&b, "peftserve_request_duration_seconds", "generation request latency, receipt to last byte",
                m->latency_bucket, &m->latency_count, &m->latency_sum_us);
    render_hist(&b, "peftserve_time_to_first_token_seconds", "receipt to the first generated token",
                m->ttft_bucket, &m->ttft_count, &m->ttft_sum_us);
    if (extra) sb_printf(&b, "%s", extra);
    if (b.failed) { free(b.p); return -1; }
    *out = b.p;
    return (long)b.n;
}
