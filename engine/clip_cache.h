/* LRU cache of CLIP text embeddings keyed by the exact text (the prompt
 * after template formatting), so a repeated label set costs no text-tower
 * work. Values are the unnormalised embeddings (E floats). Thread-safe: one
 * mutex around each call (lookups copy the value out). */
#ifndef PS_ENGINE_CLIP_CACHE_H
#define PS_ENGINE_CLIP_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef struct clip_cache clip_cache;

/* capacity 0 disables caching (every lookup misses, inserts are dropped). */
ps_status clip_cache_init(clip_cache **out, int capacity, int dim, ps_err *err);
void clip_cache_free(clip_cache *c); /* accepts NULL */

/* Copies the embedding of text (len bytes) into out and marks it recently
 * used; false on a miss. */
bool clip_cache_get(clip_cache *c, const char *text, size_t len, float *out);
/* Inserts (or refreshes) text -> v, evicting the least recently used entry
 * when full. Allocation failure just skips caching. */
void clip_cache_put(clip_cache *c, const char *text, size_t len, const float *v);

typedef struct {
    int entries, capacity;
    uint64_t hits, misses, evictions;
} clip_cache_stats;
void clip_cache_get_stats(clip_cache *c, clip_cache_stats *out);

#endif
