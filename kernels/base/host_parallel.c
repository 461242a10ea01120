/* host_parallel_for: one pthread per range, joined before returning (see
 * host_parallel.h). */
#include "host_parallel.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#define HOST_MAX_THREADS 64

typedef struct {
    host_range_fn fn;
    void *ctx;
    int64_t i0, i1;
} host_range;

static void *host_range_run(void *arg) {
    host_range *r = arg;
    r->fn(r->ctx, r->i0, r->i1);
    return NULL;
}

int host_parallel_threads(void) {
    const char *env = getenv("PS_HOST_THREADS");
    long n = env && *env ? strtol(env, NULL, 10) : sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    return n > HOST_MAX_THREADS ? HOST_MAX_THREADS : (int)n;
}

void host_parallel_for(int64_t n, int64_t grain, host_range_fn fn, void *ctx) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    int64_t nt = host_parallel_threads();
    if (nt > (n + grain - 1) / grain) nt = (n + grain - 1) / grain;
    if (nt <= 1) {
        fn(ctx, 0, n);
        return;
    }
    host_range r[HOST_MAX_THREADS];
    pthread_t th[HOST_MAX_THREADS];
    int started[HOST_MAX_THREADS];
    for (int64_t t = 0; t < nt; t++) {
        r[t] = (host_range){fn, ctx, n * t / nt, n * (t + 1) / nt};
        /* range 0 runs on the caller; a failed create runs inline too */
        started[t] = t > 0 && pthread_create(&th[t], NULL, host_range_run, &r[t]) == 0;
    }
    for (int64_t t = 0; t < nt; t++)
        if (!started[t]) host_range_run(&r[t]);
    for (int64_t t = 1; t < nt; t++)
        if (started[t]) pthread_join(th[t], NULL);
}
