/* host_parallel_for: splits [0, n) into contiguous ranges run on short-lived
 * threads, for one-off host work at load time (random benchmark weights, NF4
 * quantisation of a checkpoint). Not for the serving path: the CPU backend
 * has its own persistent pool (kernels/cpu/cpu_backend.h) and this spawns
 * threads on every call.
 *
 * Results must not depend on the thread count: fn gets disjoint ranges and
 * writes disjoint outputs; anything order-sensitive (sums) stays with the
 * caller. Threads: PS_HOST_THREADS when set (1 = run inline), else the online
 * CPUs, at most 64; each range is at least `grain` items. If a thread cannot
 * be created its range runs on the caller, so the call always completes.
 *
 *   static void fill(void *ctx, int64_t i0, int64_t i1) { ... }
 *   host_parallel_for(rows, 16, fill, &ctx);
 */
#ifndef PS_HOST_PARALLEL_H
#define PS_HOST_PARALLEL_H

#include <stdint.h>

typedef void (*host_range_fn)(void *ctx, int64_t i0, int64_t i1);

/* Number of threads host_parallel_for would use for a large n. */
int host_parallel_threads(void);
void host_parallel_for(int64_t n, int64_t grain, host_range_fn fn, void *ctx);

#endif
