/* Extras of the CUDA backend beyond the op table: device facts, health (the
 * sticky error), path selection for tests and benchmarks, and a device
 * bandwidth probe. Declared only when the build has CUDA (PS_HAVE_CUDA);
 * callers guard with #ifdef PS_HAVE_CUDA. Every function checks that `be` is
 * a CUDA backend and answers PS_EINVAL otherwise.
 *
 * Usage (a test forcing the cuBLAS path of op_linear):
 *   ps_cuda_tuning t; ps_cuda_get_tuning(be, &t);
 *   t.linear_path = PS_CUDA_LINEAR_GEMM; ps_cuda_set_tuning(be, &t, &err);
 */
#ifndef PS_CUDA_EXT_H
#define PS_CUDA_EXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ops.h"

typedef enum {
    PS_CUDA_LINEAR_AUTO = 0, /* GEMV up to gemv_max_t rows, else dequantise + cuBLAS */
    PS_CUDA_LINEAR_GEMV,     /* always the fused decode GEMV (in chunks of 8 rows) */
    PS_CUDA_LINEAR_GEMM,     /* always dequantise to 16 bits + cuBLAS */
} ps_cuda_linear_path;

typedef enum {
    PS_CUDA_ATTN_AUTO = 0, /* query-tile kernel when tokens average >= 4 per sequence */
    PS_CUDA_ATTN_DECODE,   /* one block per (token, head), warps split the keys */
    PS_CUDA_ATTN_PREFILL,  /* query tiles sharing K/V tiles in shared memory */
} ps_cuda_attn_path;

typedef struct {
    int linear_path; /* ps_cuda_linear_path */
    int gemv_max_t;  /* AUTO: rows (tokens) up to which the GEMV path is used */
    int attn_path;   /* ps_cuda_attn_path */
    bool sync_each_op; /* wait after every op so an error names its op (slow; tests) */
    int gemv_kernel;   /* NF4 GEMV fast-kernel configuration: 0 .. ps_cuda_gemv_count() - 1 */
} ps_cuda_tuning;

/* NF4 GEMV configurations (kernels/cuda/nf4_gemv.cu): "v2" (index
 * PS_CUDA_GEMV_DEFAULT), "v1", v1r<R>, v2w<W>r<R>, v3r<R>u<U>,
 * v4s<S>[w<W>]r<R>u<U> (R rows per warp, W warps per block, U chunks per
 * lane in flight; v4 splits K over S blocks, s0: S chosen from the SM count
 * and the shape). Host-only, need no backend. ps_cuda_gemv_name: NULL out of
 * range; ps_cuda_gemv_find: -1 when unknown. */
#define PS_CUDA_GEMV_DEFAULT 0
int ps_cuda_gemv_count(void);
const char *ps_cuda_gemv_name(int k);
int ps_cuda_gemv_find(const char *name);

/* Defaults come from the environment at create time: PS_CUDA_LINEAR=auto|gemv|gemm,
 * PS_CUDA_GEMV_MAX_T=<n>, PS_CUDA_ATTN=auto|decode|prefill, PS_CUDA_SYNC=1,
 * PS_CUDA_GEMV=<configuration name> (see below; an unknown name keeps the default and
 * logs a warning). */
ps_status ps_cuda_get_tuning(ps_backend *be, ps_cuda_tuning *out, ps_err *err);
ps_status ps_cuda_set_tuning(ps_backend *be, const ps_cuda_tuning *t, ps_err *err);

typedef struct {
    char name[256];
    int device, sm_count, cc_major, cc_minor;
    size_t total_mem, free_mem, l2_bytes;
} ps_cuda_info;
ps_status ps_cuda_get_info(ps_backend *be, ps_cuda_info *out, ps_err *err);

/* PS_OK while healthy; after a sticky device error, PS_EDEVICE and its message. */
ps_status ps_cuda_health(ps_backend *be, ps_err *err);

/* Measures device read bandwidth: a kernel reads `bytes` (>= 1 GiB advised)
 * `reps` times after one warm-up; *gbps = bytes read per second / 1e9 (median). */
ps_status ps_cuda_read_bandwidth(ps_backend *be, size_t bytes, int reps, double *gbps,
                                 ps_err *err);

/* Fills n bytes of device memory with a fast counter-hash of `seed` (for
 * benchmark weights: any byte pattern is a valid NF4 code pair). */
ps_status ps_cuda_fill_random_bytes(ps_backend *be, void *dst, size_t n, uint64_t seed,
                                    ps_err *err);

/* Device time of the stream between two marks, in milliseconds (CUDA events).
 * ps_cuda_timer_start records, ps_cuda_timer_stop records, waits and reads. */
typedef struct ps_cuda_timer ps_cuda_timer;
ps_status ps_cuda_timer_start(ps_backend *be, ps_cuda_timer **t, ps_err *err);
ps_status ps_cuda_timer_stop(ps_backend *be, ps_cuda_timer *t, double *ms, ps_err *err);

#endif
