/* NF4 + double quantisation against bitsandbytes, byte for byte.
 *
 * Fixture (shared/fixtures/llama-tiny, README section 6): every quantised
 * weight of model.safetensors (F16) is quantised here and its packed codes,
 * absmax, DQ codes, DQ scales, offset, dequantised absmax and both
 * dequantised weights must equal ref/nf4.safetensors exactly, as must the
 * compiled code tables (nf4.code, dq.code) and the unpacked codes of
 * model.layers.0.mlp.gate_proj. When ../llama-tiny-bnb4 is present, the
 * arrays bitsandbytes itself serialised there must match too.
 *
 * Random odd shapes (blocks spanning rows, odd element counts) are checked
 * against the rules written out independently here: absmax per block, the
 * midpoint count, torch.argmin over the dynamic map, the mean offset and the
 * dequantisation formulas. Bad input gets a precise error. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/safetensors.h"
#include "math/nf4.h"
#include "nf4_quant.h"
#include "testutil.h"

static ps_err err;

/* Byte comparison reporting the first differing element. */
static void same_bytes(const char *what, const void *got, const void *want, size_t n,
                       size_t elem) {
    const unsigned char *g = got, *w = want;
    for (size_t i = 0; i < n; i++)
        if (g[i] != w[i]) {
            TU_CHECK(0, "%s: element %zu differs (of %zu)", what, i / elem, n / elem);
            return;
        }
}

/* The fixture tensor `name` with the expected dtype and element count, or NULL. */
static const st_tensor *need(const st_set *s, const char *name, st_dtype dt, int64_t n) {
    const st_tensor *t = st_find(s, name);
    TU_CHECK(t != NULL, "fixture tensor '%s' missing", name);
    if (!t) return NULL;
    TU_CHECK(t->dtype == dt && st_numel(t) == n, "'%s': %s[%lld], expected %s[%lld]", name,
             st_dtype_name(t->dtype), (long long)st_numel(t), st_dtype_name(dt), (long long)n);
    return t->dtype == dt && st_numel(t) == n ? t : NULL;
}

static void cmp_tensor(const st_set *ref, const char *w, const char *suffix, const void *got,
                       st_dtype dt, int64_t n) {
    char name[512];
    snprintf(name, sizeof name, "%s.%s", w, suffix);
    const st_tensor *t = need(ref, name, dt, n);
    if (t) same_bytes(name, got, t->data, t->nbytes, st_dtype_size(dt));
}

static void check_tables(const st_set *ref) {
    const st_tensor *t = need(ref, "nf4.code", ST_F32, 16);
    if (t) same_bytes("nf4.code vs ps_nf4_code", ps_nf4_code, t->data, t->nbytes, 4);
    t = need(ref, "dq.code", ST_F32, 256);
    if (t) same_bytes("dq.code vs ps_dq_code", ps_dq_code, t->data, t->nbytes, 4);
}

/* One weight W (no ".weight" suffix): quantise the F16 model weight both ways. */
static void check_weight(const st_set *model, const st_set *ref, const char *w) {
    char name[512];
    snprintf(name, sizeof name, "%s.weight", w);
    const st_tensor *src = st_find(model, name);
    TU_CHECK(src && src->ndim == 2, "model tensor '%s' missing or not 2-d", name);
    if (!src || src->ndim != 2) return;
    int64_t out = src->shape[0], in = src->shape[1], n = out * in, nb = nf4_n_blocks(n);
    float *f = malloc(sizeof(float) * (size_t)n), *deq = malloc(sizeof(float) * (size_t)n);
    float *scales = malloc(sizeof(float) * (size_t)nb);
    nf4_host plain = {0}, dq = {0};
    TU_CHECK(st_to_f32(src, f, n, &err) == PS_OK, "%s: %s", name, err.msg);
    TU_CHECK(nf4_quantize(f, out, in, false, &plain, &err) == PS_OK, "%s: %s", w, err.msg);
    TU_CHECK(nf4_quantize(f, out, in, true, &dq, &err) == PS_OK, "%s: %s", w, err.msg);
    if (plain.packed && dq.packed) {
        cmp_tensor(ref, w, "packed", plain.packed, ST_U8, (n + 1) / 2);
        cmp_tensor(ref, w, "packed", dq.packed, ST_U8, (n + 1) / 2);
        cmp_tensor(ref, w, "absmax", plain.absmax, ST_F32, nb);
        cmp_tensor(ref, w, "absmax_q8", dq.absmax_q8, ST_U8, nb);
        cmp_tensor(ref, w, "absmax2", dq.absmax2, ST_F32, nf4_n_blocks2(n));
        cmp_tensor(ref, w, "offset", &dq.offset, ST_F32, 1);
        ps_nf4 v = nf4_host_view(&dq);
        for (int64_t b = 0; b < nb; b++) scales[b] = nf4_block_scale(&v, b);
        cmp_tensor(ref, w, "absmax_dq", scales, ST_F32, nb);
        nf4_dequantize(&v, deq);
        cmp_tensor(ref, w, "deq_dq", deq, ST_F32, n);
        v = nf4_host_view(&plain);
        nf4_dequantize(&v, deq);
        cmp_tensor(ref, w, "deq_nodq", deq, ST_F32, n);
        snprintf(name, sizeof name, "%s.codes", w);
        const st_tensor *codes = st_find(ref, name);
        if (codes && need(ref, name, ST_U8, n)) {
            uint8_t *c = malloc((size_t)n);
            for (int64_t i = 0; i < n; i++) c[i] = ps_nf4_code_at(dq.packed, i);
            same_bytes(name, c, codes->data, (size_t)n, 1);
            free(c);
        }
    }
    nf4_host_free(&plain);
    nf4_host_free(&dq);
    free(f), free(deq), free(scales);
}

/* What bitsandbytes wrote for W in the bnb-4bit checkpoint vs our arrays. */
static void check_bnb_weight(const st_set *model, const st_set *bnb, const char *w) {
    char name[512];
    snprintf(name, sizeof name, "%s.weight", w);
    const st_tensor *src = st_find(model, name);
    if (!src) return;
    int64_t out = src->shape[0], in = src->shape[1], n = out * in;
    float *f = malloc(sizeof(float) * (size_t)n);
    nf4_host q = {0};
    st_to_f32(src, f, n, &err);
    TU_CHECK(nf4_quantize(f, out, in, true, &q, &err) == PS_OK, "%s: %s", w, err.msg);
    if (q.packed) {
        cmp_tensor(bnb, name, "absmax", q.absmax_q8, ST_U8, nf4_n_blocks(n));
        cmp_tensor(bnb, name, "nested_absmax", q.absmax2, ST_F32, nf4_n_blocks2(n));
        cmp_tensor(bnb, name, "quant_map", ps_nf4_code, ST_F32, 16);
        cmp_tensor(bnb, name, "nested_quant_map", ps_dq_code, ST_F32, 256);
        const st_tensor *p = need(bnb, name, ST_U8, (n + 1) / 2); /* [n/2, 1] */
        if (p) same_bytes(name, q.packed, p->data, p->nbytes, 1);
        snprintf(name, sizeof name, "%s.weight.quant_state.bitsandbytes__nf4", w);
        const st_tensor *js = st_find(bnb, name);
        json_t *root = js ? json_loadb(js->data, js->nbytes, 0, NULL) : NULL;
        json_t *off = root ? json_object_get(root, "nested_offset") : NULL;
        TU_CHECK(json_is_real(off), "%s: no nested_offset", name);
        if (json_is_real(off))
            TU_CHECK((float)json_real_value(off) == q.offset, "%s: nested_offset %.9g, ours %.9g",
                     name, json_real_value(off), (double)q.offset);
        json_decref(root);
    }
    nf4_host_free(&q);
    free(f);
}

static void check_fixture(void) {
    tu_fixtures_or_skip("llama-tiny/ref/nf4.safetensors");
    st_set *model = NULL, *ref = NULL, *bnb = NULL;
    TU_CHECK(st_open(tu_path("llama-tiny/model.safetensors"), &model, &err) == PS_OK, "%s",
             err.msg);
    TU_CHECK(st_open(tu_path("llama-tiny/ref/nf4.safetensors"), &ref, &err) == PS_OK, "%s",
             err.msg);
    if (!model || !ref) goto done;
    if (st_open(tu_path("llama-tiny-bnb4/model.safetensors"), &bnb, &err) != PS_OK)
        printf("note: llama-tiny-bnb4 not checked: %s\n", err.msg);
    check_tables(ref);
    int weights = 0;
    for (int i = 0; i < st_count(ref); i++) {
        const char *nm = st_at(ref, i)->name;
        size_t len = strlen(nm);
        if (len < 7 || strcmp(nm + len - 7, ".packed") != 0) continue;
        char w[200];
        snprintf(w, sizeof w, "%.*s", (int)(len - 7), nm);
        check_weight(model, ref, w);
        if (bnb) check_bnb_weight(model, bnb, w);
        weights++;
    }
    /* q/k/v/o/gate/up/down in 2 layers (README section 6.4) */
    TU_CHECK(weights == 14, "%d quantised weights in the fixture, expected 14", weights);
    printf("fixture: %d weights bit-exact%s\n", weights,
           bnb ? " (and the bnb-4bit checkpoint)" : "");
done:
    st_close(bnb);
    st_close(ref);
    st_close(model);
}

/* The rules of README section 6, written out independently. */
static uint8_t rule_nf4(float s) {
    uint8_t q = 0;
    for (int k = 0; k < 15; k++) q += s > (ps_nf4_code[k] + ps_nf4_code[k + 1]) / 2.0f;
    return q;
}
static uint8_t rule_dq(float s) { /* torch.argmin(|s - code|), first index */
    int best = 0;
    for (int j = 1; j < 256; j++)
        if (fabsf(s - ps_dq_code[j]) < fabsf(s - ps_dq_code[best])) best = j;
    return (uint8_t)best;
}

static void check_random(int64_t out, int64_t in, uint64_t seed) {
    int64_t n = out * in, nb = nf4_n_blocks(n), bad = 0;
    float *w = malloc(sizeof(float) * (size_t)n), *deq = malloc(sizeof(float) * (size_t)(n + 1));
    float *absmax = malloc(sizeof(float) * (size_t)nb);
    tu_rand_fill(w, n, seed);
    for (int64_t i = 0; i < n; i++) w[i] *= (float)(1 + i % 7); /* uneven block scales */
    nf4_host q = {0}, p = {0};
    TU_CHECK(nf4_quantize(w, out, in, true, &q, &err) == PS_OK, "random: %s", err.msg);
    TU_CHECK(nf4_quantize(w, out, in, false, &p, &err) == PS_OK, "random: %s", err.msg);
    if (!q.packed || !p.packed) goto done;
    double sum = 0;
    for (int64_t b = 0; b < nb; b++) {
        absmax[b] = 0;
        for (int64_t i = b * 64; i < n && i < b * 64 + 64; i++)
            absmax[b] = fmaxf(absmax[b], fabsf(w[i]));
        sum += absmax[b];
        bad += absmax[b] != p.absmax[b];
    }
    TU_CHECK(q.offset == (float)(sum / nb), "(%lld, %lld): offset %.9g", (long long)out,
             (long long)in, (double)q.offset);
    for (int64_t i = 0; i < n; i++) {
        float s = w[i] * (1.0f / absmax[i / 64]);
        bad += ps_nf4_code_at(q.packed, i) != rule_nf4(s);
        bad += ps_nf4_code_at(p.packed, i) != rule_nf4(s);
    }
    if (n % 2) bad += (q.packed[n / 2] & 0x0f) != PS_NF4_ZERO_CODE;
    for (int64_t b = 0; b < nb; b++) {
        float m2 = q.absmax2[b / 256], x = absmax[b] - q.offset, s = x * (1.0f / m2);
        bad += q.absmax_q8[b] != rule_dq(fminf(1.0f, fmaxf(-1.0f, s)));
    }
    ps_nf4 v = nf4_host_view(&q);
    deq[n] = 12345.0f;
    nf4_dequantize(&v, deq);
    for (int64_t i = 0; i < n; i++) {
        int64_t b = i / 64;
        volatile float prod = ps_dq_code[q.absmax_q8[b]] * q.absmax2[b / 256]; /* no FMA */
        float scale = prod + q.offset;
        bad += deq[i] != ps_nf4_code[ps_nf4_code_at(q.packed, i)] * scale;
    }
    TU_CHECK(bad == 0 && deq[n] == 12345.0f, "random (%lld, %lld): %lld rule violations",
             (long long)out, (long long)in, (long long)bad);
done:
    nf4_host_free(&q);
    nf4_host_free(&p);
    free(w), free(deq), free(absmax);
}

static void check_nearest_ties(void) {
    float mid[15];
    for (int k = 0; k < 15; k++) mid[k] = (ps_nf4_code[k] + ps_nf4_code[k + 1]) * 0.5f;
    for (int k = 0; k < 15; k++) {
        TU_CHECK(ps_nf4_nearest(mid[k], mid) == k, "midpoint %d: tie must go to code %d", k, k);
        TU_CHECK(ps_nf4_nearest(nextafterf(mid[k], 2.0f), mid) == k + 1, "above midpoint %d", k);
    }
    float s[4096];
    tu_rand_fill(s, 4096, 99);
    int bad = 0;
    for (int i = 0; i < 4096; i++) bad += ps_nf4_nearest(s[i], mid) != rule_nf4(s[i]);
    TU_CHECK(bad == 0, "ps_nf4_nearest disagrees with the midpoint count %d times", bad);
}

static void check_errors(void) {
    float w[6] = {1, 2, 3, NAN, 5, 6};
    nf4_host q;
    TU_CHECK(nf4_quantize(w, 2, 3, true, &q, &err) == PS_EINVAL && q.packed == NULL,
             "NaN weight accepted");
    TU_CHECK(strstr(err.msg, "[1, 0]") != NULL, "error does not name the element: %s", err.msg);
    TU_CHECK(nf4_quantize(w, 0, 3, true, &q, &err) == PS_EINVAL, "empty shape accepted");
    float full[128]; /* whole 64-blocks take the vector path */
    tu_rand_fill(full, 128, 5);
    full[64 + 5] = INFINITY;
    TU_CHECK(nf4_quantize(full, 2, 64, false, &q, &err) == PS_EINVAL && q.packed == NULL,
             "inf weight accepted");
    TU_CHECK(strstr(err.msg, "[1, 5]") != NULL, "error does not name the element: %s", err.msg);
    nf4_host z = {0};
    nf4_host_free(&z);
    nf4_host_free(NULL);
    /* an all-zero block dequantises to +0 exactly */
    float zero[64] = {0};
    TU_CHECK(nf4_quantize(zero, 1, 64, false, &q, &err) == PS_OK, "zeros: %s", err.msg);
    float d[64];
    ps_nf4 v = nf4_host_view(&q);
    nf4_dequantize(&v, d);
    TU_CHECK(q.packed[0] == 0x77 && d[0] == 0.0f && !signbit(d[0]), "all-zero block");
    nf4_host_free(&q);
}

/* The quantiser splits blocks over host threads: the bytes must not depend on
 * the thread count, and the element an error names must be the first bad one
 * even when a later range finds its own bad element first. */
static void check_threads(void) {
    const int64_t out = 257, in = 4099, n = out * in; /* 16.5K blocks: many ranges, odd tail */
    float *w = malloc(sizeof(float) * (size_t)n);
    tu_rand_fill(w, n, 77);
    nf4_host one = {0}, many = {0};
    setenv("PS_HOST_THREADS", "1", 1);
    TU_CHECK(nf4_quantize(w, out, in, true, &one, &err) == PS_OK, "1 thread: %s", err.msg);
    setenv("PS_HOST_THREADS", "7", 1);
    TU_CHECK(nf4_quantize(w, out, in, true, &many, &err) == PS_OK, "7 threads: %s", err.msg);
    if (one.packed && many.packed) {
        int64_t nb = nf4_n_blocks(n), nb2 = nf4_n_blocks2(n);
        TU_CHECK(!memcmp(one.packed, many.packed, (size_t)(n + 1) / 2) &&
                     !memcmp(one.absmax_q8, many.absmax_q8, (size_t)nb) &&
                     !memcmp(one.absmax2, many.absmax2, sizeof(float) * (size_t)nb2) &&
                     one.offset == many.offset,
                 "7 threads quantise differently from 1");
    }
    nf4_host_free(&one);
    nf4_host_free(&many);
    w[n - 10] = NAN;     /* in the last range */
    w[3 * in + 9] = INFINITY; /* in the first: this one must be named */
    nf4_host q;
    TU_CHECK(nf4_quantize(w, out, in, false, &q, &err) == PS_EINVAL && q.packed == NULL,
             "non-finite weights accepted with 7 threads");
    TU_CHECK(strstr(err.msg, "[3, 9]") != NULL, "error does not name the first bad element: %s",
             err.msg);
    check_random(out, in, 2024); /* the independent rules, on the threaded path */
    unsetenv("PS_HOST_THREADS");
    free(w);
}

int main(void) {
    check_nearest_ties();
    check_errors();
    static const int64_t shapes[][2] = {{3, 17}, {5, 127}, {1, 1}, {7, 64}, {2, 33},
                                        {130, 129}, {1, 64 * 256 + 5}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        check_random(shapes[i][0], shapes[i][1], 1000 + i);
    check_threads();
    check_fixture();
    return tu_finish("test_nf4_quant");
}
