/* Opens a Hugging Face model folder as one tensor set: the shards named by
 * model.safetensors.index.json, or a single model.safetensors.
 *
 * Mirrors transformers' load_sharded_checkpoint: the index's "weight_map" maps
 * tensor name -> shard file in the same folder; every shard is opened once. We
 * additionally check that each weight_map entry really is in its shard, that no
 * tensor appears in two shards, and that shard names cannot leave the folder.
 * The index's own "metadata" (total_size, a number) is not exposed. */
#include "safetensors_impl.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define NM "%.160s"

static char *st_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int st_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static int st_cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorted, de-duplicated shard names of weight_map (pointers into the JSON). */
static ps_status st_index_shards(const char *index, const json_t *wm, const char ***names, int *n,
                                 ps_err *err) {
    const char **v = calloc(json_object_size(wm) + 1, sizeof *v);
    if (!v) return ps_errf(err, PS_ENOMEM, "'%s': out of memory", index);
    int k = 0;
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)wm, key, val) {
        if (!json_is_string(val)) {
            free(v);
            return ps_errf(err, PS_EFORMAT, "'%s': weight_map entry '" NM "' is not a string", index,
                           key);
        }
        const char *f = json_string_value(val);
        /* shard files must be plain names inside the folder (no path traversal) */
        if (!*f || strchr(f, '/') || strchr(f, '\\') || strstr(f, "..")) {
            free(v);
            return ps_errf(err, PS_EFORMAT,
                           "'%s': weight_map entry '" NM "' names shard '" NM
                           "', which is not a plain file name (no '/', '\\' or '..' allowed)",
                           index, key, f);
        }
        v[k++] = f;
    }
    qsort(v, (size_t)k, sizeof *v, st_cmp_str);
    int u = 0;
    for (int i = 0; i < k; i++)
        if (u == 0 || strcmp(v[u - 1], v[i]) != 0) v[u++] = v[i];
    *names = v;
    *n = u;
    return PS_OK;
}

typedef struct {
    st_tensor t;
    int shard;
} st_owned;

static int st_cmp_owned(const void *a, const void *b) {
    return strcmp(((const st_owned *)a)->t.name, ((const st_owned *)b)->t.name);
}

static ps_status st_merge_meta(st_set *dst, st_set *const *parts, int n_parts, ps_err *err) {
    int total = 0;
    for (int i = 0; i < n_parts; i++) total += parts[i]->n_meta;
    dst->meta = calloc((size_t)total + 1, sizeof *dst->meta);
    if (!dst->meta) return ps_errf(err, PS_ENOMEM, "out of memory for metadata");
    for (int i = 0; i < n_parts; i++)
        for (int j = 0; j < parts[i]->n_meta; j++) {
            const st_meta *m = &parts[i]->meta[j];
            int seen = 0;
            for (int q = 0; q < dst->n_meta && !seen; q++) seen = strcmp(dst->meta[q].key, m->key) == 0;
            if (seen) continue;
            st_meta *e = &dst->meta[dst->n_meta];
            e->key = strdup(m->key);
            e->value = strdup(m->value);
            if (e->key) dst->n_meta++;
            if (!e->key || !e->value) return ps_errf(err, PS_ENOMEM, "out of memory for metadata");
        }
    st_set_sort_meta(dst);
    return PS_OK;
}

/* Moves the tensors and mappings of parts into dst (parts keep only metadata). */
static ps_status st_merge(st_set *dst, st_set **parts, const char **shard_names, int n_parts,
                          ps_err *err) {
    int total = 0;
    for (int i = 0; i < n_parts; i++) total += parts[i]->n;
    st_owned *all = calloc((size_t)total + 1, sizeof *all);
    dst->tensors = calloc((size_t)total + 1, sizeof *dst->tensors);
    dst->maps = calloc((size_t)n_parts + 1, sizeof *dst->maps);
    if (!all || !dst->tensors || !dst->maps) {
        free(all);
        return ps_errf(err, PS_ENOMEM, "out of memory merging %d shards", n_parts);
    }
    int k = 0;
    for (int i = 0; i < n_parts; i++) {
        for (int j = 0; j < parts[i]->n; j++) all[k++] = (st_owned){parts[i]->tensors[j], i};
        parts[i]->n = 0;
        for (int j = 0; j < parts[i]->n_maps; j++) dst->maps[dst->n_maps++] = parts[i]->maps[j];
        parts[i]->n_maps = 0;
    }
    qsort(all, (size_t)total, sizeof *all, st_cmp_owned);
    for (int i = 0; i < total; i++) dst->tensors[dst->n++] = all[i].t; /* names owned by dst now */
    ps_status rc = PS_OK;
    for (int i = 1; i < total && rc == PS_OK; i++)
        if (strcmp(all[i - 1].t.name, all[i].t.name) == 0)
            rc = ps_errf(err, PS_EFORMAT, "tensor '" NM "' is in two shards, '" NM "' and '" NM "'",
                         all[i].t.name, shard_names[all[i - 1].shard], shard_names[all[i].shard]);
    free(all);
    if (rc == PS_OK) rc = st_merge_meta(dst, parts, n_parts, err);
    return rc;
}

static ps_status st_check_weight_map(const char *index, const json_t *wm, st_set **parts,
                                     const char **shard_names, int n_parts, ps_err *err) {
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)wm, key, val) {
        const char *f = json_string_value(val);
        const char **hit = bsearch(&f, shard_names, (size_t)n_parts, sizeof *shard_names, st_cmp_str);
        if (!hit || !st_find(parts[hit - shard_names], key))
            return ps_errf(err, PS_EFORMAT, "'%s': weight_map puts tensor '" NM "' in '" NM
                           "', which has no such tensor", index, key, f);
    }
    return PS_OK;
}

static ps_status st_open_index(const char *dir, const char *index, st_set **out, ps_err *err) {
    const char **names = NULL;
    st_set **parts = NULL, *s = NULL;
    int n_parts = 0;
    ps_status rc;
    json_error_t je;
    json_t *root = json_load_file(index, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return ps_errf(err, PS_EFORMAT, "'%s': not valid JSON: %s (line %d, column %d)", index,
                       je.text, je.line, je.column);
    const json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm) || json_object_size(wm) == 0) {
        rc = ps_errf(err, PS_EFORMAT, "'%s': 'weight_map' must be a non-empty object", index);
        goto fail;
    }
    if ((rc = st_index_shards(index, wm, &names, &n_parts, err)) != PS_OK) goto fail;
    parts = calloc((size_t)n_parts, sizeof *parts);
    if (!parts) {
        rc = ps_errf(err, PS_ENOMEM, "'%s': out of memory", index);
        goto fail;
    }
    for (int i = 0; i < n_parts; i++) {
        char *path = st_join(dir, names[i]);
        rc = path ? st_open(path, &parts[i], err) : ps_errf(err, PS_ENOMEM, "out of memory");
        free(path);
        if (rc != PS_OK) {
            ps_err_wrap(err, "shard '" NM "' of '%s'", names[i], index);
            goto fail;
        }
    }
    if ((rc = st_check_weight_map(index, wm, parts, names, n_parts, err)) != PS_OK) goto fail;
    if (!(s = calloc(1, sizeof *s))) {
        rc = ps_errf(err, PS_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = st_merge(s, parts, names, n_parts, err)) != PS_OK) goto fail;
    *out = s;
    s = NULL;
fail:
    st_close(s);
    for (int i = 0; parts && i < n_parts; i++) st_close(parts[i]);
    free(parts);
    free(names);
    json_decref(root);
    return rc;
}

ps_status st_open_model_dir(const char *dir, st_set **out, ps_err *err) {
    *out = NULL;
    char *index = st_join(dir, "model.safetensors.index.json");
    char *single = st_join(dir, "model.safetensors");
    ps_status rc;
    struct stat st;
    if (!index || !single)
        rc = ps_errf(err, PS_ENOMEM, "out of memory");
    else if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        rc = ps_errf(err, PS_ENOTFOUND, "'%s': model folder not found (not a directory)", dir);
    else if (st_exists(index))
        rc = st_open_index(dir, index, out, err);
    else if (st_exists(single))
        rc = st_open(single, out, err);
    else
        rc = ps_errf(err, PS_ENOTFOUND,
                     "'%s': no model weights: looked for model.safetensors.index.json and "
                     "model.safetensors",
                     dir);
    free(index);
    free(single);
    return rc;
}
