/* safetensors reader/writer tests: the llama-tiny fixture against its README table,
 * f16 conversion against an independent ldexp decoder, writer round trip, a table
 * of corrupted headers (each must be PS_EFORMAT naming the offender), and sharded
 * folders (good, and bad indexes). Temporary files go under $TMPDIR or /tmp. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/safetensors.h"
#include "math/half.h"
#include "testutil.h"

static char tmpdir[512];

static const char *tmp_path(const char *rel) {
    static char bufs[8][800];
    static int k;
    char *b = bufs[k++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", tmpdir, rel);
    return b;
}

/* ---- fixture ---- */

typedef struct {
    const char *name;
    int64_t d0, d1; /* d1 < 0: 1-d */
} want_tensor;

/* llama-tiny/README.md, "model.safetensors" table (layer 1 = layer 0). */
static const want_tensor llama_tiny[] = {
    {"lm_head.weight", 2000, 128},
    {"model.embed_tokens.weight", 2000, 128},
    {"model.layers.0.input_layernorm.weight", 128, -1},
    {"model.layers.0.mlp.down_proj.weight", 128, 352},
    {"model.layers.0.mlp.gate_proj.weight", 352, 128},
    {"model.layers.0.mlp.up_proj.weight", 352, 128},
    {"model.layers.0.post_attention_layernorm.weight", 128, -1},
    {"model.layers.0.self_attn.k_proj.weight", 64, 128},
    {"model.layers.0.self_attn.o_proj.weight", 128, 128},
    {"model.layers.0.self_attn.q_proj.weight", 128, 128},
    {"model.layers.0.self_attn.v_proj.weight", 64, 128},
    {"model.layers.1.input_layernorm.weight", 128, -1},
    {"model.layers.1.mlp.down_proj.weight", 128, 352},
    {"model.layers.1.mlp.gate_proj.weight", 352, 128},
    {"model.layers.1.mlp.up_proj.weight", 352, 128},
    {"model.layers.1.post_attention_layernorm.weight", 128, -1},
    {"model.layers.1.self_attn.k_proj.weight", 64, 128},
    {"model.layers.1.self_attn.o_proj.weight", 128, 128},
    {"model.layers.1.self_attn.q_proj.weight", 128, 128},
    {"model.layers.1.self_attn.v_proj.weight", 64, 128},
    {"model.norm.weight", 128, -1},
};
#define N_LLAMA ((int)(sizeof llama_tiny / sizeof llama_tiny[0]))

/* IEEE binary16 decoded with ldexp, independent of kernels/math/half.h. */
static float ref_f16(uint16_t h) {
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double v;
    if (e == 0) v = ldexp(m, -24);
    else if (e == 31) v = m ? NAN : INFINITY;
    else v = ldexp(1024 + m, e - 25);
    return (float)((h & 0x8000) ? -v : v);
}

static void test_fixture(void) {
    tu_fixtures_or_skip("llama-tiny/model.safetensors");
    st_set *s = NULL;
    ps_err err = {0};
    ps_status rc = st_open(tu_path("llama-tiny/model.safetensors"), &s, &err);
    TU_CHECK(rc == PS_OK, "open fixture: %s", err.msg);
    if (rc != PS_OK) return;
    TU_CHECK(st_count(s) == N_LLAMA, "tensor count %d, want %d", st_count(s), N_LLAMA);
    for (int i = 0; i < N_LLAMA && i < st_count(s); i++) {
        const want_tensor *w = &llama_tiny[i]; /* the table is in name order */
        const st_tensor *t = st_at(s, i);
        TU_CHECK(strcmp(t->name, w->name) == 0, "st_at(%d) = '%s', want '%s'", i, t->name, w->name);
        TU_CHECK(st_find(s, w->name) == t, "st_find('%s') does not return st_at(%d)", w->name, i);
        int nd = w->d1 < 0 ? 1 : 2;
        TU_CHECK(t->dtype == ST_F16 && t->ndim == nd && t->shape[0] == w->d0 &&
                     (nd == 1 || t->shape[1] == w->d1),
                 "'%s': %s ndim %d [%lld, %lld], want F16 [%lld, %lld]", w->name,
                 st_dtype_name(t->dtype), t->ndim, (long long)t->shape[0],
                 (long long)(t->ndim > 1 ? t->shape[1] : -1), (long long)w->d0, (long long)w->d1);
        TU_CHECK(t->nbytes == (size_t)st_numel(t) * 2, "'%s': nbytes %zu", w->name, t->nbytes);
    }
    TU_CHECK(st_find(s, "model.layers.2.mlp.up_proj.weight") == NULL, "absent name found");
    TU_CHECK(st_find(s, "a") == NULL && st_find(s, "zzz") == NULL, "absent edge names found");
    const char *fmt = st_metadata(s, "format");
    TU_CHECK(fmt && strcmp(fmt, "pt") == 0, "metadata format = %s, want pt", fmt ? fmt : "(null)");
    TU_CHECK(st_metadata(s, "nope") == NULL, "absent metadata key found");

    /* f16 -> f32 on a norm weight and the embedding, checked element by element */
    const char *conv[] = {"model.norm.weight", "model.embed_tokens.weight"};
    for (int c = 0; c < 2; c++) {
        const st_tensor *t = st_find(s, conv[c]);
        if (!t) continue;
        int64_t n = st_numel(t);
        float *f = malloc((size_t)n * sizeof *f);
        rc = st_to_f32(t, f, n, &err);
        TU_CHECK(rc == PS_OK, "st_to_f32 '%s': %s", conv[c], err.msg);
        int64_t bad = 0, nonzero = 0;
        for (int64_t i = 0; i < n && rc == PS_OK; i++) {
            uint16_t h;
            memcpy(&h, (const uint8_t *)t->data + 2 * i, 2);
            if (memcmp(&f[i], &(float){ref_f16(h)}, 4) != 0) bad++;
            nonzero += f[i] != 0.0f;
        }
        TU_CHECK(bad == 0, "'%s': %lld elements differ from the ldexp decoder", conv[c], (long long)bad);
        TU_CHECK(nonzero > n / 2, "'%s': only %lld of %lld nonzero (wrong data pointer?)", conv[c],
                 (long long)nonzero, (long long)n);
        rc = st_to_f32(t, f, n - 1, &err);
        TU_CHECK(rc == PS_EINVAL && strstr(err.msg, conv[c]), "wrong n: rc %d msg '%s'", rc, err.msg);
        free(f);
    }
    st_close(s);

    /* the same folder through st_open_model_dir (single-file path) */
    rc = st_open_model_dir(tu_path("llama-tiny"), &s, &err);
    TU_CHECK(rc == PS_OK && st_count(s) == N_LLAMA, "model dir: rc %d %s", rc, err.msg);
    st_close(s);
}

/* ---- writer round trip ---- */

static void test_roundtrip(void) {
    float f32[15], f32s = 3.25f;
    double f64[2] = {1.0 / 3.0, -2.5e10};
    uint16_t f16[7], bf16[6];
    int64_t i64[3] = {INT64_MIN, -1, INT64_MAX};
    int32_t i32[2] = {-7, 123456};
    int16_t i16[3] = {-300, 0, 300};
    int8_t i8[5] = {-128, -1, 0, 1, 127};
    uint8_t u8[3] = {0, 128, 255}, bl[2] = {0, 1};
    tu_rand_fill(f32, 15, 11);
    /* halves with known values: 0xB000 = -0.125, 0x3000 = 0.125, 0 = +0, 0x3C00 = 1 */
    for (int i = 0; i < 7; i++) f16[i] = i < 3 ? 0xB000 : 0x3000;
    f16[3] = 0x0000;
    f16[6] = 0x3C00; /* 1.0 */
    for (int i = 0; i < 6; i++) bf16[i] = (uint16_t)(0x3F80 + i); /* 1.0, 1.0078125, ... */
    st_write_item items[] = {
        {"w.f16_odd", ST_F16, 1, {7}, f16},   {"w.f32", ST_F32, 2, {3, 5}, f32},
        {"w.bf16", ST_BF16, 2, {2, 3}, bf16}, {"w.f64", ST_F64, 1, {2}, f64},
        {"w.i64", ST_I64, 1, {3}, i64},       {"w.i32", ST_I32, 1, {2}, i32},
        {"w.i16", ST_I16, 1, {3}, i16},       {"w.i8", ST_I8, 1, {5}, i8},
        {"w.u8", ST_U8, 2, {1, 3}, u8},       {"w.bool", ST_BOOL, 1, {2}, bl},
        {"scalar", ST_F32, 0, {0}, &f32s},    {"empty", ST_F32, 2, {0, 4}, NULL},
    };
    int n = (int)(sizeof items / sizeof items[0]);
    ps_err err = {0};
    const char *path = tmp_path("rt.safetensors");
    ps_status rc = st_write(path, items, n, "{\"format\":\"pt\",\"note\":\"round trip\"}", &err);
    TU_CHECK(rc == PS_OK, "st_write: %s", err.msg);
    TU_CHECK(access(tmp_path("rt.safetensors.tmp"), F_OK) != 0, "temporary file left behind");

    /* raw layout: header length multiple of 8, space padded, JSON starts with '{' */
    FILE *fp = fopen(path, "rb");
    uint8_t hdr[8] = {0};
    char first = 0, last = 0;
    uint64_t hlen = 0;
    if (fp && fread(hdr, 1, 8, fp) == 8) {
        for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | hdr[i];
        first = (char)fgetc(fp);
        fseek(fp, (long)(8 + hlen - 1), SEEK_SET);
        last = (char)fgetc(fp);
    }
    if (fp) fclose(fp);
    TU_CHECK(hlen % 8 == 0 && first == '{' && (last == '}' || last == ' '),
             "header length %llu first '%c' last '%c'", (unsigned long long)hlen, first, last);

    st_set *s = NULL;
    rc = st_open(path, &s, &err);
    TU_CHECK(rc == PS_OK, "reopen: %s", err.msg);
    if (rc != PS_OK) return;
    TU_CHECK(st_count(s) == n, "count %d, want %d", st_count(s), n);
    for (int i = 0; i < n; i++) {
        const st_tensor *t = st_find(s, items[i].name);
        TU_CHECK(t != NULL, "'%s' missing after round trip", items[i].name);
        if (!t) continue;
        TU_CHECK(t->dtype == items[i].dtype && t->ndim == items[i].ndim &&
                     memcmp(t->shape, items[i].shape, sizeof(int64_t) * (size_t)t->ndim) == 0,
                 "'%s': dtype/shape changed", t->name);
        size_t want = (size_t)st_numel(t) * st_dtype_size(t->dtype);
        TU_CHECK(t->nbytes == want && (want == 0 || memcmp(t->data, items[i].data, want) == 0),
                 "'%s': data changed (%zu bytes, want %zu)", t->name, t->nbytes, want);
        /* the writer's layout promise, on a page-aligned mapping */
        TU_CHECK((uintptr_t)t->data % st_dtype_size(t->dtype) == 0 && st_is_aligned(t), "'%s' misaligned",
                 t->name);
    }
    for (int i = 1; i < st_count(s); i++)
        TU_CHECK(strcmp(st_at(s, i - 1)->name, st_at(s, i)->name) < 0, "not sorted at %d", i);
    const char *note = st_metadata(s, "note");
    TU_CHECK(note && strcmp(note, "round trip") == 0, "metadata note = %s", note ? note : "(null)");
    TU_CHECK(st_metadata_count(s) == 2, "metadata count %d", st_metadata_count(s));

    float out[15];
    rc = st_to_f32(st_find(s, "w.f64"), out, 2, &err);
    TU_CHECK(rc == PS_OK && out[0] == (float)f64[0] && out[1] == (float)f64[1], "f64 -> f32");
    rc = st_to_f32(st_find(s, "w.bf16"), out, 6, &err);
    for (int i = 0; i < 6 && rc == PS_OK; i++)
        TU_CHECK(out[i] == 1.0f + (float)i / 128.0f, "bf16[%d] = %g", i, out[i]);
    rc = st_to_f32(st_find(s, "w.f16_odd"), out, 7, &err);
    TU_CHECK(rc == PS_OK && out[0] == -0.125f && out[3] == 0.0f && out[4] == 0.125f && out[6] == 1.0f,
             "f16 -> f32: %g %g %g %g", out[0], out[3], out[4], out[6]);
    rc = st_to_f32(st_find(s, "w.f32"), out, 15, &err);
    TU_CHECK(rc == PS_OK && memcmp(out, f32, sizeof f32) == 0, "f32 copy");
    rc = st_to_f32(st_find(s, "scalar"), out, 1, &err);
    TU_CHECK(rc == PS_OK && out[0] == 3.25f, "scalar");
    rc = st_to_f32(st_find(s, "w.absent"), out, 2, &err);
    TU_CHECK(rc == PS_EINVAL, "st_to_f32(NULL): rc %d", rc);
    rc = st_to_f32(st_find(s, "w.i32"), out, 2, &err);
    TU_CHECK(rc == PS_EINVAL && strstr(err.msg, "w.i32") && strstr(err.msg, "I32"), "I32: %s", err.msg);
    st_close(s);

    /* writer argument errors leave no file */
    st_write_item dup[] = {{"x", ST_F32, 1, {1}, f32}, {"x", ST_F32, 1, {1}, f32}};
    rc = st_write(tmp_path("dup.safetensors"), dup, 2, NULL, &err);
    TU_CHECK(rc == PS_EINVAL && strstr(err.msg, "'x'"), "duplicate write: %d %s", rc, err.msg);
    rc = st_write(tmp_path("dup.safetensors"), dup, 1, "{\"a\": 1}", &err);
    TU_CHECK(rc == PS_EINVAL && strstr(err.msg, "'a'"), "numeric metadata: %d %s", rc, err.msg);
    rc = st_write(tmp_path("dup.safetensors"), dup, 1, "[", &err);
    TU_CHECK(rc == PS_EINVAL, "bad metadata JSON accepted");
    st_write_item neg = {"neg", ST_F32, 1, {-1}, f32};
    rc = st_write(tmp_path("dup.safetensors"), &neg, 1, NULL, &err);
    TU_CHECK(rc == PS_EINVAL && strstr(err.msg, "'neg'"), "negative dim write: %d %s", rc, err.msg);
    TU_CHECK(access(tmp_path("dup.safetensors"), F_OK) != 0, "file written despite errors");
}

/* ---- corrupted files ---- */

/* 8-byte length + header + data_len zero bytes; hlen_override replaces the length field. */
static uint8_t *make_file(const char *header, size_t data_len, uint64_t hlen_override, size_t *n) {
    size_t hl = strlen(header);
    uint64_t field = hlen_override ? hlen_override : hl;
    *n = 8 + hl + data_len;
    uint8_t *b = calloc(*n, 1);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(field >> (8 * i));
    memcpy(b + 8, header, hl);
    return b;
}

typedef struct {
    const char *what, *header;
    size_t data_len;
    uint64_t hlen;      /* 0 = the real header length */
    size_t truncate_to; /* 0 = no truncation */
    const char *must;   /* substrings the message must contain, '|' separated */
} bad_case;

static const bad_case bad_cases[] = {
    {"truncated", "{}", 0, 0, 5, "5 bytes|shorter than"},
    {"header longer than file", "{}", 0, 1000, 0, "header length 1000|exceeds"},
    {"absurd header", "{}", 0, (uint64_t)1 << 40, 0, "1099511627776|limit"},
    {"bad json", "{\"w\": {\"dtype\": ", 0, 0, 0, "not valid JSON"},
    {"not an object", "[1, 2]", 0, 0, 0, "'{'"},
    {"trailing garbage", "{} x", 0, 0, 0, "not valid JSON"},
    {"entry not object", "{\"w.a\": 3}", 0, 0, 0, "'w.a'|an integer"},
    {"missing dtype", "{\"w.a\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4, 0, 0, "'w.a'|dtype"},
    {"missing shape", "{\"w.a\": {\"dtype\": \"F32\", \"data_offsets\": [0, 4]}}", 4, 0, 0, "'w.a'|shape"},
    {"missing offsets", "{\"w.a\": {\"dtype\": \"F32\", \"shape\": [1]}}", 4, 0, 0, "'w.a'|data_offsets"},
    {"unknown dtype", "{\"w.f8\": {\"dtype\": \"F8_E4M3\", \"shape\": [4], \"data_offsets\": [0, 4]}}", 4,
     0, 0, "'w.f8'|'F8_E4M3'"},
    {"dtype not string", "{\"w.a\": {\"dtype\": 4, \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, 0, 0,
     "'w.a'|dtype"},
    {"negative dim", "{\"w.neg\": {\"dtype\": \"F32\", \"shape\": [2, -1], \"data_offsets\": [0, 0]}}", 0,
     0, 0, "'w.neg'|-1"},
    {"real dim", "{\"w.r\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", 4, 0, 0,
     "'w.r'|shape[0]"},
    {"too many dims",
     "{\"w.9d\": {\"dtype\": \"U8\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 1]}}", 1, 0, 0,
     "'w.9d'|9 dims"},
    {"shape overflow",
     "{\"w.big\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 16], \"data_offsets\": [0, 0]}}",
     0, 0, 0, "'w.big'|overflows"},
    {"offsets not pair", "{\"w.a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0]}}", 1, 0, 0,
     "'w.a'|[begin, end]"},
    {"negative offset", "{\"w.a\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [-1, 0]}}", 1, 0,
     0, "'w.a'|data_offsets[0]"},
    {"begin > end", "{\"w.a\": {\"dtype\": \"U8\", \"shape\": [0], \"data_offsets\": [4, 2]}}", 8, 0, 0,
     "'w.a'|[4, 2]"},
    {"end out of range", "{\"w.oor\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", 12,
     0, 0, "'w.oor'|[0, 16]|12 bytes"},
    {"wrong byte size",
     "{\"lm_head.weight\": {\"dtype\": \"F16\", \"shape\": [2000, 128], \"data_offsets\": [0, 100]}}", 100,
     0, 0, "tensor 'lm_head.weight': data_offsets [0, 100] but shape [2000, 128] F16 needs 512000 bytes"},
    {"overlap",
     "{\"w.a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
     " \"w.b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}",
     12, 0, 0, "'w.a'|'w.b'|overlap"},
    {"overlap, nested",
     "{\"w.a\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]},"
     " \"w.c\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [15, 16]},"
     " \"w.b\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [4, 6]}}",
     16, 0, 0, "'w.a'|'w.b'|overlap"},
    {"duplicate name",
     "{\"w.dup\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [0, 1]},"
     " \"w.dup\": {\"dtype\": \"U8\", \"shape\": [1], \"data_offsets\": [1, 2]}}",
     2, 0, 0, "w.dup|duplicate"},
    {"metadata not object", "{\"__metadata__\": [\"a\"]}", 0, 0, 0, "__metadata__|an array"},
    {"metadata value not string", "{\"__metadata__\": {\"format\": \"pt\", \"step\": 3}}", 0, 0, 0,
     "__metadata__|'step'"},
};

static int msg_has_all(const char *msg, const char *must) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", must);
    for (char *p = strtok(buf, "|"); p; p = strtok(NULL, "|"))
        if (!strstr(msg, p)) return 0;
    return 1;
}

static void test_corrupt(void) {
    int nc = (int)(sizeof bad_cases / sizeof bad_cases[0]);
    for (int i = 0; i < nc; i++) {
        const bad_case *c = &bad_cases[i];
        size_t n;
        uint8_t *b = make_file(c->header, c->data_len, c->hlen, &n);
        if (c->truncate_to) n = c->truncate_to;
        st_set *s = (st_set *)&n; /* must be reset to NULL on failure */
        ps_err err = {0};
        ps_status rc = st_open_buffer(b, n, &s, &err);
        TU_CHECK(rc == PS_EFORMAT && s == NULL, "%s: rc %s, want eformat (%s)", c->what,
                 ps_status_name(rc), err.msg);
        TU_CHECK(msg_has_all(err.msg, c->must), "%s: message '%s' lacks '%s'", c->what, err.msg, c->must);
        if (rc == PS_OK) st_close(s);
        /* the same bytes as a file: same code, message prefixed with the path */
        const char *path = tmp_path("bad.safetensors");
        FILE *f = fopen(path, "wb");
        if (f) {
            fwrite(b, 1, n, f);
            fclose(f);
        }
        err.msg[0] = 0;
        rc = st_open(path, &s, &err);
        TU_CHECK(rc == PS_EFORMAT && strstr(err.msg, path) && msg_has_all(err.msg, c->must),
                 "%s (file): rc %s '%s'", c->what, ps_status_name(rc), err.msg);
        if (rc == PS_OK) st_close(s);
        free(b);
    }

    /* accepted edge cases: empty header object, gaps, empty tensors inside others */
    const char *ok[] = {
        "{}",
        "{\"w.a\": {\"dtype\": \"U8\", \"shape\": [2], \"data_offsets\": [6, 8]},"
        " \"w.z\": {\"dtype\": \"F32\", \"shape\": [0, 3], \"data_offsets\": [7, 7]}}  ",
    };
    for (int i = 0; i < 2; i++) {
        size_t n;
        uint8_t *b = make_file(ok[i], 8, 0, &n);
        st_set *s = NULL;
        ps_err err = {0};
        ps_status rc = st_open_buffer(b, n, &s, &err);
        TU_CHECK(rc == PS_OK && st_count(s) == 2 * i, "valid header %d rejected: %s", i, err.msg);
        if (rc == PS_OK && i == 1) {
            const st_tensor *a = st_find(s, "w.a"), *z = st_find(s, "w.z");
            TU_CHECK(a->data == b + n - 2, "data pointer not at data_offsets");
            size_t at = 8 + strlen(ok[1]) + 7; /* b is malloc-aligned, so alignment follows `at` */
            TU_CHECK(z->data == b + at && st_is_aligned(z) == (at % 4 == 0) && st_numel(z) == 0 &&
                         z->nbytes == 0,
                     "w.z: data at %td, want %zu", (const uint8_t *)z->data - b, at);
        }
        st_close(s);
        free(b);
    }
    st_set *s = NULL;
    ps_err err = {0};
    ps_status rc = st_open(tmp_path("does-not-exist.safetensors"), &s, &err);
    TU_CHECK(rc == PS_ENOTFOUND && strstr(err.msg, "does-not-exist"), "missing file: %s", err.msg);
    rc = st_open(tmpdir, &s, &err);
    TU_CHECK(rc == PS_EIO, "directory opened as a file: %s", err.msg);
}

/* ---- sharded folders ---- */

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

static const char *make_dir(const char *name) {
    const char *d = tmp_path(name);
    mkdir(d, 0700);
    return d;
}

static char *join(const char *dir, const char *f) {
    static char b[4][900];
    static int k;
    char *p = b[k++ % 4];
    snprintf(p, sizeof b[0], "%s/%s", dir, f);
    return p;
}

static const char *INDEX_OK =
    "{\"metadata\": {\"total_size\": 40}, \"weight_map\": {"
    "\"model.a\": \"model-00001-of-00002.safetensors\", \"model.c\": \"model-00001-of-00002.safetensors\","
    "\"model.b\": \"model-00002-of-00002.safetensors\"}}";

static void write_shards(const char *d, int dup) {
    static float x[6] = {1, 2, 3, 4, 5, 6};
    static uint16_t h[2] = {0x3C00, 0xC000};
    st_write_item s1[] = {{"model.a", ST_F32, 2, {2, 3}, x}, {"model.c", ST_F16, 1, {2}, h}};
    st_write_item s2[] = {{"model.b", ST_F32, 1, {4}, x + 2}, {"model.a", ST_F32, 1, {1}, x}};
    ps_err err = {0};
    ps_status rc = st_write(join(d, "model-00001-of-00002.safetensors"), s1, 2, "{\"format\":\"pt\"}", &err);
    TU_CHECK(rc == PS_OK, "write shard 1: %s", err.msg);
    rc = st_write(join(d, "model-00002-of-00002.safetensors"), s2, dup ? 2 : 1, "{\"format\":\"x\"}", &err);
    TU_CHECK(rc == PS_OK, "write shard 2: %s", err.msg);
}

static void expect_dir_error(const char *d, ps_status want, const char *must, const char *what) {
    st_set *s = (st_set *)&want;
    ps_err err = {0};
    ps_status rc = st_open_model_dir(d, &s, &err);
    TU_CHECK(rc == want && s == NULL && msg_has_all(err.msg, must), "%s: rc %s '%s' (want %s, '%s')",
             what, ps_status_name(rc), err.msg, ps_status_name(want), must);
}

static void test_sharded(void) {
    const char *d = make_dir("sharded");
    write_shards(d, 0);
    write_text(join(d, "model.safetensors.index.json"), INDEX_OK);
    st_set *s = NULL;
    ps_err err = {0};
    ps_status rc = st_open_model_dir(d, &s, &err);
    TU_CHECK(rc == PS_OK, "sharded open: %s", err.msg);
    if (rc == PS_OK) {
        TU_CHECK(st_count(s) == 3, "sharded count %d", st_count(s));
        const char *order[] = {"model.a", "model.b", "model.c"};
        for (int i = 0; i < 3 && i < st_count(s); i++)
            TU_CHECK(strcmp(st_at(s, i)->name, order[i]) == 0, "sharded order %d: %s", i, st_at(s, i)->name);
        const st_tensor *b = st_find(s, "model.b");
        float out[4];
        rc = b ? st_to_f32(b, out, 4, &err) : PS_ENOTFOUND;
        TU_CHECK(rc == PS_OK && out[0] == 3 && out[3] == 6, "model.b data from shard 2");
        const st_tensor *c = st_find(s, "model.c");
        rc = c ? st_to_f32(c, out, 2, &err) : PS_ENOTFOUND;
        TU_CHECK(rc == PS_OK && out[0] == 1.0f && out[1] == -2.0f, "model.c data from shard 1");
        const char *fmt = st_metadata(s, "format");
        TU_CHECK(fmt && strcmp(fmt, "pt") == 0, "merged metadata: first shard wins, got %s", fmt ? fmt : "-");
    }
    st_close(s);

    d = make_dir("missing-shard");
    write_shards(d, 0);
    write_text(join(d, "model.safetensors.index.json"),
               "{\"weight_map\": {\"model.a\": \"model-00001-of-00002.safetensors\","
               " \"model.q\": \"model-00003-of-00003.safetensors\"}}");
    expect_dir_error(d, PS_ENOTFOUND, "model-00003-of-00003.safetensors", "missing shard");

    d = make_dir("traversal");
    write_shards(d, 0);
    write_text(join(d, "model.safetensors.index.json"),
               "{\"weight_map\": {\"model.a\": \"../sharded/model-00001-of-00002.safetensors\"}}");
    expect_dir_error(d, PS_EFORMAT, "'model.a'|../sharded", "traversal with ..");
    write_text(join(d, "model.safetensors.index.json"),
               "{\"weight_map\": {\"model.a\": \"/etc/passwd\"}}");
    expect_dir_error(d, PS_EFORMAT, "/etc/passwd", "absolute shard path");

    d = make_dir("wrong-shard");
    write_shards(d, 0);
    write_text(join(d, "model.safetensors.index.json"),
               "{\"weight_map\": {\"model.a\": \"model-00001-of-00002.safetensors\","
               " \"model.b\": \"model-00001-of-00002.safetensors\"}}");
    expect_dir_error(d, PS_EFORMAT, "'model.b'|model-00001-of-00002.safetensors", "entry not in its shard");

    d = make_dir("dup-across");
    write_shards(d, 1);
    write_text(join(d, "model.safetensors.index.json"), INDEX_OK);
    expect_dir_error(d, PS_EFORMAT, "'model.a'|two shards", "tensor in two shards");

    d = make_dir("bad-index");
    write_text(join(d, "model.safetensors.index.json"), "{\"weight_map\": [");
    expect_dir_error(d, PS_EFORMAT, "model.safetensors.index.json|not valid JSON", "index not JSON");
    write_text(join(d, "model.safetensors.index.json"), "{\"weight_map\": {}}");
    expect_dir_error(d, PS_EFORMAT, "weight_map", "empty weight_map");
    write_text(join(d, "model.safetensors.index.json"), "{\"weight_map\": {\"model.a\": 3}}");
    expect_dir_error(d, PS_EFORMAT, "'model.a'", "non-string weight_map value");

    expect_dir_error(tmp_path("no-such-folder"), PS_ENOTFOUND, "no-such-folder|not found", "missing folder");

    d = make_dir("empty");
    expect_dir_error(d, PS_ENOTFOUND, "model.safetensors.index.json|model.safetensors", "empty folder");
}

static void rm_tree(const char *dir) {
    char cmd[700];
    /* only our own mkdtemp folder */
    if (strstr(dir, "st-test-")) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    }
}

/* Every 16-bit pattern through st_to_f32, from an odd address and with a
 * tail shorter than a vector: the bits of ps_f16_to_f32 / ps_bf16_to_f32
 * (NaN payloads included), whatever path the build takes. */
static void test_widen_all(void) {
    enum { N = 65536 };
    uint8_t *buf = malloc(2 * N + 1);
    float *out = malloc(sizeof(float) * N);
    ps_err err = {0};
    for (int i = 0; i < N; i++) memcpy(buf + 1 + 2 * i, &(uint16_t){(uint16_t)i}, 2);
    for (int f16 = 0; f16 < 2; f16++)
        for (int64_t n = N; n >= N - 5; n -= 5) { /* whole vectors, then a tail of 3 */
            st_tensor t = {"all", f16 ? ST_F16 : ST_BF16, 1, {n}, buf + 1 + 2 * (N - n), (size_t)(2 * n)};
            for (int64_t i = 0; i < n; i++) out[i] = -12345.0f;
            TU_CHECK(st_to_f32(&t, out, n, &err) == PS_OK, "widen: %s", err.msg);
            int64_t bad = 0, first = -1;
            for (int64_t i = 0; i < n; i++) {
                uint16_t h = (uint16_t)(N - n + i);
                float want = f16 ? ps_f16_to_f32(h) : ps_bf16_to_f32(h);
                if (memcmp(&out[i], &want, 4)) bad++, first = first < 0 ? h : first;
            }
            TU_CHECK(bad == 0, "%s, %lld values: %lld differ from the helper, first 0x%04llx",
                     f16 ? "f16" : "bf16", (long long)n, (long long)bad, (long long)first);
        }
    free(buf), free(out);
}

int main(void) {
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/st-test-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_roundtrip();
    test_widen_all();
    test_corrupt();
    test_sharded();
    rm_tree(tmpdir);
    /* report failures above even when the fixture part is skipped */
    if (tu_failures) return tu_finish("safetensors");
    test_fixture(); /* last: exits 77 when the fixtures are absent */
    return tu_finish("safetensors");
}
