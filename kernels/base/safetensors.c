/* safetensors reader: validates the header of one file or buffer and builds a
 * name-sorted index of views into the data; converts float tensors to f32.
 *
 * Mirrors the checks of the reference Rust reader (safetensors/src/tensor.rs,
 * Metadata::validate): header length within the file, JSON object, known dtype,
 * data_offsets [begin, end] with begin <= end inside the data section, byte size ==
 * numel * element size, no two tensors sharing bytes. Unlike the reference it
 * accepts gaps between tensors (harmless, and some writers align). It never copies
 * tensor data. Sharded folders are in safetensors_dir.c, the writer in
 * safetensors_write.c. */
#include "safetensors_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "math/half.h"

#if defined(__AVX2__) && defined(__F16C__)
#include <immintrin.h>
#endif

/* Names can be as long as the header; messages show at most this much of one. */
#define NM "%.160s"

static const char *const st_dtype_names[] = {"F64", "F32", "F16", "BF16", "I64",
                                             "I32", "I16", "I8",  "U8",   "BOOL"};
static const size_t st_dtype_sizes[] = {8, 4, 2, 2, 8, 4, 2, 1, 1, 1};
#define ST_N_DTYPES ((int)(sizeof st_dtype_sizes / sizeof st_dtype_sizes[0]))

const char *st_dtype_name(st_dtype dt) {
    return (unsigned)dt < (unsigned)ST_N_DTYPES ? st_dtype_names[dt] : "?";
}

size_t st_dtype_size(st_dtype dt) {
    return (unsigned)dt < (unsigned)ST_N_DTYPES ? st_dtype_sizes[dt] : 0;
}

int st_dtype_parse(const char *name, st_dtype *dt) {
    for (int i = 0; i < ST_N_DTYPES; i++)
        if (strcmp(name, st_dtype_names[i]) == 0) {
            *dt = (st_dtype)i;
            return 0;
        }
    return -1;
}

int64_t st_numel(const st_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

int st_is_aligned(const st_tensor *t) {
    return (uintptr_t)t->data % st_dtype_size(t->dtype) == 0;
}

const char *st_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t at = 0;
    at += (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < ndim && at < cap; d++)
        at += (size_t)snprintf(buf + at, cap - at, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (at < cap) snprintf(buf + at, cap - at, "]");
    return buf;
}

int st_nbytes_checked(st_dtype dt, int ndim, const int64_t *shape, uint64_t *bytes) {
    uint64_t n = st_dtype_size(dt);
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || __builtin_mul_overflow(n, (uint64_t)shape[d], &n)) return -1;
    }
    /* numel must also fit int64_t for st_numel and the op layer */
    if (n > (uint64_t)INT64_MAX) return -1;
    *bytes = n;
    return 0;
}

/* ---- set bookkeeping ---- */

static int st_cmp_tensor(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

static int st_cmp_meta(const void *a, const void *b) {
    return strcmp(((const st_meta *)a)->key, ((const st_meta *)b)->key);
}

ps_status st_set_sort_names(st_set *s, ps_err *err) {
    if (s->n > 1) qsort(s->tensors, (size_t)s->n, sizeof *s->tensors, st_cmp_tensor);
    for (int i = 1; i < s->n; i++)
        if (strcmp(s->tensors[i - 1].name, s->tensors[i].name) == 0)
            return ps_errf(err, PS_EFORMAT, "tensor '" NM "' appears twice", s->tensors[i].name);
    return PS_OK;
}

void st_set_sort_meta(st_set *s) {
    if (s->n_meta > 1) qsort(s->meta, (size_t)s->n_meta, sizeof *s->meta, st_cmp_meta);
}

void st_close(st_set *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++) free((char *)s->tensors[i].name);
    for (int i = 0; i < s->n_meta; i++) {
        free(s->meta[i].key);
        free(s->meta[i].value);
    }
    for (int i = 0; i < s->n_maps; i++) munmap(s->maps[i].addr, s->maps[i].len);
    free(s->tensors);
    free(s->meta);
    free(s->maps);
    free(s);
}

int st_count(const st_set *s) { return s ? s->n : 0; }

const st_tensor *st_at(const st_set *s, int i) {
    return s && i >= 0 && i < s->n ? &s->tensors[i] : NULL;
}

const st_tensor *st_find(const st_set *s, const char *name) {
    if (!s || !name) return NULL;
    int lo = 0, hi = s->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(name, s->tensors[mid].name);
        if (c == 0) return &s->tensors[mid];
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

const char *st_metadata(const st_set *s, const char *key) {
    if (!s || !key) return NULL;
    int lo = 0, hi = s->n_meta - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(key, s->meta[mid].key);
        if (c == 0) return s->meta[mid].value;
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

int st_metadata_count(const st_set *s) { return s ? s->n_meta : 0; }

const char *st_metadata_at(const st_set *s, int i, const char **key) {
    if (!s || i < 0 || i >= s->n_meta) return NULL;
    if (key) *key = s->meta[i].key;
    return s->meta[i].value;
}

/* ---- header parsing ---- */

static const char *st_json_kind(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    default: return "null";
    }
}

static ps_status st_parse_dtype(const char *name, const json_t *e, st_dtype *dt, ps_err *err) {
    const json_t *v = json_object_get(e, "dtype");
    if (!v) return ps_errf(err, PS_EFORMAT, "tensor '" NM "': missing 'dtype'", name);
    if (!json_is_string(v))
        return ps_errf(err, PS_EFORMAT, "tensor '" NM "': 'dtype' is %s, expected a string", name,
                       st_json_kind(v));
    if (st_dtype_parse(json_string_value(v), dt) != 0)
        return ps_errf(err, PS_EFORMAT,
                       "tensor '" NM "': unknown dtype '%.40s' (supported: F64 F32 F16 BF16 I64 "
                       "I32 I16 I8 U8 BOOL)",
                       name, json_string_value(v));
    return PS_OK;
}

static ps_status st_parse_shape(const char *name, const json_t *e, st_tensor *t, ps_err *err) {
    const json_t *v = json_object_get(e, "shape");
    if (!v) return ps_errf(err, PS_EFORMAT, "tensor '" NM "': missing 'shape'", name);
    if (!json_is_array(v))
        return ps_errf(err, PS_EFORMAT, "tensor '" NM "': 'shape' is %s, expected an array", name,
                       st_json_kind(v));
    size_t nd = json_array_size(v);
    if (nd > ST_MAX_DIMS)
        return ps_errf(err, PS_EFORMAT, "tensor '" NM "': shape has %zu dims, at most %d supported",
                       name, nd, ST_MAX_DIMS);
    t->ndim = (int)nd;
    for (size_t d = 0; d < nd; d++) {
        const json_t *x = json_array_get(v, d);
        if (!json_is_integer(x))
            return ps_errf(err, PS_EFORMAT, "tensor '" NM "': shape[%zu] is %s, expected an integer",
                           name, d, st_json_kind(x));
        t->shape[d] = (int64_t)json_integer_value(x);
        if (t->shape[d] < 0)
            return ps_errf(err, PS_EFORMAT, "tensor '" NM "': shape[%zu] is %lld, must be >= 0", name,
                           d, (long long)t->shape[d]);
    }
    return PS_OK;
}

static ps_status st_parse_offsets(const char *name, const json_t *e, uint64_t data_len,
                                  uint64_t off[2], ps_err *err) {
    const json_t *v = json_object_get(e, "data_offsets");
    if (!v) return ps_errf(err, PS_EFORMAT, "tensor '" NM "': missing 'data_offsets'", name);
    if (!json_is_array(v))
        return ps_errf(err, PS_EFORMAT, "tensor '" NM "': 'data_offsets' is %s, expected [begin, end]",
                       name, st_json_kind(v));
    if (json_array_size(v) != 2)
        return ps_errf(err, PS_EFORMAT,
                       "tensor '" NM "': 'data_offsets' has %zu items, expected [begin, end]", name,
                       json_array_size(v));
    for (int i = 0; i < 2; i++) {
        const json_t *x = json_array_get(v, (size_t)i);
        if (!json_is_integer(x) || json_integer_value(x) < 0)
            return ps_errf(err, PS_EFORMAT,
                           "tensor '" NM "': data_offsets[%d] must be an integer >= 0", name, i);
        off[i] = (uint64_t)json_integer_value(x);
    }
    if (off[0] > off[1])
        return ps_errf(err, PS_EFORMAT, "tensor '" NM "': data_offsets [%llu, %llu] has begin > end",
                       name, (unsigned long long)off[0], (unsigned long long)off[1]);
    if (off[1] > data_len)
        return ps_errf(err, PS_EFORMAT,
                       "tensor '" NM "': data_offsets [%llu, %llu] end beyond the data section "
                       "(%llu bytes)",
                       name, (unsigned long long)off[0], (unsigned long long)off[1],
                       (unsigned long long)data_len);
    return PS_OK;
}

/* One header entry -> t (name not set). off receives [begin, end]. */
static ps_status st_parse_entry(const char *name, const json_t *e, const uint8_t *data,
                                uint64_t data_len, st_tensor *t, uint64_t off[2], ps_err *err) {
    if (!json_is_object(e))
        return ps_errf(err, PS_EFORMAT, "tensor '" NM "': entry is %s, expected an object", name,
                       st_json_kind(e));
    ps_status rc;
    if ((rc = st_parse_dtype(name, e, &t->dtype, err)) != PS_OK) return rc;
    if ((rc = st_parse_shape(name, e, t, err)) != PS_OK) return rc;
    if ((rc = st_parse_offsets(name, e, data_len, off, err)) != PS_OK) return rc;
    char sh[200];
    uint64_t need;
    if (st_nbytes_checked(t->dtype, t->ndim, t->shape, &need) != 0)
        return ps_errf(err, PS_EFORMAT, "tensor '" NM "': shape %s %s overflows 64-bit byte size",
                       name, st_shape_str(sh, sizeof sh, t->ndim, t->shape),
                       st_dtype_name(t->dtype));
    if (off[1] - off[0] != need)
        return ps_errf(err, PS_EFORMAT,
                       "tensor '" NM "': data_offsets [%llu, %llu] but shape %s %s needs %llu bytes",
                       name, (unsigned long long)off[0], (unsigned long long)off[1],
                       st_shape_str(sh, sizeof sh, t->ndim, t->shape), st_dtype_name(t->dtype),
                       (unsigned long long)need);
    t->data = data + off[0];
    t->nbytes = (size_t)need;
    return PS_OK;
}

static ps_status st_parse_metadata(const json_t *m, st_set *s, ps_err *err) {
    if (!json_is_object(m))
        return ps_errf(err, PS_EFORMAT, "'__metadata__' is %s, expected an object of strings",
                       st_json_kind(m));
    s->meta = calloc(json_object_size(m) + 1, sizeof *s->meta);
    if (!s->meta) return ps_errf(err, PS_ENOMEM, "out of memory for metadata");
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)m, k, v) {
        if (!json_is_string(v))
            return ps_errf(err, PS_EFORMAT, "'__metadata__' key '" NM "' is %s, expected a string",
                           k, st_json_kind(v));
        st_meta *e = &s->meta[s->n_meta];
        e->key = strdup(k);
        e->value = strdup(json_string_value(v));
        if (e->key) s->n_meta++; /* counted once key is owned so close frees both */
        if (!e->key || !e->value) return ps_errf(err, PS_ENOMEM, "out of memory for metadata");
    }
    st_set_sort_meta(s);
    return PS_OK;
}

typedef struct {
    uint64_t begin, end;
    int idx;
} st_span;

static int st_cmp_span(const void *a, const void *b) {
    const st_span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Sorts the non-empty spans by begin: any begin before the furthest end seen so
 * far shares bytes with that tensor. Empty tensors own no bytes and are skipped. */
static ps_status st_check_overlap(const st_set *s, st_span *sp, int n, ps_err *err) {
    qsort(sp, (size_t)n, sizeof *sp, st_cmp_span);
    int prev = -1;
    for (int i = 0; i < n; i++) {
        if (sp[i].begin == sp[i].end) continue;
        if (prev >= 0 && sp[i].begin < sp[prev].end)
            return ps_errf(err, PS_EFORMAT,
                           "tensors '" NM "' data_offsets [%llu, %llu] and '" NM
                           "' [%llu, %llu] overlap",
                           s->tensors[sp[prev].idx].name, (unsigned long long)sp[prev].begin,
                           (unsigned long long)sp[prev].end, s->tensors[sp[i].idx].name,
                           (unsigned long long)sp[i].begin, (unsigned long long)sp[i].end);
        if (prev < 0 || sp[i].end > sp[prev].end) prev = i;
    }
    return PS_OK;
}

static ps_status st_parse_tensors(const json_t *root, const uint8_t *data, uint64_t data_len,
                                  st_set *s, ps_err *err) {
    size_t cap = json_object_size(root);
    st_span *sp = calloc(cap + 1, sizeof *sp);
    s->tensors = calloc(cap + 1, sizeof *s->tensors);
    ps_status rc = PS_OK;
    if (!sp || !s->tensors) {
        rc = ps_errf(err, PS_ENOMEM, "out of memory for %zu header entries", cap);
        goto fail;
    }
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)root, k, v) {
        if (strcmp(k, "__metadata__") == 0) {
            if ((rc = st_parse_metadata(v, s, err)) != PS_OK) goto fail;
            continue;
        }
        st_tensor *t = &s->tensors[s->n];
        uint64_t off[2];
        if ((rc = st_parse_entry(k, v, data, data_len, t, off, err)) != PS_OK) goto fail;
        if (!(t->name = strdup(k))) {
            rc = ps_errf(err, PS_ENOMEM, "out of memory for tensor names");
            goto fail;
        }
        sp[s->n] = (st_span){off[0], off[1], s->n};
        s->n++;
    }
    rc = st_check_overlap(s, sp, s->n, err);
fail:
    free(sp);
    return rc;
}

/* Validates buf as a whole safetensors file and fills s (tensors point into buf). */
static ps_status st_parse(const uint8_t *buf, size_t n, st_set *s, ps_err *err) {
    if (n < 8)
        return ps_errf(err, PS_EFORMAT, "file is %zu bytes, shorter than the 8-byte header length",
                       n);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen > ST_MAX_HEADER_BYTES)
        return ps_errf(err, PS_EFORMAT,
                       "header length %llu is over the %llu-byte limit (corrupt file?)",
                       (unsigned long long)hlen, (unsigned long long)ST_MAX_HEADER_BYTES);
    if (hlen > n - 8)
        return ps_errf(err, PS_EFORMAT,
                       "header length %llu exceeds the %zu bytes after the length field",
                       (unsigned long long)hlen, n - 8);
    if (hlen < 2 || buf[8] != '{')
        return ps_errf(err, PS_EFORMAT, "header does not start with '{' (header length %llu)",
                       (unsigned long long)hlen);
    json_error_t je;
    json_t *root = json_loadb((const char *)buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return ps_errf(err, PS_EFORMAT, "header is not valid JSON: %s (line %d, column %d)", je.text,
                       je.line, je.column);
    ps_status rc;
    if (!json_is_object(root))
        rc = ps_errf(err, PS_EFORMAT, "header is %s, expected a JSON object", st_json_kind(root));
    else
        rc = st_parse_tensors(root, buf + 8 + hlen, n - 8 - hlen, s, err);
    json_decref(root);
    if (rc == PS_OK) rc = st_set_sort_names(s, err);
    return rc;
}

ps_status st_open_buffer(const void *buf, size_t n, st_set **out, ps_err *err) {
    *out = NULL;
    if (!buf && n) return ps_errf(err, PS_EINVAL, "st_open_buffer: NULL buffer of %zu bytes", n);
    st_set *s = calloc(1, sizeof *s);
    if (!s) return ps_errf(err, PS_ENOMEM, "out of memory for a tensor set");
    ps_status rc = st_parse(buf, n, s, err);
    if (rc != PS_OK) {
        st_close(s);
        return rc;
    }
    *out = s;
    return PS_OK;
}

ps_status st_open(const char *path, st_set **out, ps_err *err) {
    *out = NULL;
    st_set *s = NULL;
    void *map = MAP_FAILED;
    size_t len = 0;
    ps_status rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return ps_errf(err, errno == ENOENT ? PS_ENOTFOUND : PS_EIO, "'%s': %s", path,
                       strerror(errno));
    struct stat stt;
    if (fstat(fd, &stt) != 0 || !S_ISREG(stt.st_mode)) {
        rc = ps_errf(err, PS_EIO, "'%s': not a regular file", path);
        goto fail;
    }
    len = (size_t)stt.st_size;
    if (len < 8) { /* mmap of an empty file fails; say what is wrong instead */
        rc = ps_errf(err, PS_EFORMAT,
                     "'%s': file is %zu bytes, shorter than the 8-byte header length", path, len);
        goto fail;
    }
    map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        rc = ps_errf(err, PS_EIO, "'%s': mmap of %zu bytes failed: %s", path, len, strerror(errno));
        goto fail;
    }
    s = calloc(1, sizeof *s);
    if (s) s->maps = calloc(1, sizeof *s->maps);
    if (!s || !s->maps) {
        rc = ps_errf(err, PS_ENOMEM, "'%s': out of memory for a tensor set", path);
        goto fail;
    }
    s->maps[0] = (st_mapping){map, len};
    s->n_maps = 1;
    map = MAP_FAILED; /* owned by s from here */
    if ((rc = st_parse(s->maps[0].addr, len, s, err)) != PS_OK) {
        ps_err_wrap(err, "'%s'", path);
        goto fail;
    }
    close(fd);
    *out = s;
    return PS_OK;
fail:
    if (map != MAP_FAILED) munmap(map, len);
    st_close(s);
    close(fd);
    return rc;
}

/* ---- conversion ---- */

/* n 16-bit floats at p (any alignment) widened, exactly as ps_f16_to_f32 /
 * ps_bf16_to_f32 do: 8 at a time where the build has AVX2 + F16C (a load of
 * a 7B model converts 6.7e9 of them). vcvtph2ps is the IEEE conversion, the
 * helper's value for every input but NaN, where it sets the quiet bit the
 * helper leaves as it is: a group holding a NaN takes the helper. */
static void st_widen16(const uint8_t *p, float *out, int64_t n, bool f16) {
    int64_t i = 0;
#if defined(__AVX2__) && defined(__F16C__)
    const __m128i magnitude = _mm_set1_epi16(0x7fff), inf = _mm_set1_epi16(0x7c00);
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(p + 2 * i));
        if (!f16) {
            _mm256_storeu_ps(out + i, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
        } else if (!_mm_movemask_epi8(_mm_cmpgt_epi16(_mm_and_si128(h, magnitude), inf))) {
            _mm256_storeu_ps(out + i, _mm256_cvtph_ps(h));
        } else {
            for (int j = 0; j < 8; j++) {
                uint16_t v;
                memcpy(&v, p + 2 * (i + j), 2);
                out[i + j] = ps_f16_to_f32(v);
            }
        }
    }
#endif
    for (; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + i * 2, 2);
        out[i] = f16 ? ps_f16_to_f32(h) : ps_bf16_to_f32(h);
    }
}

ps_status st_to_f32(const st_tensor *t, float *out, int64_t n, ps_err *err) {
    if (!t) return ps_errf(err, PS_EINVAL, "st_to_f32: no tensor (NULL, name not found?)");
    int64_t numel = st_numel(t);
    if (n != numel)
        return ps_errf(err, PS_EINVAL, "tensor '" NM "': %lld elements, caller expects %lld", t->name,
                       (long long)numel, (long long)n);
    const uint8_t *p = t->data;
    /* memcpy loads: mapped data is only as aligned as the file makes it */
    switch (t->dtype) {
    case ST_F32:
        memcpy(out, p, (size_t)n * 4);
        break;
    case ST_F64:
        for (int64_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + i * 8, 8);
            out[i] = (float)d;
        }
        break;
    case ST_F16:
    case ST_BF16:
        st_widen16(p, out, n, t->dtype == ST_F16);
        break;
    default:
        return ps_errf(err, PS_EINVAL, "tensor '" NM "': dtype %s cannot be converted to F32", t->name,
                       st_dtype_name(t->dtype));
    }
    return PS_OK;
}
