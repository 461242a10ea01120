/* The adapter registry (see adapter_registry.h).
 *
 * Two kinds of records: an entry per registered name (its description, the
 * resident version or NULL when evicted, an LRU tick) and a version per
 * loaded adapter (the adapter and its pin count). A version whose name was
 * removed or replaced is "retired": it is freed at its last unpin. One mutex
 * guards everything; a condition variable lets pinners of an adapter being
 * reloaded wait for that single load. Loads and file writes run unlocked. */
#include "adapter_registry.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adapter_store.h"
#include "base/log.h"

typedef struct reg_version {
    adapter *a;
    int refs;
    bool retired;
    struct reg_version *next;
} reg_version;

typedef struct {
    adapter_info info;
    reg_version *v;   /* resident version, NULL when evicted */
    uint64_t last_use;
    bool loading;     /* a pinner is reloading it from disk */
    bool removed;     /* removed while loading: the loader frees the entry */
} reg_entry;

struct adapter_registry {
    pthread_mutex_t mu;
    pthread_cond_t loaded;
    char *dir;
    int64_t budget;
    adapter_base_shape base;
    adapter_limits limits;
    ps_backend *be;
    reg_entry **entries; /* sorted by name */
    int n, cap;
    reg_version *versions; /* every live version, resident or retired */
    int64_t resident;
    uint64_t tick;
};

/* ---- lookup (lock held) ---- */

static int find_index(const adapter_registry *r, const char *name, bool *found) {
    int lo = 0, hi = r->n;
    while (lo < hi) {
        int mid = (lo + hi) / 2, c = strcmp(r->entries[mid]->info.name, name);
        if (c == 0) return *found = true, mid;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    *found = false;
    return lo;
}

static reg_entry *find(const adapter_registry *r, const char *name) {
    bool found;
    int i = find_index(r, name, &found);
    return found ? r->entries[i] : NULL;
}

static ps_status insert(adapter_registry *r, reg_entry *e, ps_err *err) {
    bool found;
    int i = find_index(r, e->info.name, &found);
    if (r->n == r->cap) {
        int cap = r->cap ? r->cap * 2 : 16;
        reg_entry **g = realloc(r->entries, sizeof *g * (size_t)cap);
        if (!g) return ps_errf(err, PS_ENOMEM, "adapters: out of memory");
        r->entries = g;
        r->cap = cap;
    }
    memmove(r->entries + i + 1, r->entries + i, sizeof *r->entries * (size_t)(r->n - i));
    r->entries[i] = e;
    r->n++;
    return PS_OK;
}

static void unlink_entry(adapter_registry *r, const char *name) {
    bool found;
    int i = find_index(r, name, &found);
    if (!found) return;
    memmove(r->entries + i, r->entries + i + 1, sizeof *r->entries * (size_t)(r->n - i - 1));
    r->n--;
}

/* ---- versions and budget (lock held) ---- */

/* Makes v (preallocated, so nothing can fail after a commit) hold a. */
static reg_version *version_attach(adapter_registry *r, reg_version *v, adapter *a) {
    memset(v, 0, sizeof *v);
    v->a = a;
    v->next = r->versions;
    r->versions = v;
    r->resident += (int64_t)adapter_bytes(a);
    return v;
}

/* Unlinks and returns the adapter to free after unlocking. */
static adapter *version_drop(adapter_registry *r, reg_version *v) {
    for (reg_version **p = &r->versions; *p; p = &(*p)->next)
        if (*p == v) {
            *p = v->next;
            break;
        }
    r->resident -= (int64_t)adapter_bytes(v->a);
    adapter *a = v->a;
    free(v);
    return a;
}

static reg_entry *lru_idle(adapter_registry *r) {
    reg_entry *best = NULL;
    for (int i = 0; i < r->n; i++) {
        reg_entry *e = r->entries[i];
        if (e->v && e->v->refs == 0 && (!best || e->last_use < best->last_use)) best = e;
    }
    return best;
}

/* Evicts idle adapters, least recently used first, until `need` more bytes
 * fit. Only persisted adapters can go (they are reloaded on demand). */
static ps_status make_room(adapter_registry *r, int64_t need, const char *who, ps_err *err) {
    if (r->budget <= 0) return PS_OK;
    while (r->resident + need > r->budget) {
        reg_entry *e = r->dir ? lru_idle(r) : NULL;
        if (!e)
            return ps_errf(err, PS_ENOMEM,
                           "adapter memory budget %.1f MB exhausted: %.1f MB resident and in use, '%s' needs %.1f MB",
                           (double)r->budget / 1e6, (double)r->resident / 1e6, who, (double)need / 1e6);
        PS_LOG_INFO("adapters", "evicted adapter=%s bytes=%lld (idle, least recently used)", e->info.name,
                    (long long)e->info.bytes);
        adapter_free(version_drop(r, e->v));
        e->v = NULL;
        e->info.resident = false;
    }
    return PS_OK;
}

static void describe(const adapter *a, adapter_info *info) {
    snprintf(info->name, sizeof info->name, "%s", a->name);
    info->kind = a->kind;
    info->max_rank = a->max_rank;
    info->targets = a->targets;
    info->rslora = a->rslora;
    info->n_prefix = a->n_prefix;
    info->n_virtual = a->n_virtual;
    info->has_lm_head = a->lm_head != NULL;
    info->has_embed_tokens = a->embed_tokens != NULL;
    info->bytes = (int64_t)adapter_bytes(a);
    info->lora_dtype = a->lora_dtype;
    info->resident = true;
}

/* ---- init / free ---- */

static ps_status registry_reload(adapter_registry *r, ps_err *err);

ps_status adapter_registry_init(adapter_registry **out, const adapter_registry_opts *o, ps_err *err) {
    *out = NULL;
    adapter_registry *r = calloc(1, sizeof *r);
    if (!r) return ps_errf(err, PS_ENOMEM, "adapters: out of memory");
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->loaded, NULL);
    r->budget = o->budget_bytes;
    r->base = o->base;
    r->limits = o->limits.max_bytes ? o->limits : adapter_limits_default();
    r->limits.lora_dtype = o->limits.lora_dtype;
    r->be = o->be;
    ps_status s = PS_OK;
    if (o->dir && o->dir[0]) {
        if (!(r->dir = strdup(o->dir))) s = ps_errf(err, PS_ENOMEM, "adapters: out of memory");
        else if (!(s = adapter_store_prepare(r->dir, err))) s = registry_reload(r, err);
    }
    if (s) {
        adapter_registry_free(r);
        return s;
    }
    *out = r;
    return PS_OK;
}

void adapter_registry_free(adapter_registry *r) {
    if (!r) return;
    while (r->versions) adapter_free(version_drop(r, r->versions));
    for (int i = 0; i < r->n; i++) free(r->entries[i]);
    free(r->entries);
    free(r->dir);
    pthread_cond_destroy(&r->loaded);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* Loads <dir>/<name> (unlocked). */
static ps_status load_from_disk(adapter_registry *r, const char *name, adapter **a, ps_err *err) {
    char path[ADAPTER_STORE_PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", r->dir, name);
    ps_status s = adapter_load_dir(path, name, &r->base, &r->limits, r->be, a, err);
    return s ? ps_err_wrap(err, "adapter '%s'", name) : PS_OK;
}

/* ---- add / remove ---- */

/* Commit point of an add (lock held): budget, files, entry. After the files
 * are renamed into place nothing can fail (allocations are made before). */
static ps_status commit_add(adapter_registry *r, adapter *a, const char *tmp, bool replace,
                            adapter_info *info, adapter **drop, ps_err *err) {
    reg_entry *e = find(r, a->name);
    if (e && !replace)
        return ps_errf(err, PS_EEXIST, "adapter '%s' already exists (delete it first, or replace it)", a->name);
    ps_status s = make_room(r, (int64_t)adapter_bytes(a), a->name, err);
    if (s) return s;
    reg_version *v = malloc(sizeof *v);
    reg_entry *fresh = e ? NULL : calloc(1, sizeof *fresh);
    if (!v || (!e && !fresh)) {
        free(v), free(fresh);
        return ps_errf(err, PS_ENOMEM, "adapters: out of memory");
    }
    if (fresh) snprintf(fresh->info.name, sizeof fresh->info.name, "%s", a->name);
    if (fresh && (s = insert(r, fresh, err))) return free(v), free(fresh), s;
    if (tmp && (s = adapter_store_commit(r->dir, tmp, a->name, err))) {
        if (fresh) unlink_entry(r, a->name), free(fresh);
        return free(v), s;
    }
    e = fresh ? fresh : e;
    if (e->v) {
        e->v->retired = true;
        if (e->v->refs == 0) *drop = version_drop(r, e->v);
    }
    e->v = version_attach(r, v, a);
    describe(a, &e->info);
    e->info.refs = 0;
    e->info.created = (int64_t)time(NULL);
    e->last_use = ++r->tick;
    if (info) *info = e->info;
    return PS_OK;
}

ps_status adapter_registry_add(adapter_registry *r, const char *name, const char *config_json,
                               size_t config_len, const void *st, size_t st_len, bool replace,
                               adapter_info *info, ps_err *err) {
    adapter *a = NULL, *drop = NULL;
    char tmp[ADAPTER_STORE_PATH_MAX] = "";
    ps_status s = adapter_load_mem(name, config_json, config_len, st, st_len, &r->base, &r->limits, r->be, &a, err);
    if (s) return s;
    if (r->dir && (s = adapter_store_write(r->dir, name, config_json, config_len, st, st_len, tmp, sizeof tmp, err)))
        goto fail;
    adapter_kind kind = a->kind; /* `a` belongs to the registry once committed */
    size_t bytes = adapter_bytes(a);
    pthread_mutex_lock(&r->mu);
    bool existed = find(r, name) != NULL;
    s = commit_add(r, a, r->dir ? tmp : NULL, replace, info, &drop, err);
    pthread_mutex_unlock(&r->mu);
    if (s) goto fail;
    adapter_free(drop);
    PS_LOG_INFO("adapters", "registered adapter=%s kind=%s bytes=%zu%s", name, adapter_kind_name(kind), bytes,
                existed ? " (replaced)" : "");
    return PS_OK;
fail:
    if (tmp[0]) adapter_store_discard(tmp);
    adapter_free(a);
    return s;
}

ps_status adapter_registry_remove(adapter_registry *r, const char *name, ps_err *err) {
    adapter *drop = NULL;
    pthread_mutex_lock(&r->mu);
    reg_entry *e = find(r, name);
    ps_status s = PS_OK;
    if (!e) {
        s = ps_errf(err, PS_ENOTFOUND, "adapter '%.64s' not found", name);
    } else if (r->dir && (s = adapter_store_remove(r->dir, name, err))) {
        /* files still there: keep the entry so registry and disk agree */
    } else {
        unlink_entry(r, name);
        if (e->v) {
            e->v->retired = true;
            if (e->v->refs == 0) drop = version_drop(r, e->v);
        }
        if (e->loading) e->removed = true; /* the loader frees it */
        else free(e);
    }
    pthread_mutex_unlock(&r->mu);
    adapter_free(drop);
    if (!s) PS_LOG_INFO("adapters", "removed adapter=%s", name);
    return s;
}

/* At init, single-threaded: every valid folder becomes an entry; a folder
 * that does not load is logged and skipped (and left on disk for inspection). */
static ps_status registry_reload(adapter_registry *r, ps_err *err) {
    char **names;
    int n = adapter_store_list(r->dir, &names, err);
    if (n < 0) return err ? err->code : PS_EIO;
    for (int i = 0; i < n; i++) {
        adapter *a = NULL, *drop = NULL;
        ps_err e2 = {0};
        if (load_from_disk(r, names[i], &a, &e2) != PS_OK ||
            commit_add(r, a, NULL, false, NULL, &drop, &e2) != PS_OK) {
            PS_LOG_WARN("adapters", "skipping stored adapter '%s': %s", names[i], e2.msg);
            adapter_free(a);
        } else {
            reg_entry *e = find(r, names[i]);
            e->info.created = adapter_store_mtime(r->dir, names[i]);
            PS_LOG_INFO("adapters", "reloaded adapter=%s kind=%s bytes=%lld", names[i],
                        adapter_kind_name(e->info.kind), (long long)e->info.bytes);
        }
        free(names[i]);
    }
    free(names);
    return PS_OK;
}

/* ---- pin / unpin ---- */

/* Reloads an evicted entry; called with the lock held and e->loading set by
 * the caller; returns with the lock held. */
static ps_status reload_entry(adapter_registry *r, reg_entry *e, const char *name, ps_err *err) {
    adapter *a = NULL;
    pthread_mutex_unlock(&r->mu);
    ps_status s = load_from_disk(r, name, &a, err);
    pthread_mutex_lock(&r->mu);
    e->loading = false;
    pthread_cond_broadcast(&r->loaded);
    if (e->removed) {
        free(e);
        adapter_free(a);
        return ps_errf(err, PS_ENOTFOUND, "adapter '%.64s' not found (removed)", name);
    }
    if (s) return s;
    if (e->v) { /* replaced meanwhile: the new version wins */
        adapter_free(a);
        return PS_OK;
    }
    reg_version *v = malloc(sizeof *v);
    if (!v || (s = make_room(r, (int64_t)adapter_bytes(a), name, err))) {
        free(v);
        adapter_free(a);
        return s ? s : ps_errf(err, PS_ENOMEM, "adapters: out of memory");
    }
    e->v = version_attach(r, v, a);
    e->info.resident = true;
    PS_LOG_INFO("adapters", "reloaded evicted adapter=%s bytes=%zu", name, adapter_bytes(a));
    return PS_OK;
}

ps_status adapter_registry_pin(adapter_registry *r, const char *name, adapter **out, ps_err *err) {
    *out = NULL;
    pthread_mutex_lock(&r->mu);
    ps_status s = PS_OK;
    for (;;) {
        reg_entry *e = find(r, name);
        if (!e) {
            s = ps_errf(err, PS_ENOTFOUND, "adapter '%.64s' not found", name);
            break;
        }
        if (e->v) {
            e->v->refs++;
            e->info.refs = e->v->refs;
            e->last_use = ++r->tick;
            *out = e->v->a;
            break;
        }
        if (e->loading) { /* another pinner is loading it: wait, then look again */
            pthread_cond_wait(&r->loaded, &r->mu);
            continue;
        }
        e->loading = true;
        if ((s = reload_entry(r, e, name, err))) break;
    }
    pthread_mutex_unlock(&r->mu);
    return s;
}

void adapter_registry_unpin(adapter_registry *r, adapter *a) {
    if (!a) return;
    adapter *drop = NULL;
    pthread_mutex_lock(&r->mu);
    reg_version *v = r->versions;
    while (v && v->a != a) v = v->next;
    PS_ASSERT(v && v->refs > 0);
    v->refs--;
    if (!v->retired) {
        reg_entry *e = find(r, a->name);
        if (e && e->v == v) e->info.refs = v->refs, e->last_use = ++r->tick;
    } else if (v->refs == 0) {
        drop = version_drop(r, v);
    }
    /* idle versions may now be evicted: enforce the budget lazily (no need arises until the next load) */
    pthread_mutex_unlock(&r->mu);
    adapter_free(drop);
}

/* ---- queries ---- */

ps_status adapter_registry_get(adapter_registry *r, const char *name, adapter_info *info, ps_err *err) {
    pthread_mutex_lock(&r->mu);
    reg_entry *e = find(r, name);
    if (e) *info = e->info;
    pthread_mutex_unlock(&r->mu);
    return e ? PS_OK : ps_errf(err, PS_ENOTFOUND, "adapter '%.64s' not found", name);
}

int adapter_registry_list(adapter_registry *r, adapter_info **out) {
    pthread_mutex_lock(&r->mu);
    int n = r->n;
    *out = malloc(sizeof **out * (size_t)(n ? n : 1));
    if (*out)
        for (int i = 0; i < n; i++) (*out)[i] = r->entries[i]->info;
    pthread_mutex_unlock(&r->mu);
    return *out ? n : -1;
}

int64_t adapter_registry_resident_bytes(adapter_registry *r) {
    pthread_mutex_lock(&r->mu);
    int64_t b = r->resident;
    pthread_mutex_unlock(&r->mu);
    return b;
}
