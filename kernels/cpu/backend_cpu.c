/* The CPU backend: host memory, a small fork-join thread pool, and the op
 * table. Workers sleep on a condition variable between parallel regions; the
 * calling thread takes chunk 0 so a 1-thread pool has no handoff at all. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "cpu_backend.h"

#define CPU_MAX_THREADS 256

typedef struct cpu_impl cpu_impl;
typedef struct {
    cpu_impl *p;
    int index;
} cpu_worker_arg;

struct cpu_impl {
    ps_backend be;
    int n_threads;
    pthread_t threads[CPU_MAX_THREADS];
    pthread_mutex_t mu;
    pthread_cond_t start, done;
    uint64_t generation; /* bumped per parallel region */
    int pending;         /* workers still running the current region */
    bool stop;
    /* the current region */
    cpu_range_fn fn;
    void *ctx;
    int64_t n;
    cpu_worker_arg args[CPU_MAX_THREADS];
};

static void run_chunk(cpu_impl *p, int index) {
    int64_t per = (p->n + p->n_threads - 1) / p->n_threads;
    int64_t b = per * index, e = b + per < p->n ? b + per : p->n;
    if (b < e) p->fn(p->ctx, b, e);
}

static void *worker_main(void *arg) {
    cpu_worker_arg *a = arg;
    cpu_impl *p = a->p;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->generation == seen) pthread_cond_wait(&p->start, &p->mu);
        if (p->stop) break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        run_chunk(p, a->index);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

void cpu_parallel_for(ps_backend *be, int64_t n, cpu_range_fn fn, void *ctx) {
    cpu_impl *p = be->impl;
    if (n <= 0) return;
    if (p->n_threads == 1 || n == 1) {
        fn(ctx, 0, n);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->pending = p->n_threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    run_chunk(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

int cpu_threads(ps_backend *be) { return ((cpu_impl *)be->impl)->n_threads; }

static ps_status cpu_alloc(ps_backend *be, size_t n, void **out, ps_err *err) {
    /* 64-byte alignment: whole cache lines and aligned AVX-512 loads */
    size_t rounded = (n + 63) & ~(size_t)63;
    *out = aligned_alloc(64, rounded);
    if (!*out) return ps_errf(err, PS_ENOMEM, "cpu: cannot allocate %zu bytes", n);
    return PS_OK;
}
static void cpu_free(ps_backend *be, void *ptr) { free(ptr); }
static ps_status cpu_copy(ps_backend *be, void *dst, const void *src, size_t n, ps_err *err) {
    memmove(dst, src, n);
    return PS_OK;
}

static void cpu_destroy(ps_backend *be) {
    cpu_impl *p = be->impl;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n_threads; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->start);
    pthread_cond_destroy(&p->done);
    free(p);
}

ps_status ps_backend_cpu_create(int threads, ps_backend **out, ps_err *err) {
    *out = NULL;
    if (threads <= 0) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1) threads = 1;
    if (threads > CPU_MAX_THREADS) threads = CPU_MAX_THREADS;
    cpu_impl *p = calloc(1, sizeof *p);
    if (!p) return ps_errf(err, PS_ENOMEM, "cpu: cannot allocate the backend");
    p->n_threads = threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start, NULL);
    pthread_cond_init(&p->done, NULL);
    ps_backend *be = &p->be;
    be->name = "cpu";
    be->dev = PS_DEV_CPU;
    be->impl = p;
    be->alloc = cpu_alloc;
    be->free = cpu_free;
    be->upload = cpu_copy;
    be->download = cpu_copy;
    be->destroy = cpu_destroy;
    be->embed = cpu_embed;
    be->linear = cpu_linear;
    be->add_bias = cpu_add_bias;
    be->rmsnorm = cpu_rmsnorm;
    be->layernorm = cpu_layernorm;
    be->rope = cpu_rope;
    be->kv_store = cpu_kv_store;
    be->attention = cpu_attention;
    be->attention_dense = cpu_attention_dense;
    be->silu_mul = cpu_silu_mul;
    be->activate = cpu_activate;
    be->add = cpu_add;
    be->gather_rows = cpu_gather_rows;
    be->lora_bgmv = cpu_lora_bgmv;
    for (int i = 1; i < threads; i++) {
        cpu_worker_arg *a = &p->args[i];
        a->p = p;
        a->index = i;
        if (pthread_create(&p->threads[i], NULL, worker_main, a) != 0) {
            p->n_threads = i; /* run with what started */
            PS_LOG_WARN("cpu", "started only %d of %d threads", i, threads);
            break;
        }
    }
    *out = be;
    return PS_OK;
}
