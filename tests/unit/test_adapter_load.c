/* PEFT adapter loader tests on the llama-tiny fixture adapters.
 *
 * Good files: every fixture adapter loads with the kind, ranks, scales and
 * targets its README (section 7) states, and every value lands where PEFT
 * puts it: LoRA A equals the file's tensor, B its transpose (the op's layout), the prefix KV equals PEFT's
 * get_prompt view (row t as [L*2, n_kv, D], 2l = key, 2l+1 = value), prompt
 * embeddings are copied. Variants built here: rank_pattern/alpha_pattern,
 * F16 tensors (kept 16-bit bit for bit; widened when mixed with F32),
 * modules_to_save lm_head, prefix projection MLP (checked
 * against a double-precision evaluation written here).
 *
 * Bad files: a table of broken uploads, each rejected with the right status
 * and a message naming the offending tensor or key, leaving nothing allocated
 * (ASan/LSan runs check the "nothing" part). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "adapter.h"
#include "base/safetensors.h"
#include "ops.h"
#include "math/half.h"
#include "testutil.h"

static adapter_base_shape base;
static ps_backend *be;
static char tmpdir[256];


static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    fclose(f);
}

static void load_base(void) {
    json_error_t je;
    json_t *c = json_load_file(tu_path("llama-tiny/config.json"), 0, &je);
    if (!c) {
        fprintf(stderr, "config.json: %s\n", je.text);
        exit(1);
    }
#define GI(k) (int)json_integer_value(json_object_get(c, k))
    base = (adapter_base_shape){GI("num_hidden_layers"), GI("hidden_size"), GI("intermediate_size"),
                                GI("num_attention_heads"), GI("num_key_value_heads"),
                                GI("hidden_size") / GI("num_attention_heads"), GI("vocab_size")};
#undef GI
    json_decref(c);
}

/* ---- a mutable copy of a fixture adapter ---- */

typedef struct {
    char *config;            /* JSON text */
    st_set *set;             /* the fixture file (items point into it) */
    int n;
    st_write_item items[64];
    void *owned[64];         /* replacement data we allocated */
} fx;

static void fx_open(fx *f, const char *name) {
    memset(f, 0, sizeof *f);
    char rel[256];
    size_t n;
    snprintf(rel, sizeof rel, "llama-tiny/adapters/%s/adapter_config.json", name);
    f->config = tu_read_file(tu_path(rel), &n);
    snprintf(rel, sizeof rel, "llama-tiny/adapters/%s/adapter_model.safetensors", name);
    ps_err err;
    if (!f->config || st_open(tu_path(rel), &f->set, &err)) {
        fprintf(stderr, "cannot open fixture %s\n", name);
        exit(1);
    }
    for (int i = 0; i < st_count(f->set); i++) {
        const st_tensor *t = st_at(f->set, i);
        st_write_item *it = &f->items[f->n++];
        it->name = t->name;
        it->dtype = t->dtype;
        it->ndim = t->ndim;
        memcpy(it->shape, t->shape, sizeof it->shape);
        it->data = t->data;
    }
}

static void fx_close(fx *f) {
    for (int i = 0; i < 64; i++) free(f->owned[i]);
    free(f->config);
    st_close(f->set);
}

static int fx_find(fx *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (!strcmp(f->items[i].name, name)) return i;
    fprintf(stderr, "no tensor %s\n", name);
    exit(1);
}

/* Replaces the data of item i by a float32 copy the caller may edit. */
static float *fx_f32(fx *f, int i) {
    int64_t n = 1;
    for (int d = 0; d < f->items[i].ndim; d++) n *= f->items[i].shape[d];
    float *x = malloc(sizeof(float) * (size_t)n);
    memcpy(x, f->items[i].data, sizeof(float) * (size_t)n);
    f->owned[i] = x;
    f->items[i].data = x;
    return x;
}

static void fx_append(fx *f, const char *name, st_dtype dt, int64_t d0, int64_t d1, const void *data) {
    st_write_item *it = &f->items[f->n++];
    it->name = name;
    it->dtype = dt;
    it->ndim = d1 < 0 ? 1 : 2;
    it->shape[0] = d0;
    it->shape[1] = d1 < 0 ? 0 : d1;
    it->data = data;
}

static void fx_remove(fx *f, int i) {
    memmove(&f->items[i], &f->items[i + 1], sizeof f->items[0] * (size_t)(f->n - i - 1));
    f->n--;
}

/* Sets a config key to a raw JSON value (NULL deletes it). */
static void fx_cfg(fx *f, const char *key, const char *raw) {
    json_t *c = json_loads(f->config, 0, NULL);
    if (raw) json_object_set_new(c, key, json_loads(raw, JSON_DECODE_ANY, NULL));
    else json_object_del(c, key);
    free(f->config);
    f->config = json_dumps(c, JSON_PRESERVE_ORDER);
    json_decref(c);
}

static char *fx_bytes(fx *f, size_t *n) {
    char path[400];
    snprintf(path, sizeof path, "%s/w.safetensors", tmpdir);
    ps_err err;
    if (st_write(path, f->items, f->n, "{\"format\": \"pt\"}", &err)) {
        fprintf(stderr, "st_write: %s\n", err.msg);
        exit(1);
    }
    return tu_read_file(path, n);
}

/* Loads the (possibly edited) copy from memory. */
static ps_status fx_load(fx *f, const char *name, const adapter_limits *lim, adapter **a, ps_err *err) {
    size_t n;
    char *st = fx_bytes(f, &n);
    ps_status s = adapter_load_mem(name, f->config, strlen(f->config), st, n, &base, lim, be, a, err);
    free(st);
    return s;
}

/* ---- good adapters ---- */

/* got == want (rows, cols) row-major, or its transpose (cols, rows) when
 * `transposed` (how lora_B is stored); es bytes per element. */
static bool same_values(const void *got, const void *want, int64_t rows, int64_t cols, size_t es, bool transposed) {
    const char *g = got, *w = want;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            int64_t gi = transposed ? c * rows + r : r * cols + c;
            if (memcmp(g + (size_t)gi * es, w + (size_t)(r * cols + c) * es, es)) return false;
        }
    return true;
}

static float *tensor_f32(const st_set *s, const char *name, int64_t *n) {
    const st_tensor *t = st_find(s, name);
    if (!t) return NULL;
    *n = st_numel(t);
    float *x = malloc(sizeof(float) * (size_t)*n);
    ps_err err;
    if (st_to_f32(t, x, *n, &err)) return free(x), NULL;
    return x;
}

static void check_lora(const char *name, int r, float scale, unsigned targets, bool rslora) {
    char dir[256];
    snprintf(dir, sizeof dir, "llama-tiny/adapters/%s", name);
    adapter *a = NULL;
    ps_err err = {0};
    ps_status s = adapter_load_dir(tu_path(dir), name, &base, NULL, be, &a, &err);
    TU_CHECK(s == PS_OK, "%s: load: %s", name, err.msg);
    if (s) return;
    TU_CHECK(a->kind == ADAPTER_LORA && a->max_rank == r && a->targets == targets && a->rslora == rslora,
             "%s: kind %d rank %d targets %#x rslora %d", name, a->kind, a->max_rank, a->targets, a->rslora);
    char path[400];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    st_set *set;
    TU_CHECK(st_open(tu_path(path), &set, &err) == PS_OK, "%s", err.msg);
    int compared = 0;
    for (int l = 0; l < base.n_layers; l++)
        for (int m = 0; m < ADAPTER_MOD_COUNT; m++) {
            const adapter_lora *e = &a->lora[ADAPTER_LORA_INDEX(a, l, m)];
            bool on = targets & (1u << m);
            TU_CHECK(on ? (e->r == r && e->A && e->B) : (e->r == 0 && !e->A && !e->B), "%s: layer %d %s r %d",
                     name, l, adapter_module_name(m), e->r);
            if (!on) continue;
            TU_CHECK(fabsf(e->scale - scale) < 1e-6f, "%s: scale %g, expected %g", name, e->scale, scale);
            for (int ab = 0; ab < 2; ab++) {
                char tn[256];
                snprintf(tn, sizeof tn, "base_model.model.model.layers.%d.%s.%s.lora_%c.weight", l,
                         adapter_module_parent(m), adapter_module_name(m), ab ? 'B' : 'A');
                int64_t n;
                float *want = tensor_f32(set, tn, &n);
                int64_t expect = (int64_t)r * (ab ? adapter_module_out(&base, m) : adapter_module_in(&base, m));
                TU_CHECK(want && n == expect, "%s: %s numel", name, tn);
                int64_t rows = ab ? adapter_module_out(&base, m) : r, cols = ab ? r : adapter_module_in(&base, m);
                if (want && n == expect)
                    TU_CHECK(same_values(ab ? e->B : e->A, want, rows, cols, 4, ab), "%s: %s differs", name, tn);
                compared += want != NULL;
                free(want);
            }
        }
    TU_CHECK(compared == 2 * base.n_layers * __builtin_popcount(targets), "%s: compared %d", name, compared);
    st_close(set);
    adapter_free(a);
}

static void check_prefix(void) {
    adapter *a = NULL;
    ps_err err = {0};
    ps_status s = adapter_load_dir(tu_path("llama-tiny/adapters/prefix"), "prefix", &base, NULL, be, &a, &err);
    TU_CHECK(s == PS_OK, "prefix: %s", err.msg);
    if (s) return;
    st_set *set;
    st_open(tu_path("llama-tiny/adapters/prefix/adapter_model.safetensors"), &set, &err);
    int64_t n;
    float *E = tensor_f32(set, "prompt_embeddings", &n);
    int P = 8, L = base.n_layers, H = base.n_kv_heads, D = base.head_dim;
    TU_CHECK(a->kind == ADAPTER_PREFIX && a->n_prefix == P && E && n == (int64_t)P * L * 2 * H * D,
             "prefix: kind %d P %d", a->kind, a->n_prefix);
    /* PEFT: E.view(P, L*2, H, D).permute -> key of layer l, head h, slot t = E[t, 2l, h, :] */
    int bad = 0;
    for (int l = 0; l < L && E; l++)
        for (int kv = 0; kv < 2; kv++)
            for (int t = 0; t < P; t++)
                for (int h = 0; h < H; h++)
                    for (int d = 0; d < D; d++) {
                        float want = E[(((int64_t)t * L * 2 + 2 * l + kv) * H + h) * D + d];
                        float got = a->prefix_kv[((((int64_t)l * 2 + kv) * P + t) * H + h) * D + d];
                        bad += got != want;
                    }
    TU_CHECK(bad == 0, "prefix: %d values misplaced", bad);
    free(E);
    st_close(set);
    adapter_free(a);
}

static void check_prompt(void) {
    adapter *a = NULL;
    ps_err err = {0};
    ps_status s = adapter_load_dir(tu_path("llama-tiny/adapters/prompt"), "prompt", &base, NULL, be, &a, &err);
    TU_CHECK(s == PS_OK, "prompt: %s", err.msg);
    if (s) return;
    st_set *set;
    st_open(tu_path("llama-tiny/adapters/prompt/adapter_model.safetensors"), &set, &err);
    int64_t n;
    float *E = tensor_f32(set, "prompt_embeddings", &n);
    TU_CHECK(a->kind == ADAPTER_PROMPT && a->n_virtual == 6 && E && n == 6 * base.hidden, "prompt: n %d", a->n_virtual);
    if (E && n == 6 * base.hidden) TU_CHECK(!memcmp(E, a->prompt, sizeof(float) * (size_t)n), "prompt: values differ");
    free(E);
    st_close(set);
    adapter_free(a);
}

/* rank_pattern / alpha_pattern with PEFT's suffix rule. */
static void check_patterns(void) {
    fx f;
    fx_open(&f, "lora-qv"); /* tensors have r = 8 */
    fx_cfg(&f, "r", "4");
    fx_cfg(&f, "rank_pattern", "{\"q_proj\": 8, \"v_proj\": 8}");
    fx_cfg(&f, "alpha_pattern", "{\"layers.1.self_attn.v_proj\": 32}");
    adapter *a = NULL;
    ps_err err = {0};
    ps_status s = fx_load(&f, "pat", NULL, &a, &err);
    TU_CHECK(s == PS_OK, "patterns: %s", err.msg);
    if (!s) {
        const adapter_lora *q0 = &a->lora[ADAPTER_LORA_INDEX(a, 0, ADAPTER_MOD_Q)];
        const adapter_lora *v0 = &a->lora[ADAPTER_LORA_INDEX(a, 0, ADAPTER_MOD_V)];
        const adapter_lora *v1 = &a->lora[ADAPTER_LORA_INDEX(a, 1, ADAPTER_MOD_V)];
        TU_CHECK(q0->r == 8 && q0->scale == 2.0f, "patterns: q0 r %d scale %g", q0->r, q0->scale);
        TU_CHECK(v0->scale == 2.0f && v1->scale == 4.0f, "patterns: v scales %g %g (want 2, 4)", v0->scale, v1->scale);
    }
    adapter_free(a);
    a = NULL;
    fx_cfg(&f, "rank_pattern", "{\"model.layers.0.self_attn.q_proj\": 8}"); /* others fall back to r = 4 */
    s = fx_load(&f, "pat", NULL, &a, &err);
    TU_CHECK(s == PS_EFORMAT && strstr(err.msg, "layers.0.self_attn.v_proj.lora_A.weight") && strstr(err.msg, "r=4"),
             "patterns: fallback rank mismatch: %d %s", s, err.msg);
    adapter_free(a);
    fx_close(&f);
}

/* F16 tensors convert exactly (every f16 value is a float). */
static void check_f16(void) {
    fx f;
    fx_open(&f, "lora-rs");
    uint16_t *h[64] = {0};
    float *want[64] = {0};
    for (int i = 0; i < f.n; i++) {
        int64_t n = f.items[i].shape[0] * f.items[i].shape[1];
        const float *x = f.items[i].data;
        h[i] = malloc(2 * (size_t)n);
        want[i] = malloc(4 * (size_t)n);
        for (int64_t j = 0; j < n; j++) { /* round to f16 by hand; tiny values (f16 subnormals) -> 0 */
            float r = fabsf(x[j]) < 1e-4f ? 0.0f : x[j];
            int e;
            frexpf(r, &e);
            float q = ldexpf(1.0f, e - 11);
            float y = r == 0 ? 0.0f : nearbyintf(r / q) * q;
            want[i][j] = y;
            uint32_t bits;
            memcpy(&bits, &y, 4);
            int ex = (int)((bits >> 23) & 0xff) - 127 + 15;
            h[i][j] = (uint16_t)((bits >> 16 & 0x8000) | (y == 0 ? 0 : (ex << 10) | ((bits >> 13) & 0x3ff)));
        }
        f.items[i].dtype = ST_F16;
        f.items[i].data = h[i];
    }
    /* all F16: kept as stored (the exact bits), lora_dtype F16 */
    adapter *a = NULL;
    ps_err err = {0};
    ps_status s = fx_load(&f, "f16", NULL, &a, &err);
    TU_CHECK(s == PS_OK && a->lora_dtype == PS_DT_F16, "f16: %s", err.msg);
    for (int i = 0; !s && i < f.n; i++) {
        /* items are sorted like the set: layers.0.mlp.down A, B, layers.0.self_attn.o A, B, ... */
        int l = strstr(f.items[i].name, "layers.1.") != NULL;
        adapter_module m = strstr(f.items[i].name, "down_proj") ? ADAPTER_MOD_DOWN : ADAPTER_MOD_O;
        const adapter_lora *e = &a->lora[ADAPTER_LORA_INDEX(a, l, m)];
        bool is_b = strstr(f.items[i].name, "lora_B") != NULL;
        TU_CHECK(same_values(is_b ? e->B : e->A, h[i], f.items[i].shape[0], f.items[i].shape[1], 2, is_b),
                 "f16: %s differs", f.items[i].name);
    }
    adapter_free(a);
    a = NULL;
    /* a NaN in an F16 tensor is found without widening */
    uint16_t keep = h[2][7];
    h[2][7] = 0x7E00;
    s = fx_load(&f, "f16", NULL, &a, &err);
    TU_CHECK(s == PS_EFORMAT && strstr(err.msg, f.items[2].name) && strstr(err.msg, "element 7 is nan"), "f16 nan: %s",
             err.msg);
    h[2][7] = keep;
    /* one tensor left F32: the adapter is widened to F32, values exact */
    f.items[0].dtype = ST_F32;
    f.items[0].data = want[0];
    s = fx_load(&f, "mixed", NULL, &a, &err);
    TU_CHECK(s == PS_OK && a->lora_dtype == PS_DT_F32, "mixed dtypes: %s", err.msg);
    for (int i = 0; !s && i < f.n; i++) {
        int l = strstr(f.items[i].name, "layers.1.") != NULL;
        adapter_module m = strstr(f.items[i].name, "down_proj") ? ADAPTER_MOD_DOWN : ADAPTER_MOD_O;
        const adapter_lora *e = &a->lora[ADAPTER_LORA_INDEX(a, l, m)];
        bool is_b = strstr(f.items[i].name, "lora_B") != NULL;
        TU_CHECK(same_values(is_b ? e->B : e->A, want[i], f.items[i].shape[0], f.items[i].shape[1], 4, is_b),
                 "mixed: %s differs", f.items[i].name);
    }
    adapter_free(a);
    for (int i = 0; i < 64; i++) free(h[i]), free(want[i]);
    fx_close(&f);
}

/* adapter_limits.lora_dtype: an F32 file stored as BF16 holds exactly the
 * round-to-nearest-even of each value (computed here from the bits), as F16
 * the half.h rounding; a value beyond F16's range is refused, naming it. */
static void check_narrow(void) {
    fx f;
    fx_open(&f, "lora-rs");
    adapter_limits lim = adapter_limits_default();
    adapter *a = NULL;
    ps_err err = {0};
    for (int d = 0; d < 2; d++) {
        lim.lora_dtype = d ? PS_DT_F16 : PS_DT_BF16;
        ps_status s = fx_load(&f, "narrow", &lim, &a, &err);
        TU_CHECK(s == PS_OK && a->lora_dtype == lim.lora_dtype, "narrow to %s: %s", ps_dtype_name(lim.lora_dtype),
                 err.msg);
        for (int i = 0; !s && i < f.n; i++) {
            int64_t n = f.items[i].shape[0] * f.items[i].shape[1];
            const float *x = f.items[i].data;
            uint16_t *want = malloc(2 * (size_t)n);
            for (int64_t j = 0; j < n; j++) {
                uint32_t u;
                memcpy(&u, &x[j], 4);
                want[j] = d ? ps_f32_to_f16(x[j]) : (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
            }
            int l = strstr(f.items[i].name, "layers.1.") != NULL;
            adapter_module m = strstr(f.items[i].name, "down_proj") ? ADAPTER_MOD_DOWN : ADAPTER_MOD_O;
            const adapter_lora *e = &a->lora[ADAPTER_LORA_INDEX(a, l, m)];
            bool is_b = strstr(f.items[i].name, "lora_B") != NULL;
            TU_CHECK(same_values(is_b ? e->B : e->A, want, f.items[i].shape[0], f.items[i].shape[1], 2, is_b),
                     "narrow to %s: %s differs", ps_dtype_name(lim.lora_dtype), f.items[i].name);
            free(want);
        }
        adapter_free(a);
        a = NULL;
    }
    float *x = fx_f32(&f, 3);
    x[5] = 1e6f; /* fine in F32 and BF16, beyond F16's 65504 */
    lim.lora_dtype = PS_DT_F16;
    ps_status s = fx_load(&f, "narrow", &lim, &a, &err);
    TU_CHECK(s == PS_EFORMAT && !a && strstr(err.msg, f.items[3].name) && strstr(err.msg, "element 5") &&
                 strstr(err.msg, "overflows F16"), "f16 overflow: %s", err.msg);
    lim.lora_dtype = PS_DT_BF16;
    s = fx_load(&f, "narrow", &lim, &a, &err);
    TU_CHECK(s == PS_OK, "1e6 as bf16: %s", err.msg);
    adapter_free(a);
    fx_close(&f);
}

static void check_modules_to_save(void) {
    fx f;
    fx_open(&f, "lora-qv");
    int64_t n = (int64_t)base.vocab * base.hidden;
    float *lm = malloc(sizeof(float) * (size_t)n);
    tu_rand_fill(lm, n, 77);
    fx_append(&f, "base_model.model.lm_head.weight", ST_F32, base.vocab, base.hidden, lm);
    adapter *a = NULL;
    ps_err err = {0};
    ps_status s = fx_load(&f, "mts", NULL, &a, &err);
    TU_CHECK(s == PS_EFORMAT && strstr(err.msg, "base_model.model.lm_head.weight") && strstr(err.msg, "modules_to_save"),
             "lm_head not listed: %d %s", s, err.msg);
    fx_cfg(&f, "modules_to_save", "[\"lm_head\"]");
    s = fx_load(&f, "mts", NULL, &a, &err);
    TU_CHECK(s == PS_OK && a->lm_head && !a->embed_tokens, "lm_head listed: %s", err.msg);
    if (!s) TU_CHECK(!memcmp(a->lm_head, lm, sizeof(float) * (size_t)n), "lm_head values differ");
    adapter_free(a);
    a = NULL;
    f.items[f.n - 1].shape[0] = base.vocab - 1;
    s = fx_load(&f, "mts", NULL, &a, &err);
    TU_CHECK(s == PS_EFORMAT && strstr(err.msg, "lm_head.weight") && strstr(err.msg, "[1999, 128]"),
             "lm_head shape: %d %s", s, err.msg);
    free(lm);
    fx_close(&f);
}

/* PrefixEncoder with its MLP in the file: projected once at load. */
static void check_prefix_projection(void) {
    fx f;
    fx_open(&f, "prefix");
    int P = 8, td = 64, eh = 16, out = base.n_layers * 2 * td;
    float *e = malloc(4 * (size_t)(P * td)), *w1 = malloc(4 * (size_t)(eh * td)), *b1 = malloc(4 * (size_t)eh);
    float *w2 = malloc(4 * (size_t)(out * eh)), *b2 = malloc(4 * (size_t)out);
    tu_rand_fill(e, P * td, 1), tu_rand_fill(w1, eh * td, 2), tu_rand_fill(b1, eh, 3);
    tu_rand_fill(w2, out * eh, 4), tu_rand_fill(b2, out, 5);
    fx_remove(&f, fx_find(&f, "prompt_embeddings"));
    fx_append(&f, "prompt_embeddings", ST_F32, P, td, e);
    fx_append(&f, "transform.0.weight", ST_F32, eh, td, w1);
    fx_append(&f, "transform.0.bias", ST_F32, eh, -1, b1);
    fx_append(&f, "transform.2.weight", ST_F32, out, eh, w2);
    fx_append(&f, "transform.2.bias", ST_F32, out, -1, b2);
    fx_cfg(&f, "prefix_projection", "true");
    fx_cfg(&f, "encoder_hidden_size", "16");
    adapter *a = NULL;
    ps_err err = {0};
    ps_status s = fx_load(&f, "proj", NULL, &a, &err);
    TU_CHECK(s == PS_OK, "prefix projection: %s", err.msg);
    double worst = 0;
    for (int t = 0; !s && t < P; t++) {
        double hdn[16];
        for (int j = 0; j < eh; j++) {
            double acc = b1[j];
            for (int i = 0; i < td; i++) acc += (double)w1[j * td + i] * e[t * td + i];
            hdn[j] = tanh(acc);
        }
        for (int o = 0; o < out; o++) {
            double y = b2[o];
            for (int j = 0; j < eh; j++) y += (double)w2[o * eh + j] * hdn[j];
            int row = o / td, c = o % td, l = row / 2, kv = row % 2; /* [L*2, n_kv*D] */
            double got = a->prefix_kv[(((int64_t)l * 2 + kv) * P + t) * td + c];
            worst = fmax(worst, fabs(got - y));
        }
    }
    TU_CHECK(worst < 1e-6, "prefix projection: max abs %.3g", worst);
    adapter_free(a);
    a = NULL;
    fx_cfg(&f, "prefix_projection", "false"); /* MLP tensors left over: refused */
    s = fx_load(&f, "proj", NULL, &a, &err);
    TU_CHECK(s == PS_EFORMAT && strstr(err.msg, "prompt_embeddings"), "projection off: %d %s", s, err.msg);
    free(e), free(w1), free(b1), free(w2), free(b2);
    fx_close(&f);
}

/* ---- the bad-upload table ---- */

typedef struct {
    const char *label;
    const char *fixture;
    void (*mutate)(fx *f);
    const char *name;        /* adapter name (default "bad") */
    ps_status want;
    const char *must1, *must2; /* substrings of the message */
    adapter_limits lim;      /* zero = default */
    int truncate;            /* keep only this many bytes of the safetensors */
} bad_case;

static const char *QA0 = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
static const char *QB1 = "base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight";

static void m_rank16(fx *f) { fx_cfg(f, "r", "16"); }
static void m_rank_huge(fx *f) { fx_cfg(f, "r", "100000"); }
static void m_rename_module(fx *f) { f->items[fx_find(f, QA0)].name = "base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight"; }
static void m_layer99(fx *f) { f->items[fx_find(f, QB1)].name = "base_model.model.model.layers.99.self_attn.q_proj.lora_B.weight"; }
static void m_nan(fx *f) { fx_f32(f, fx_find(f, QB1))[5] = NAN; }
static void m_inf(fx *f) { fx_f32(f, fx_find(f, QA0))[100] = -INFINITY; }
static void m_i32(fx *f) { f->items[fx_find(f, QA0)].dtype = ST_I32; }
static void m_f64(fx *f) { /* same bytes, half the elements: shape [8, 64] as F64 */
    int i = fx_find(f, QA0);
    f->items[i].dtype = ST_F64;
    f->items[i].shape[1] = 64;
}
static void m_drop_b(fx *f) { fx_remove(f, fx_find(f, QB1)); }
static void m_targets_q(fx *f) { fx_cfg(f, "target_modules", "[\"q_proj\"]"); }
static void m_ia3(fx *f) { fx_cfg(f, "peft_type", "\"IA3\""); }
static void m_dora(fx *f) { fx_cfg(f, "use_dora", "true"); }
static void m_bias(fx *f) { fx_cfg(f, "bias", "\"all\""); }
static void m_seq_cls(fx *f) { fx_cfg(f, "task_type", "\"SEQ_CLS\""); }
static void m_regex(fx *f) { fx_cfg(f, "rank_pattern", "{\"layers\\\\.0\\\\..*q_proj\": 4}"); }
static void m_json(fx *f) { f->config[strlen(f->config) / 2] = 0; }
static void m_unknown(fx *f) { fx_append(f, "foo", ST_F32, 1, 1, f->items[0].data); }
static void m_dora_mag(fx *f) { fx_append(f, "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", ST_F32, 1, 1, f->items[0].data); }
static void m_empty(fx *f) { f->n = 0; }
static void m_prefix_layers(fx *f) { fx_cfg(f, "num_layers", "3"); }
static void m_prefix_qheads(fx *f) { fx_cfg(f, "token_dim", "128"); }
static void m_prompt_n(fx *f) { fx_cfg(f, "num_virtual_tokens", "7"); }
static void m_prompt_many(fx *f) { fx_cfg(f, "num_virtual_tokens", "5000"); }
static void m_no_emb(fx *f) { f->items[0].name = "prompt_embedding"; }
static void m_nothing(fx *f) { (void)f; }

static const bad_case bad_cases[] = {
    {"wrong rank vs tensor shape", "lora-qv", m_rank16, 0, PS_EFORMAT, "layers.0.self_attn.q_proj.lora_A.weight", "r=16"},
    {"rank over the limit", "lora-qv", m_rank_huge, 0, PS_ETOOLARGE, "q_proj.lora_A.weight", "limit"},
    {"module the base lacks", "lora-qv", m_rename_module, 0, PS_EINVAL, "self_attn.qkv_proj.lora_A.weight", "no module"},
    {"layer 99", "lora-qv", m_layer99, 0, PS_EINVAL, "layers.99.self_attn.q_proj.lora_B.weight", "layer 99"},
    {"NaN values", "lora-qv", m_nan, 0, PS_EFORMAT, "layers.1.self_attn.q_proj.lora_B.weight", "nan"},
    {"Inf values", "lora-qv", m_inf, 0, PS_EFORMAT, "layers.0.self_attn.q_proj.lora_A.weight", "inf"},
    {"I32 tensor", "lora-qv", m_i32, 0, PS_EFORMAT, "q_proj.lora_A.weight", "I32"},
    {"F64 tensor", "lora-qv", m_f64, 0, PS_EFORMAT, "q_proj.lora_A.weight", "F64"},
    {"missing lora_B", "lora-qv", m_drop_b, 0, PS_EFORMAT, "layers.1.self_attn.q_proj.lora_B.weight", "missing"},
    {"module not in target_modules", "lora-qv", m_targets_q, 0, PS_EFORMAT, "v_proj.lora_A.weight", "target_modules"},
    {"peft_type IA3", "lora-qv", m_ia3, 0, PS_ENOTSUP, "IA3", "peft_type"},
    {"DoRA", "lora-qv", m_dora, 0, PS_ENOTSUP, "use_dora", NULL},
    {"LoRA bias", "lora-qv", m_bias, 0, PS_ENOTSUP, "bias", NULL},
    {"task_type SEQ_CLS", "lora-qv", m_seq_cls, 0, PS_ENOTSUP, "SEQ_CLS", NULL},
    {"regex pattern key", "lora-qv", m_regex, 0, PS_ENOTSUP, "rank_pattern", "regular-expression"},
    {"broken JSON", "lora-qv", m_json, 0, PS_EFORMAT, "adapter_config.json", "line"},
    {"unknown tensor", "lora-qv", m_unknown, 0, PS_EFORMAT, "'foo'", NULL},
    {"DoRA magnitude tensor", "lora-qv", m_dora_mag, 0, PS_ENOTSUP, "lora_magnitude_vector", "DoRA"},
    {"no tensors", "lora-qv", m_empty, 0, PS_EFORMAT, "no LoRA tensors", NULL},
    {"truncated safetensors", "lora-qv", m_nothing, 0, PS_EFORMAT, "adapter_model.safetensors", NULL, {0}, 20000},
    {"truncated header", "lora-qv", m_nothing, 0, PS_EFORMAT, "adapter_model.safetensors", NULL, {0}, 100},
    {"over the size limit", "lora-all", m_nothing, 0, PS_ETOOLARGE, "limit", "MB", {100000, 512, 1024, 4096, 1 << 20}},
    {"too many tensors", "lora-all", m_nothing, 0, PS_ETOOLARGE, "tensors", "limit", {1 << 30, 512, 1024, 8, 1 << 20}},
    {"name with ../", "lora-qv", m_nothing, "../evil", PS_EINVAL, "adapter name", "0x2f"},
    {"name starting with .", "lora-qv", m_nothing, ".hidden", PS_EINVAL, "adapter name", "'.'"},
    {"name with ..", "lora-qv", m_nothing, "a..b", PS_EINVAL, "adapter name", "'..'"},
    {"empty name", "lora-qv", m_nothing, "", PS_EINVAL, "adapter name", NULL},
    {"prefix: num_layers 3", "prefix", m_prefix_layers, 0, PS_EINVAL, "num_layers 3", NULL},
    {"prefix: sized for query heads", "prefix", m_prefix_qheads, 0, PS_EINVAL, "token_dim 128", "KV heads"},
    {"prompt: num_virtual_tokens 7", "prompt", m_prompt_n, 0, PS_EFORMAT, "'prompt_embeddings'", "[6, 128]"},
    {"prompt: too many virtual tokens", "prompt", m_prompt_many, 0, PS_ETOOLARGE, "num_virtual_tokens", "limit"},
    {"prompt: tensor missing", "prompt", m_no_emb, 0, PS_EFORMAT, "prompt_embedding", NULL},
};

static void run_bad_cases(void) {
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *c = &bad_cases[i];
        fx f;
        fx_open(&f, c->fixture);
        c->mutate(&f);
        size_t n;
        char *st = fx_bytes(&f, &n);
        if (c->truncate && (size_t)c->truncate < n) n = (size_t)c->truncate;
        adapter *a = (adapter *)1;
        ps_err err = {0};
        adapter_limits lim = c->lim.max_bytes ? c->lim : adapter_limits_default();
        ps_status s = adapter_load_mem(c->name ? c->name : "bad", f.config, strlen(f.config), st, n, &base, &lim,
                                       be, &a, &err);
        bool ok = s == c->want && a == NULL && strstr(err.msg, c->must1) && (!c->must2 || strstr(err.msg, c->must2));
        TU_CHECK(ok, "bad upload '%s': status %s (want %s), message '%s'", c->label, ps_status_name(s),
                 ps_status_name(c->want), err.msg);
        if (ok) printf("  rejected %-32s %-10s %s\n", c->label, ps_status_name(s), err.msg);
        if (s == PS_OK) adapter_free(a);
        free(st);
        fx_close(&f);
    }
}

/* Folder-level refusals: a missing file and a pickled adapter_model.bin. */
static void run_bad_dirs(void) {
    char d[400], p[480];
    snprintf(d, sizeof d, "%s/dir", tmpdir);
    mkdir(d, 0755);
    size_t n;
    char *cfg = tu_read_file(tu_path("llama-tiny/adapters/lora-qv/adapter_config.json"), &n);
    snprintf(p, sizeof p, "%s/adapter_config.json", d);
    write_file(p, cfg, n);
    adapter *a = NULL;
    ps_err err = {0};
    ps_status s = adapter_load_dir(d, "x", &base, NULL, be, &a, &err);
    TU_CHECK(s == PS_ENOTFOUND && strstr(err.msg, "adapter_model.safetensors"), "missing file: %d %s", s, err.msg);
    snprintf(p, sizeof p, "%s/adapter_model.bin", d);
    write_file(p, "\x80\x02}q\x00.", 6);
    s = adapter_load_dir(d, "x", &base, NULL, be, &a, &err);
    TU_CHECK(s == PS_EFORMAT && strstr(err.msg, "adapter_model.bin") && strstr(err.msg, "pickle"), "pickle: %d %s", s,
             err.msg);
    unlink(p);
    snprintf(p, sizeof p, "%s/adapter_config.json", d);
    unlink(p);
    rmdir(d);
    free(cfg);
}

int main(void) {
    tu_fixtures_or_skip("llama-tiny/adapters");
    load_base();
    ps_err err;
    if (ps_backend_cpu_create(1, &be, &err)) return 1;
    snprintf(tmpdir, sizeof tmpdir, "%s/ps_adapter_load_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) return 1;

    unsigned qv = 1u << ADAPTER_MOD_Q | 1u << ADAPTER_MOD_V, all = (1u << ADAPTER_MOD_COUNT) - 1;
    unsigned od = 1u << ADAPTER_MOD_O | 1u << ADAPTER_MOD_DOWN;
    check_lora("lora-qv", 8, 2.0f, qv, false);   /* README 7: r 8, alpha 16 -> 2 */
    check_lora("lora-all", 16, 2.0f, all, false); /* r 16, alpha 32 -> 2 */
    check_lora("lora-rs", 4, 4.0f, od, true);    /* rsLoRA: 8 / sqrt(4) = 4 */
    check_prefix();
    check_prompt();
    check_patterns();
    check_f16();
    check_narrow();
    check_modules_to_save();
    check_prefix_projection();
    run_bad_cases();
    run_bad_dirs();

    char p[400];
    snprintf(p, sizeof p, "%s/w.safetensors", tmpdir);
    unlink(p);
    rmdir(tmpdir);
    ps_backend_destroy(be);
    return tu_finish("adapter load");
}
