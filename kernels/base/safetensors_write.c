/* safetensors writer: the format of safetensors.h, laid out the way the Python
 * writer does (safetensors/src/tensor.rs, prepare: tensors sorted by element size
 * descending, then by name, stored back to back; header padded with spaces to a
 * multiple of 8), so every tensor starts aligned to its element size.
 *
 * Writes path.tmp and renames it over path, so readers never see a half-written
 * file. Does not stream: the caller holds all tensor data in memory. */
#include "safetensors_impl.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NM "%.160s"

typedef struct {
    const st_write_item *it;
    uint64_t nbytes;
} st_witem;

static int st_cmp_witem_name(const void *a, const void *b) {
    return strcmp(((const st_witem *)a)->it->name, ((const st_witem *)b)->it->name);
}

static int st_cmp_witem_layout(const void *a, const void *b) {
    const st_witem *x = a, *y = b;
    size_t sx = st_dtype_size(x->it->dtype), sy = st_dtype_size(y->it->dtype);
    if (sx != sy) return sx > sy ? -1 : 1;
    return strcmp(x->it->name, y->it->name);
}

static ps_status st_check_item(const st_write_item *it, int i, uint64_t *nbytes, ps_err *err) {
    if (!it->name || !*it->name || strcmp(it->name, "__metadata__") == 0)
        return ps_errf(err, PS_EINVAL, "st_write: item %d has no usable name ('%s')", i,
                       it->name ? it->name : "(null)");
    if (st_dtype_size(it->dtype) == 0)
        return ps_errf(err, PS_EINVAL, "st_write: tensor '" NM "': dtype %d out of range", it->name,
                       (int)it->dtype);
    if (it->ndim < 0 || it->ndim > ST_MAX_DIMS)
        return ps_errf(err, PS_EINVAL, "st_write: tensor '" NM "': ndim %d, must be 0..%d", it->name,
                       it->ndim, ST_MAX_DIMS);
    char sh[200];
    if (st_nbytes_checked(it->dtype, it->ndim, it->shape, nbytes) != 0)
        return ps_errf(err, PS_EINVAL,
                       "st_write: tensor '" NM "': shape %s has a negative dim or overflows", it->name,
                       st_shape_str(sh, sizeof sh, it->ndim, it->shape));
    if (*nbytes && !it->data)
        return ps_errf(err, PS_EINVAL, "st_write: tensor '" NM "': NULL data for %llu bytes", it->name,
                       (unsigned long long)*nbytes);
    return PS_OK;
}

/* Parses metadata_json into root["__metadata__"] (an object of strings). */
static ps_status st_add_metadata(json_t *root, const char *metadata_json, ps_err *err) {
    json_error_t je;
    json_t *m = json_loads(metadata_json, JSON_REJECT_DUPLICATES, &je);
    if (!m) return ps_errf(err, PS_EINVAL, "st_write: metadata is not valid JSON: %s", je.text);
    const char *k;
    json_t *v;
    if (!json_is_object(m)) {
        json_decref(m);
        return ps_errf(err, PS_EINVAL, "st_write: metadata must be a JSON object of strings");
    }
    json_object_foreach(m, k, v) {
        if (!json_is_string(v)) {
            /* k lives in m: format before releasing it */
            ps_status rc = ps_errf(err, PS_EINVAL, "st_write: metadata key '" NM "' is not a string", k);
            json_decref(m);
            return rc;
        }
    }
    json_object_set_new(root, "__metadata__", m);
    return PS_OK;
}

/* Header JSON, space-padded to a multiple of 8 (malloc'd, *len set). */
static ps_status st_build_header(const st_witem *w, int n, const char *metadata_json, char **out,
                                 size_t *len, ps_err *err) {
    ps_status rc = PS_OK;
    json_t *root = json_object();
    if (!root) return ps_errf(err, PS_ENOMEM, "st_write: out of memory");
    if (metadata_json && (rc = st_add_metadata(root, metadata_json, err)) != PS_OK) goto fail;
    uint64_t at = 0;
    for (int i = 0; i < n; i++) {
        const st_write_item *it = w[i].it;
        json_t *shape = json_array();
        for (int d = 0; shape && d < it->ndim; d++)
            json_array_append_new(shape, json_integer(it->shape[d]));
        json_t *e = json_pack("{s:s, s:o*, s:[I,I]}", "dtype", st_dtype_name(it->dtype), "shape", shape,
                              "data_offsets", (json_int_t)at, (json_int_t)(at + w[i].nbytes));
        if (!shape || !e || json_object_set_new(root, it->name, e) != 0) {
            rc = ps_errf(err, PS_EINVAL, "st_write: tensor '" NM "': cannot add to the header "
                         "(name not valid UTF-8, or out of memory)", it->name);
            goto fail;
        }
        at += w[i].nbytes;
    }
    char *js = json_dumps(root, JSON_COMPACT);
    if (!js) {
        rc = ps_errf(err, PS_ENOMEM, "st_write: out of memory serialising the header");
        goto fail;
    }
    size_t jl = strlen(js), padded = (jl + 7) & ~(size_t)7;
    char *h = realloc(js, padded + 1);
    if (!h) {
        free(js);
        rc = ps_errf(err, PS_ENOMEM, "st_write: out of memory");
        goto fail;
    }
    memset(h + jl, ' ', padded - jl);
    h[padded] = 0;
    *out = h;
    *len = padded;
fail:
    json_decref(root);
    return rc;
}

static ps_status st_write_file(const char *tmp, const char *hdr, size_t hlen, const st_witem *w,
                               int n, ps_err *err) {
    FILE *f = fopen(tmp, "wb");
    if (!f) return ps_errf(err, PS_EIO, "st_write: cannot create '%s': %s", tmp, strerror(errno));
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    int ok = fwrite(le, 1, 8, f) == 8 && fwrite(hdr, 1, hlen, f) == hlen;
    for (int i = 0; ok && i < n; i++)
        ok = w[i].nbytes == 0 || fwrite(w[i].it->data, 1, (size_t)w[i].nbytes, f) == w[i].nbytes;
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int saved = errno;
    if (fclose(f) != 0 && ok) {
        ok = 0;
        saved = errno;
    }
    if (!ok) return ps_errf(err, PS_EIO, "st_write: writing '%s' failed: %s", tmp, strerror(saved));
    return PS_OK;
}

ps_status st_write(const char *path, const st_write_item *items, int n, const char *metadata_json,
                   ps_err *err) {
    if (n < 0 || (n > 0 && !items) || !path)
        return ps_errf(err, PS_EINVAL, "st_write: bad arguments (n %d)", n);
    ps_status rc = PS_OK;
    char *hdr = NULL, *tmp = NULL;
    size_t hlen = 0;
    st_witem *w = calloc((size_t)n + 1, sizeof *w);
    if (!w) return ps_errf(err, PS_ENOMEM, "st_write: out of memory");
    for (int i = 0; i < n; i++) {
        w[i].it = &items[i];
        if ((rc = st_check_item(&items[i], i, &w[i].nbytes, err)) != PS_OK) goto fail;
    }
    qsort(w, (size_t)n, sizeof *w, st_cmp_witem_name);
    for (int i = 1; i < n; i++)
        if (strcmp(w[i - 1].it->name, w[i].it->name) == 0) {
            rc = ps_errf(err, PS_EINVAL, "st_write: tensor '" NM "' given twice", w[i].it->name);
            goto fail;
        }
    qsort(w, (size_t)n, sizeof *w, st_cmp_witem_layout);
    if ((rc = st_build_header(w, n, metadata_json, &hdr, &hlen, err)) != PS_OK) goto fail;
    size_t tl = strlen(path) + 5;
    if (!(tmp = malloc(tl))) {
        rc = ps_errf(err, PS_ENOMEM, "st_write: out of memory");
        goto fail;
    }
    snprintf(tmp, tl, "%s.tmp", path);
    if ((rc = st_write_file(tmp, hdr, hlen, w, n, err)) != PS_OK) {
        unlink(tmp);
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        rc = ps_errf(err, PS_EIO, "st_write: rename '%s' -> '%s' failed: %s", tmp, path,
                     strerror(errno));
        unlink(tmp);
    }
fail:
    free(tmp);
    free(hdr);
    free(w);
    return rc;
}
