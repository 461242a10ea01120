/* The CPU backend: host memory, a small fork-join thread pool, and the op
 * table. The calling thread takes chunk 0, so a 1-thread pool has no handoff.
 *
 * Handoffs spin briefly before sleeping: a decode step runs a few hundred
 * parallel regions of tens of microseconds each, and a condition-variable
 * wake-up costs about as much as the region itself. Workers spin for
 * CPU_SPIN_NS after their last region (then sleep on `start`), the caller
 * spins for the stragglers (then sleeps on `done`); an idle server sleeps. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "cpu_backend.h"

#define CPU_MAX_THREADS 256
#define CPU_SPIN_NS 200000 /* 0.2 ms: covers the gap between two ops of a step */

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
    _Atomic uint64_t generation; /* bumped per parallel region (release: publishes fn/ctx/n) */
    atomic_int pending;          /* workers still running the current region */
    atomic_bool stop;
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

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Spins until cond(p) holds or CPU_SPIN_NS pass; true when it holds. */
static bool spin_until(cpu_impl *p, bool (*cond)(cpu_impl *, uint64_t), uint64_t arg) {
    int64_t deadline = 0;
    for (int i = 0;; i++) {
        if (cond(p, arg)) return true;
        if ((i & 255) == 255) {
            int64_t t = now_ns();
            if (!deadline) deadline = t + CPU_SPIN_NS;
            else if (t > deadline) return false;
        }
        cpu_relax();
    }
}

static bool new_region(cpu_impl *p, uint64_t seen) {
    return atomic_load_explicit(&p->generation, memory_order_acquire) != seen ||
           atomic_load_explicit(&p->stop, memory_order_relaxed);
}

static bool all_done(cpu_impl *p, uint64_t unused) {
    (void)unused;
    return atomic_load_explicit(&p->pending, memory_order_acquire) == 0;
}

static void *worker_main(void *arg) {
    cpu_worker_arg *a = arg;
    cpu_impl *p = a->p;
    uint64_t seen = 0;
    for (;;) {
        if (!spin_until(p, new_region, seen)) {
            pthread_mutex_lock(&p->mu);
            while (!new_region(p, seen)) pthread_cond_wait(&p->start, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) break;
        seen = atomic_load_explicit(&p->generation, memory_order_acquire);
        run_chunk(p, a->index);
        if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
            /* last one: wake the caller if it stopped spinning */
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

void cpu_parallel_for(ps_backend *be, int64_t n, cpu_range_fn fn, void *ctx) {
    cpu_impl *p = be->impl;
    if (n <= 0) return;
    if (p->n_threads == 1 || n == 1) {
        fn(ctx, 0, n);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    atomic_store_explicit(&p->pending, p->n_threads - 1, memory_order_relaxed);
    /* the lock orders the bump against a worker between its check and its wait */
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    run_chunk(p, 0);
    if (!spin_until(p, all_done, 0)) {
        pthread_mutex_lock(&p->mu);
        while (!all_done(p, 0)) pthread_cond_wait(&p->done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
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
    atomic_store(&p->stop, true);
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
    be->add_rmsnorm = cpu_add_rmsnorm;
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
