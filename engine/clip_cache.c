/* The CLIP text-embedding LRU: a chained hash table (FNV-1a over the text)
 * plus a doubly linked recency list; see clip_cache.h. */
#include "clip_cache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct entry {
    struct entry *next_hash, *prev, *next; /* bucket chain; recency list (head = newest) */
    uint64_t hash;
    size_t len;
    char *text;
    float v[];
} entry;

struct clip_cache {
    pthread_mutex_t mu;
    int capacity, dim, n;
    size_t n_buckets;
    entry **buckets;
    entry *head, *tail;
    uint64_t hits, misses, evictions;
};

static uint64_t fnv1a(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

ps_status clip_cache_init(clip_cache **out, int capacity, int dim, ps_err *err) {
    *out = NULL;
    if (capacity < 0 || dim <= 0)
        return ps_errf(err, PS_EINVAL, "clip cache: capacity %d / dim %d", capacity, dim);
    clip_cache *c = calloc(1, sizeof *c);
    if (!c) return ps_errf(err, PS_ENOMEM, "clip cache: no memory");
    c->capacity = capacity;
    c->dim = dim;
    c->n_buckets = 16;
    while (c->n_buckets < (size_t)capacity * 2) c->n_buckets <<= 1;
    c->buckets = calloc(c->n_buckets, sizeof(entry *));
    if (!c->buckets) {
        free(c);
        return ps_errf(err, PS_ENOMEM, "clip cache: no memory for %zu buckets", (size_t)capacity * 2);
    }
    pthread_mutex_init(&c->mu, NULL);
    *out = c;
    return PS_OK;
}

void clip_cache_free(clip_cache *c) {
    if (!c) return;
    for (entry *e = c->head, *next; e; e = next) {
        next = e->next;
        free(e->text);
        free(e);
    }
    free(c->buckets);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static entry **find_slot(clip_cache *c, uint64_t h, const char *text, size_t len) {
    entry **p = &c->buckets[h & (c->n_buckets - 1)];
    while (*p && !((*p)->hash == h && (*p)->len == len && memcmp((*p)->text, text, len) == 0))
        p = &(*p)->next_hash;
    return p;
}

static void list_unlink(clip_cache *c, entry *e) {
    if (e->prev) e->prev->next = e->next;
    else c->head = e->next;
    if (e->next) e->next->prev = e->prev;
    else c->tail = e->prev;
    e->prev = e->next = NULL;
}

static void list_push_front(clip_cache *c, entry *e) {
    e->prev = NULL;
    e->next = c->head;
    if (c->head) c->head->prev = e;
    c->head = e;
    if (!c->tail) c->tail = e;
}

bool clip_cache_get(clip_cache *c, const char *text, size_t len, float *out) {
    uint64_t h = fnv1a(text, len);
    pthread_mutex_lock(&c->mu);
    entry *e = *find_slot(c, h, text, len);
    if (e) {
        memcpy(out, e->v, sizeof(float) * (size_t)c->dim);
        list_unlink(c, e);
        list_push_front(c, e);
        c->hits++;
    } else {
        c->misses++;
    }
    pthread_mutex_unlock(&c->mu);
    return e != NULL;
}

static void evict_oldest(clip_cache *c) {
    entry *e = c->tail;
    entry **p = find_slot(c, e->hash, e->text, e->len);
    *p = e->next_hash;
    list_unlink(c, e);
    free(e->text);
    free(e);
    c->n--;
    c->evictions++;
}

void clip_cache_put(clip_cache *c, const char *text, size_t len, const float *v) {
    if (c->capacity == 0) return;
    uint64_t h = fnv1a(text, len);
    pthread_mutex_lock(&c->mu);
    entry **p = find_slot(c, h, text, len);
    if (*p) { /* refresh */
        memcpy((*p)->v, v, sizeof(float) * (size_t)c->dim);
        list_unlink(c, *p);
        list_push_front(c, *p);
        goto done;
    }
    entry *e = malloc(sizeof(entry) + sizeof(float) * (size_t)c->dim);
    char *t = malloc(len + 1);
    if (!e || !t) {
        free(e);
        free(t);
        goto done;
    }
    memcpy(t, text, len);
    t[len] = 0;
    *e = (entry){NULL, NULL, NULL, h, len, t};
    memcpy(e->v, v, sizeof(float) * (size_t)c->dim);
    if (c->n == c->capacity) {
        evict_oldest(c);
        p = find_slot(c, h, text, len); /* the chain may have changed */
    }
    *p = e;
    list_push_front(c, e);
    c->n++;
done:
    pthread_mutex_unlock(&c->mu);
}

void clip_cache_get_stats(clip_cache *c, clip_cache_stats *out) {
    pthread_mutex_lock(&c->mu);
    *out = (clip_cache_stats){c->n, c->capacity, c->hits, c->misses, c->evictions};
    pthread_mutex_unlock(&c->mu);
}
