/* Harness of the CUDA parity tests (tests/gpu/test_cuda_*.c): both backends,
 * device buffers with guard bytes and NaN poison, and comparisons of a CUDA
 * result with the CPU oracle's that print the measured error of every case
 * (the logs of tests/gpu/run.sh are where the tolerance table's numbers come
 * from).
 *
 *   gu_init();                                   // exits 77 without a GPU
 *   gu_buf x = gu_upload(hx, n * 4), y = gu_poisoned(m * 4);
 *   ... op_xxx(gu_gpu, ...) ...
 *   gu_download(&y, hy); gu_guard_check(&y, "y");
 *   gu_check("op T=3", hy, want, m, 1e-6);
 *   gu_free(&x); gu_free(&y);
 *   return gu_finish("cuda ops");
 */
#ifndef PS_GPU_UTIL_H
#define PS_GPU_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cuda/cuda_ext.h"
#include "ops.h"
#include "testutil.h"

extern ps_backend *gu_cpu, *gu_gpu;
extern ps_err gu_err;

/* Creates the CPU backend (2 threads) and CUDA device 0; prints the device and
 * exits 77 when the CUDA backend cannot start. Turns on sync_each_op so an
 * error is reported by the op that caused it. */
void gu_init(void);
int gu_finish(const char *name); /* destroys the backends, prints the verdict */

/* A device buffer of n bytes followed by GU_GUARD bytes of a fixed pattern. */
#define GU_GUARD 256
typedef struct {
    void *d;
    size_t n;
} gu_buf;
gu_buf gu_upload(const void *h, size_t n); /* n bytes copied */
gu_buf gu_poisoned(size_t n);              /* all bytes 0xFF: NaN as float */
void gu_download(const gu_buf *b, void *h);
void gu_guard_check(const gu_buf *b, const char *what);
void gu_free(gu_buf *b);

/* Host helpers. gu_rand: n uniform floats in [-scale, scale) (never all zero).
 * gu_to_dtype: a malloc'd copy of f in F32/F16/BF16 (shared half.h rounding).
 * gu_round_dtype: f rounded through that dtype in place (what the device sees). */
float *gu_rand(int64_t n, uint64_t seed, float scale);
void *gu_to_dtype(const float *f, int64_t n, ps_dtype dt);
void gu_round_dtype(float *f, int64_t n, ps_dtype dt);

/* got (device result) vs want (oracle): every element finite, rel_l2 <= tol
 * (tol == 0: bit-identical). Prints one line per case with the measured error. */
void gu_check(const char *what, const float *got, const float *want, int64_t n, double tol);
/* Status check with the message on failure. */
#define GU_OK(call, what)                                                              \
    do {                                                                               \
        ps_status s_ = (call);                                                         \
        TU_CHECK(s_ == PS_OK, "%s: %s (%s)", what, ps_status_name(s_), gu_err.msg);   \
    } while (0)

/* Forces the linear / attention path of the CUDA backend. */
void gu_set_paths(int linear_path, int attn_path);

#endif
