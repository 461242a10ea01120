/* Piece lookup for the tokenizer: an open-addressing table of ids keyed by the
 * piece bytes they name (the keys live in tok_spec.blob, so a slot is 4 bytes).
 * Replaces sentencepiece's pieces_/reserved_id_map_ hash maps. Not a general
 * map: it cannot delete, and it is sized once for a known number of keys. */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

/* FNV-1a, 64-bit: short keys (a pair of symbols, a few bytes) dominate. */
uint64_t tok_hash_bytes(const char *key, size_t len) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

ps_status tok_hash_init(tok_hash *h, int n_keys, ps_err *err) {
    uint32_t cap = 16;
    while (cap < (uint32_t)n_keys * 2u)
        cap <<= 1; /* load <= 1/2 */
    h->slot = malloc(sizeof(int32_t) * cap);
    if (!h->slot) return ps_errf(err, PS_ENOMEM, "tokenizer: piece table of %u slots", cap);
    memset(h->slot, 0xff, sizeof(int32_t) * cap); /* all -1 */
    h->mask = cap - 1;
    return PS_OK;
}

void tok_hash_free(tok_hash *h) {
    if (!h) return;
    free(h->slot);
    h->slot = NULL;
    h->mask = 0;
}

static bool tok_hash_eq(const tok_spec *s, int32_t id, const char *key, size_t len) {
    const tok_entry *e = &s->pieces[id];
    return e->len == len && memcmp(s->blob + e->off, key, len) == 0;
}

int32_t tok_hash_find(const tok_hash *h, const tok_spec *s, const char *key, size_t len) {
    if (!h->slot) return -1;
    uint32_t i = (uint32_t)tok_hash_bytes(key, len) & h->mask;
    for (;;) {
        int32_t id = h->slot[i];
        if (id < 0) return -1;
        if (tok_hash_eq(s, id, key, len)) return id;
        i = (i + 1) & h->mask;
    }
}

int32_t tok_hash_insert(tok_hash *h, const tok_spec *s, int32_t id) {
    const char *key = s->blob + s->pieces[id].off;
    size_t len = s->pieces[id].len;
    uint32_t i = (uint32_t)tok_hash_bytes(key, len) & h->mask;
    for (;;) {
        int32_t cur = h->slot[i];
        if (cur < 0) {
            h->slot[i] = id;
            return -1;
        }
        if (tok_hash_eq(s, cur, key, len)) return cur;
        i = (i + 1) & h->mask;
    }
}
