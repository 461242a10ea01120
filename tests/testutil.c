/* Test helpers; see testutil.h. */
#include "testutil.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/safetensors.h"
#include "ops.h"

int tu_failures = 0;

static char tu_root[4096];

const char *tu_fixtures_or_skip(const char *sub) {
    const char *env = getenv("PEFTSERVE_FIXTURES");
    if (!env || !*env) env = getenv("PS_FIXTURES_DEFAULT");
    if (!env || !*env) env = "../shared/fixtures";
    snprintf(tu_root, sizeof tu_root, "%s", env);
    struct stat st;
    char probe[4200];
    snprintf(probe, sizeof probe, "%s/%s", tu_root, sub ? sub : "");
    if (stat(probe, &st) != 0) {
        printf("SKIP: fixtures not found at '%s' (set PEFTSERVE_FIXTURES)\n", probe);
        exit(TU_SKIP);
    }
    return tu_root;
}

const char *tu_path(const char *rel) {
    static char bufs[8][4200];
    static int next = 0;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", tu_root, rel);
    return b;
}

tu_cmp tu_compare(const float *got, const float *want, int64_t n) {
    tu_cmp c = {0};
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)got[i] - (double)want[i];
        num += d * d;
        den += (double)want[i] * want[i];
        if (fabs(d) > c.max_abs || isnan(d)) {
            c.max_abs = isnan(d) ? INFINITY : fabs(d);
            c.max_index = i;
        }
        if (got[i] > got[c.argmax_a]) c.argmax_a = i;
        if (want[i] > want[c.argmax_b]) c.argmax_b = i;
    }
    c.rel_l2 = den > 0 ? sqrt(num / den) : sqrt(num);
    if (isnan(c.rel_l2)) c.rel_l2 = INFINITY;
    return c;
}

void tu_print_diff(const char *what, const float *got, const float *want, int64_t n) {
    tu_cmp c = tu_compare(got, want, n);
    fprintf(stderr, "  %s: rel_l2 %.3g max_abs %.3g at %lld (got %.7g want %.7g)\n", what,
            c.rel_l2, c.max_abs, (long long)c.max_index, got[c.max_index], want[c.max_index]);
    for (int64_t i = 0; i < n && i < 4; i++)
        fprintf(stderr, "    [%lld] got %.7g want %.7g\n", (long long)i, got[i], want[i]);
}

char *tu_read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *b = NULL;
    long len = -1;
    if (fseek(f, 0, SEEK_END) == 0) len = ftell(f);
    if (len >= 0 && fseek(f, 0, SEEK_SET) == 0) b = malloc((size_t)len + 1);
    if (b && fread(b, 1, (size_t)len, f) != (size_t)len) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (!b) return NULL;
    b[len] = 0;
    *n = (size_t)len;
    return b;
}

json_t *tu_load_json(const char *rel) {
    json_error_t je;
    json_t *root = json_load_file(tu_path(rel), 0, &je);
    if (!root) {
        fprintf(stderr, "%s: line %d: %s\n", rel, je.line, je.text);
        exit(1);
    }
    return root;
}

int tu_json_ids(const json_t *arr, int32_t *out, int cap) {
    int n = (int)json_array_size(arr);
    if (n > cap) {
        fprintf(stderr, "token id list of %d entries, room for %d\n", n, cap);
        exit(1);
    }
    for (int t = 0; t < n; t++) out[t] = (int32_t)json_integer_value(json_array_get(arr, (size_t)t));
    return n;
}

void tu_rand_fill(float *x, int64_t n, uint64_t seed) {
    uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        x[i] = (float)((double)(s >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
    }
}

int tu_finish(const char *name) {
    if (tu_failures) {
        printf("%s: %d check(s) failed\n", name, tu_failures);
        return 1;
    }
    printf("%s: ok\n", name);
    return 0;
}

const char *tu_device_name(void) {
    const char *d = getenv("PS_TEST_DEVICE");
    return d && *d ? d : "cpu";
}

double tu_logits_tol(double f32_tol) {
    const char *lin = getenv("PS_CUDA_LINEAR");
    if (strcmp(tu_device_name(), "cuda") != 0 || (lin && strcmp(lin, "gemv") == 0)) return f32_tol;
    return f32_tol > 2e-2 ? f32_tol : 2e-2;
}

struct ps_backend *tu_backend_create(void) {
    ps_backend *be = NULL;
    ps_err err = {0};
    ps_status s;
    if (strcmp(tu_device_name(), "cuda") == 0) {
        s = ps_backend_cuda_create(0, &be, &err);
        if (s != PS_OK) {
            printf("SKIP: PS_TEST_DEVICE=cuda but no CUDA backend: %s\n", err.msg);
            exit(TU_SKIP);
        }
    } else {
        s = ps_backend_cpu_create(2, &be, &err);
        if (s != PS_OK) {
            fprintf(stderr, "cannot create the cpu backend: %s\n", err.msg);
            exit(1);
        }
    }
    return be;
}

void tu_rm_dir(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[4096];
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    if (d) closedir(d);
    rmdir(dir);
}

const float *tu_ref_f32(st_set *s, const char *name, int64_t numel) {
    const st_tensor *t = st_find(s, name);
    if (!t || t->dtype != ST_F32 || st_numel(t) != numel) {
        fprintf(stderr, "reference tensor '%s' missing or malformed\n", name);
        exit(1);
    }
    return t->data;
}
