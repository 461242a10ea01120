/* Shared helpers for the C tests: fixture lookup with a clean skip, numeric
 * comparison with the metrics STYLE.md asks for, and a failure counter.
 *
 *   const char *fx = tu_fixtures_or_skip();          // exits 77 when absent
 *   tu_cmp c = tu_compare(got, want, n);              // rel_l2, max_abs, argmax
 *   TU_CHECK(c.rel_l2 < 2e-5, "logits rel_l2 %.3g", c.rel_l2);
 *   return tu_finish("llama parity");
 */
#ifndef PS_TESTUTIL_H
#define PS_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define TU_SKIP 77

extern int tu_failures;

/* $PEFTSERVE_FIXTURES, else ../shared/fixtures beside the repo; exits 77 with a
 * message when the folder (or `sub` inside it, if not NULL) is missing. The
 * returned path is static. */
const char *tu_fixtures_or_skip(const char *sub);
/* Joins fixtures root and a relative path into a static rotating buffer. */
const char *tu_path(const char *rel);

typedef struct {
    double rel_l2;      /* ||a-b|| / ||b|| accumulated in double */
    double max_abs;     /* max |a-b| */
    int64_t max_index;  /* where max_abs is */
    int64_t argmax_a, argmax_b;
} tu_cmp;
tu_cmp tu_compare(const float *got, const float *want, int64_t n);
/* Prints the first few pairs and the worst one (for failure messages). */
void tu_print_diff(const char *what, const float *got, const float *want, int64_t n);

/* The backend tests run on: $PS_TEST_DEVICE = cpu (default) or cuda. With
 * cuda and no usable GPU it prints why and exits 77 (skip). Threads: 2. */
struct ps_backend;
struct ps_backend *tu_backend_create(void);
/* "cpu" or "cuda": what tu_backend_create gives. */
const char *tu_device_name(void);
/* Logit tolerance (rel L2) for the backend in use: f32_tol on the CPU and on
 * CUDA with PS_CUDA_LINEAR=gemv (f32 arithmetic everywhere). Otherwise CUDA
 * runs the linear layers of steps over 32 tokens in bf16 through cuBLAS
 * (x and W rounded to bf16): measured on llama-tiny up to 7.7e-3 for NF4
 * logits and 9.4e-4 for F16 weights (kernels run in a CPU emulation; fixture
 * README: bf16 <= 7e-2), so 2e-2, never below f32_tol. */
double tu_logits_tol(double f32_tol);

/* Reads a whole file into a malloc'd, NUL-terminated buffer (*n = its size);
 * NULL when it cannot be opened or read completely. */
char *tu_read_file(const char *path, size_t *n);

/* The F32 reference tensor `name` of numel elements from a fixture's
 * safetensors file; prints which and exits 1 when missing or malformed. */
struct st_set;
const float *tu_ref_f32(struct st_set *s, const char *name, int64_t numel);

/* Removes a flat folder of test files (its files, then the folder); quiet
 * when it is already gone. */
void tu_rm_dir(const char *dir);

/* Parses a JSON file of the fixtures (tu_path(rel)); on failure prints the
 * parser's line and message and exits 1. */
json_t *tu_load_json(const char *rel);
/* Copies a JSON array of integers (token ids) into out; exits 1 when it holds
 * more than cap. Returns the count. */
int tu_json_ids(const json_t *arr, int32_t *out, int cap);

/* Deterministic uniform random floats in [-1, 1) (never all zeros). */
void tu_rand_fill(float *x, int64_t n, uint64_t seed);

#define TU_CHECK(cond, ...)                                                     \
    do {                                                                        \
        if (!(cond)) {                                                          \
            tu_failures++;                                                      \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);               \
            fprintf(stderr, __VA_ARGS__);                                       \
            fprintf(stderr, "\n");                                              \
        }                                                                       \
    } while (0)

/* Prints "<name>: N failed" or "ok" and returns the process exit code. */
int tu_finish(const char *name);

#endif
