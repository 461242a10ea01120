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
#include <stdio.h>

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
    PS_CUDA_ATTN_SPLIT,    /* decode kernel with the keys split over several blocks (>= 2) */
} ps_cuda_attn_path;

typedef enum {
    PS_CUDA_LORA_AUTO = 0, /* SGMV for runs of one adapter over >= 64 tokens, else BGMV */
    PS_CUDA_LORA_BGMV,     /* one block per token: every token gathers its own adapter */
    PS_CUDA_LORA_SGMV,     /* tiles of 8 tokens sharing each load of A and B */
} ps_cuda_lora_path;

typedef struct {
    int linear_path; /* ps_cuda_linear_path */
    int gemv_max_t;  /* AUTO: rows (tokens) up to which the GEMV path is used */
    int attn_path;   /* ps_cuda_attn_path */
    bool sync_each_op; /* wait after every op so an error names its op (slow; tests) */
    int gemv_kernel;   /* NF4 GEMV fast-kernel configuration: 0 .. ps_cuda_gemv_count() - 1 */
    bool graphs;       /* record steps as CUDA graphs and replay them (ops.h ps_graph_run) */
    bool pdl;          /* programmatic dependent launch: a kernel may start while the one
                        * before it finishes (cuda_common.cuh, cuda_launch) */
    bool fuse;         /* with v6: the add + RMSNorm before q/k/v and gate/up, and the silu
                        * * up after gate/up, inside their GEMV launch where they apply
                        * (ps_cuda_counters); false: separate kernels */
    int lora_path;     /* ps_cuda_lora_path: both give the same bits, only speed differs */
} ps_cuda_tuning;

/* NF4 GEMV configurations (kernels/cuda/nf4_gemv.cu): "auto" (index
 * PS_CUDA_GEMV_DEFAULT: the measured best per row count, v4s1r2u4 for 1-2
 * rows of x, v2 above), "v2", "v1", v1r<R>, v2w<W>r<R>,
 * v4s<S>[w<W>]r<R>u<U> (R rows per warp, W warps per block, U chunks per
 * lane in flight; v4 splits K over S blocks, s0: S chosen from the SM count
 * and the shape), v5w<W>r<R>u<U>p<P> (P: next step's loads ahead),
 * v6w<W>r<RT>u<U>[p1] (tensor cores, bf16 operands: RT tiles of 16 rows per
 * block of W warps splitting K, U 64-blocks in flight; p1: a persistent grid
 * of as many blocks as fit the chip, looping over the tiles). v4 without a split, v5 and
 * v6 run op_linear_n (q/k/v, gate/up) as one launch. Host-only, need no
 * backend. ps_cuda_gemv_name: NULL out of range; ps_cuda_gemv_find: -1 when
 * unknown. */
#define PS_CUDA_GEMV_DEFAULT 0
int ps_cuda_gemv_count(void);
const char *ps_cuda_gemv_name(int k);
int ps_cuda_gemv_find(const char *name);
/* Whether configuration k multiplies in bf16 (v6: x and the code values
 * rounded to bf16, f32 accumulation) rather than f32. */
bool ps_cuda_gemv_bf16(int k);
/* Rows of x one launch of configuration k takes (8; v6: 32): more rows are
 * chunks, each reading the weight again. 0 for k out of range. */
int ps_cuda_gemv_rows_per_launch(int k);

/* Defaults come from the environment at create time: PS_CUDA_LINEAR=auto|gemv|gemm,
 * PS_CUDA_GEMV_MAX_T=<n>, PS_CUDA_ATTN=auto|decode|prefill|split, PS_CUDA_SYNC=1,
 * PS_CUDA_GEMV=<configuration name> (see below; an unknown name keeps the default and
 * logs a warning), PS_CUDA_PDL=1 (programmatic dependent launch; off until timed on a GPU),
 * PS_CUDA_GRAPHS=0 (no step graphs; they are on by default: decode 1.11x at batch 1,
 * 1.04x at batch 32 on an H100), PS_CUDA_LORA=auto|bgmv|sgmv.
 * Setting the tuning drops every recorded step graph. */
ps_status ps_cuda_get_tuning(ps_backend *be, ps_cuda_tuning *out, ps_err *err);
ps_status ps_cuda_set_tuning(ps_backend *be, const ps_cuda_tuning *t, ps_err *err);

typedef struct {
    char name[256];
    int device, sm_count, cc_major, cc_minor;
    size_t total_mem, free_mem, l2_bytes;
} ps_cuda_info;
ps_status ps_cuda_get_info(ps_backend *be, ps_cuda_info *out, ps_err *err);

/* What the backend has launched so far, for tests and benchmarks. Kernel
 * counts are as issued by the host: a graph replay repeats its recorded
 * launches without counting them, so a step run op by op (or recorded) shows
 * how many kernels it costs. */
typedef struct {
    long long graph_records, graph_launches; /* step graphs recorded; graph launches (replays + first runs) */
    long long kernels;                       /* every kernel launch */
    long long fused_norm;                    /* v6 launches with the residual add + RMSNorm as their x
                                              * staging (op_add_rmsnorm_linear_n, _swiglu) */
    long long fused_glu;                     /* v6 launches of gate and up into silu(gate) * up
                                              * (op_add_rmsnorm_swiglu) */
    long long lora_sgmv;                     /* LoRA shrink + expand pairs run as SGMV tiles */
} ps_cuda_counters;
ps_status ps_cuda_get_counters(ps_backend *be, ps_cuda_counters *out, ps_err *err);

/* PS_OK while healthy; after a sticky device error, PS_EDEVICE and its message. */
ps_status ps_cuda_health(ps_backend *be, ps_err *err);

/* Measures device read bandwidth: a kernel reads `bytes` (>= 1 GiB advised)
 * `reps` times after one warm-up; *gbps = bytes read per second / 1e9 (median). */
ps_status ps_cuda_read_bandwidth(ps_backend *be, size_t bytes, int reps, double *gbps,
                                 ps_err *err);
/* us per kernel of iters back-to-back reads over `copies` rotated buffers of
 * `bytes` (the fixed cost of a small kernel; L2 vs DRAM). Benchmarks only. */
ps_status ps_cuda_read_probe(ps_backend *be, size_t bytes, int copies, int iters, double *us, ps_err *err);

/* Fills n bytes of device memory with a fast counter-hash of `seed` (for
 * benchmark weights: any byte pattern is a valid NF4 code pair). */
ps_status ps_cuda_fill_random_bytes(ps_backend *be, void *dst, size_t n, uint64_t seed,
                                    ps_err *err);

/* Device time of the stream between two marks, in milliseconds (CUDA events).
 * ps_cuda_timer_start records, ps_cuda_timer_stop records, waits and reads. */
typedef struct ps_cuda_timer ps_cuda_timer;
ps_status ps_cuda_timer_start(ps_backend *be, ps_cuda_timer **t, ps_err *err);
ps_status ps_cuda_timer_stop(ps_backend *be, ps_cuda_timer *t, double *ms, ps_err *err);

/* ---- per-op profiler (kernels/cuda/cuda_profile.cu) ----
 * When on, every non-NULL entry of the backend table except alloc, free and
 * destroy is wrapped: a CUDA event pair around the entry's launches gives its
 * device time, a host clock around the call its host time (the cost of
 * launching; for download and sync also the wait for the stream). Linear
 * calls are keyed by weight type, path and shape ("linear nf4 gemv
 * 4096x4096", "linear F16 gemv 32000x4096"). Pairs are read lazily: by
 * ps_cuda_profile_rows / _report, or when the ring of pairs fills (then the
 * oldest half is read, which the device has normally finished long ago, so
 * no wait happens inside a step; the report counts the reads that waited).
 * Off, the table holds the plain entries again: no cost at all.
 *
 * What a pair measures: from the device reaching the start mark to it
 * finishing the op's last launch. When the host is behind (the stream runs
 * dry between small decode kernels) that span also holds the host's launch of
 * the op itself. pad_us > 0 launches a one-thread spin kernel of pad_us
 * microseconds before each start mark, so the op's launches are queued before
 * the device reaches the mark and the pair is the op's device time alone.
 * The pads make the step slower: compare a padded profile with the wall time
 * of an unprofiled run, never with its own.
 *
 * PS_CUDA_PROFILE=1 at create turns it on (PS_CUDA_PROFILE_PAD_US=<n> sets
 * pad_us); the backend then logs the totals to stderr when destroyed.
 *
 * Usage:
 *   ps_cuda_profile_enable(be, true, NULL, &err);          // pad 0, ring 4096
 *   for (s = 0; s < n; s++) llama_forward(...);
 *   ps_cuda_profile_report(be, stdout, n, wall_ms_per_step, &err);
 *   ps_cuda_profile_enable(be, false, NULL, &err);
 */
typedef struct {
    int pad_us; /* 0..1000: spin before each op's start mark (0: none) */
    int ring;   /* event pairs pending before the oldest half is read: 2..65536; 0 = 4096 */
} ps_cuda_profile_opts;

#define PS_CUDA_PROFILE_NAME 48
typedef struct {
    char name[PS_CUDA_PROFILE_NAME]; /* "rmsnorm", "upload", "linear nf4 gemv 4096x4096" */
    int64_t calls;
    int64_t bytes;    /* upload / download: bytes copied; 0 otherwise */
    double device_ms; /* summed event-pair time (0 for sync: it launches nothing) */
    double host_ms;   /* summed host time inside the calls */
} ps_cuda_profile_row;

/* on: wraps the table, or when already on applies the new options; opts
 * NULL = defaults. off: reads what is pending into the totals and restores
 * the plain table. Totals add up across on and off until reset. */
ps_status ps_cuda_profile_enable(ps_backend *be, bool on, const ps_cuda_profile_opts *opts,
                                 ps_err *err);
/* Waits for the pairs pending, drops them and zeroes the totals. */
ps_status ps_cuda_profile_reset(ps_backend *be, ps_err *err);
/* Reads pending pairs (waits for the stream), then copies up to max rows in
 * the order they were first seen; *n = rows in total. *waits (may be NULL) =
 * ring reads that had to wait for the device. */
ps_status ps_cuda_profile_rows(ps_backend *be, ps_cuda_profile_row *rows, int max, int *n,
                               int64_t *waits, ps_err *err);
/* Prints rows by device time, as per-step averages over `steps` (steps < 1:
 * totals): op | calls | device us | % | host us, then the sums and, when
 * wall_ms_per_step > 0, the wall time and the device-idle rest (wall - sum of
 * device times); % is of the wall time, or of the summed device time when
 * wall_ms_per_step <= 0. */
ps_status ps_cuda_profile_report(ps_backend *be, FILE *f, int steps, double wall_ms_per_step,
                                 ps_err *err);

#endif
