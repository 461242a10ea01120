/* Harness of the CUDA parity tests; see gpu_util.h. */
#include "gpu_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "math/half.h"

ps_backend *gu_cpu, *gu_gpu;
ps_err gu_err;

static void gu_die(const char *what) {
    fprintf(stderr, "FATAL: %s: %s (%s)\n", what, ps_status_name(gu_err.code), gu_err.msg);
    exit(1);
}

void gu_init(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (ps_backend_cpu_create(2, &gu_cpu, &gu_err) != PS_OK) gu_die("cpu backend");
    if (ps_backend_cuda_create(0, &gu_gpu, &gu_err) != PS_OK) {
        printf("SKIP: no CUDA backend: %s\n", gu_err.msg);
        exit(TU_SKIP);
    }
    ps_cuda_info info;
    if (ps_cuda_get_info(gu_gpu, &info, &gu_err) != PS_OK) gu_die("cuda info");
    printf("device: %s, %d SMs, cc %d.%d, %.1f GiB\n", info.name, info.sm_count, info.cc_major,
           info.cc_minor, info.total_mem / 1073741824.0);
    ps_cuda_tuning t;
    if (ps_cuda_get_tuning(gu_gpu, &t, &gu_err) != PS_OK) gu_die("cuda tuning");
    t.sync_each_op = true;
    if (ps_cuda_set_tuning(gu_gpu, &t, &gu_err) != PS_OK) gu_die("cuda tuning");
}

int gu_finish(const char *name) {
    if (ps_cuda_health(gu_gpu, &gu_err) != PS_OK) {
        tu_failures++;
        fprintf(stderr, "FAIL: the CUDA backend is unhealthy at the end: %s\n", gu_err.msg);
    }
    ps_backend_destroy(gu_gpu);
    ps_backend_destroy(gu_cpu);
    return tu_finish(name);
}

void gu_set_paths(int linear_path, int attn_path) {
    ps_cuda_tuning t;
    if (ps_cuda_get_tuning(gu_gpu, &t, &gu_err) != PS_OK) gu_die("cuda tuning");
    t.linear_path = linear_path;
    t.attn_path = attn_path;
    if (ps_cuda_set_tuning(gu_gpu, &t, &gu_err) != PS_OK) gu_die("cuda tuning");
}

static unsigned char gu_guard_byte(size_t i) { return (unsigned char)(0xA5 ^ (i * 31)); }

static gu_buf gu_alloc(size_t n) {
    gu_buf b = {NULL, n};
    if (ps_buf_alloc(gu_gpu, n + GU_GUARD, &b.d, &gu_err) != PS_OK) gu_die("device alloc");
    unsigned char g[GU_GUARD];
    for (size_t i = 0; i < GU_GUARD; i++) g[i] = gu_guard_byte(i);
    if (ps_buf_upload(gu_gpu, (char *)b.d + n, g, GU_GUARD, &gu_err) != PS_OK) gu_die("guard upload");
    return b;
}

gu_buf gu_upload(const void *h, size_t n) {
    gu_buf b = gu_alloc(n);
    if (ps_buf_upload(gu_gpu, b.d, h, n, &gu_err) != PS_OK) gu_die("upload");
    return b;
}

gu_buf gu_poisoned(size_t n) {
    gu_buf b = gu_alloc(n);
    unsigned char *p = malloc(n ? n : 1);
    if (!p) gu_die("host alloc");
    memset(p, 0xFF, n);
    if (ps_buf_upload(gu_gpu, b.d, p, n, &gu_err) != PS_OK) gu_die("upload");
    free(p);
    return b;
}

void gu_download(const gu_buf *b, void *h) {
    ps_status s = ps_buf_download(gu_gpu, h, b->d, b->n, &gu_err);
    TU_CHECK(s == PS_OK, "download: %s", gu_err.msg);
}

void gu_guard_check(const gu_buf *b, const char *what) {
    unsigned char g[GU_GUARD];
    if (ps_buf_download(gu_gpu, g, (char *)b->d + b->n, GU_GUARD, &gu_err) != PS_OK) {
        TU_CHECK(0, "%s: guard download: %s", what, gu_err.msg);
        return;
    }
    for (size_t i = 0; i < GU_GUARD; i++)
        if (g[i] != gu_guard_byte(i)) {
            TU_CHECK(0, "%s: guard byte %zu after the %zu-byte output overwritten", what, i, b->n);
            return;
        }
}

void gu_free(gu_buf *b) {
    ps_buf_free(gu_gpu, b->d);
    b->d = NULL;
}

float *gu_rand(int64_t n, uint64_t seed, float scale) {
    float *f = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (!f) gu_die("host alloc");
    tu_rand_fill(f, n, seed);
    for (int64_t i = 0; i < n; i++) f[i] *= scale;
    return f;
}

void *gu_to_dtype(const float *f, int64_t n, ps_dtype dt) {
    size_t es = ps_dtype_size(dt);
    void *o = malloc(es * (size_t)(n ? n : 1));
    if (!o) gu_die("host alloc");
    for (int64_t i = 0; i < n; i++) {
        if (dt == PS_DT_F32) ((float *)o)[i] = f[i];
        else if (dt == PS_DT_F16) ((uint16_t *)o)[i] = ps_f32_to_f16(f[i]);
        else ((uint16_t *)o)[i] = ps_f32_to_bf16(f[i]);
    }
    return o;
}

void gu_round_dtype(float *f, int64_t n, ps_dtype dt) {
    for (int64_t i = 0; i < n; i++) {
        if (dt == PS_DT_F16) f[i] = ps_f16_to_f32(ps_f32_to_f16(f[i]));
        else if (dt == PS_DT_BF16) f[i] = ps_bf16_to_f32(ps_f32_to_bf16(f[i]));
    }
}

void gu_check(const char *what, const float *got, const float *want, int64_t n, double tol) {
    int64_t bad = -1;
    for (int64_t i = 0; i < n && bad < 0; i++)
        if (!isfinite(got[i])) bad = i;
    if (bad >= 0) {
        TU_CHECK(0, "%s: element %lld is %g (unwritten or overflow; want %g)", what, (long long)bad,
                 got[bad], want[bad]);
        return;
    }
    tu_cmp c = tu_compare(got, want, n);
    bool ok = tol == 0 ? memcmp(got, want, sizeof(float) * (size_t)n) == 0 : c.rel_l2 <= tol;
    printf("  %-58s rel_l2 %.3e max_abs %.3e (tol %.1e) %s\n", what, c.rel_l2, c.max_abs, tol,
           ok ? "ok" : "FAIL");
    TU_CHECK(ok, "%s: rel_l2 %.3g max_abs %.3g at %lld over tol %.3g", what, c.rel_l2, c.max_abs,
             (long long)c.max_index, tol);
    if (!ok) tu_print_diff(what, got, want, n);
}
