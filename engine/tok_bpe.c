/* SentencePiece BPE encoding and tok_encode.
 *
 * Mirrors sentencepiece bpe_model.cc Model::SampleEncode (alpha = 0) and the
 * unknown handling of SentencePieceProcessor::PopulateSentencePieceText:
 * the normalised text is split into characters (user-defined pieces whole and
 * frozen), every adjacent pair that spells a NORMAL/USER_DEFINED/UNUSED piece
 * goes into a max-heap ordered by (piece score desc, left index asc), the best
 * pair is merged and its new neighbours pushed, stale entries are skipped.
 * UNUSED pieces are re-split at the end through the pair that made them
 * (rev_merge, recorded when a pair is pushed, as sentencepiece does). Symbols
 * that are not pieces become byte pieces (byte_fallback) or one <unk> per run.
 * O(n log n) in the text length. */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

typedef struct {
    int32_t prev, next;  /* -1 at the ends */
    uint32_t start, len; /* span of the normalised text; len 0 = merged away */
    bool freeze;         /* user-defined piece: never merged */
} tok_sym;

typedef struct {
    float score;
    int32_t left, right;
    uint32_t size; /* bytes of the merged piece, to detect stale entries */
} tok_pair;

typedef struct {
    tok_pair *a;
    size_t n, cap;
} tok_heap;

/* "a comes out before b": SymbolPairComparator reversed. */
static bool tok_pair_before(const tok_pair *a, const tok_pair *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static bool tok_heap_push(tok_heap *h, tok_pair p) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 256;
        tok_pair *a = realloc(h->a, sizeof(tok_pair) * cap);
        if (!a) return false;
        h->a = a;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!tok_pair_before(&p, &h->a[up])) break;
        h->a[i] = h->a[up];
        i = up;
    }
    h->a[i] = p;
    return true;
}

static tok_pair tok_heap_pop(tok_heap *h) {
    tok_pair top = h->a[0], last = h->a[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && tok_pair_before(&h->a[c + 1], &h->a[c])) c++;
        if (!tok_pair_before(&h->a[c], &last)) break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (h->n > 0) h->a[i] = last;
    return top;
}

/* rev_merge: merged UNUSED piece text -> the (left, right) spans that made it.
 * Keyed by content like sentencepiece's map; later pushes overwrite. */
typedef struct {
    uint32_t start, left_len, len; /* len 0 = empty slot */
} tok_rev;

typedef struct {
    tok_rev *slot;
    uint32_t mask, used;
} tok_rev_map;

static tok_rev *tok_rev_slot(tok_rev_map *m, const char *norm, const char *key, uint32_t len) {
    uint32_t i = (uint32_t)tok_hash_bytes(key, len) & m->mask;
    while (m->slot[i].len &&
           !(m->slot[i].len == len && memcmp(norm + m->slot[i].start, key, len) == 0))
        i = (i + 1) & m->mask;
    return &m->slot[i];
}

static bool tok_rev_put(tok_rev_map *m, const char *norm, uint32_t start, uint32_t left_len,
                        uint32_t len) {
    if ((m->used + 1) * 2 > m->mask + 1) { /* grow: keep load <= 1/2 */
        uint32_t cap = m->mask ? (m->mask + 1) * 2 : 64;
        tok_rev *old = m->slot;
        uint32_t old_cap = m->mask ? m->mask + 1 : 0;
        m->slot = calloc(cap, sizeof(tok_rev));
        if (!m->slot) {
            m->slot = old;
            return false;
        }
        m->mask = cap - 1;
        for (uint32_t i = 0; i < old_cap; i++)
            if (old[i].len) *tok_rev_slot(m, norm, norm + old[i].start, old[i].len) = old[i];
        free(old);
    }
    tok_rev *r = tok_rev_slot(m, norm, norm + start, len);
    if (!r->len) m->used++;
    *r = (tok_rev){start, left_len, len};
    return true;
}

typedef struct {
    const tokenizer *t;
    const char *norm;
    tok_sym *sym;
    tok_heap heap;
    tok_rev_map rev;
} tok_bpe_state;

/* MaybeAddNewSymbolPair */
static bool tok_bpe_add_pair(tok_bpe_state *b, int32_t left, int32_t right) {
    if (left < 0 || right < 0 || b->sym[left].freeze || b->sym[right].freeze) return true;
    const tok_sym *l = &b->sym[left];
    uint32_t size = l->len + b->sym[right].len;
    int32_t id = tok_hash_find(&b->t->normal, &b->t->spec, b->norm + l->start, size);
    if (id < 0) return true;
    if (!tok_heap_push(&b->heap, (tok_pair){b->t->spec.pieces[id].score, left, right, size}))
        return false;
    if (b->t->spec.pieces[id].type == TOK_T_UNUSED)
        return tok_rev_put(&b->rev, b->norm, l->start, l->len, size);
    return true;
}

static bool tok_bpe_merge(tok_bpe_state *b) {
    while (b->heap.n > 0) {
        tok_pair top = tok_heap_pop(&b->heap);
        tok_sym *l = &b->sym[top.left], *r = &b->sym[top.right];
        if (l->len == 0 || r->len == 0 || l->len + r->len != top.size) continue; /* stale */
        l->len += r->len;
        l->next = r->next;
        if (r->next >= 0) b->sym[r->next].prev = top.left;
        r->len = 0;
        if (!tok_bpe_add_pair(b, l->prev, top.left)) return false;
        if (!tok_bpe_add_pair(b, top.left, l->next)) return false;
    }
    return true;
}

/* PieceToId: reserved pieces first, then mergeable ones, else unk. */
static int32_t tok_piece_id(const tokenizer *t, const char *s, size_t len) {
    int32_t id = tok_hash_find(&t->reserved, &t->spec, s, len);
    if (id < 0) id = tok_hash_find(&t->normal, &t->spec, s, len);
    return id >= 0 ? id : t->unk_id;
}

/* One final piece -> ids, with byte fallback / unk-run merging. A symbol that
 * names a control piece (only possible with odd vocabularies) is emitted as
 * that id; sentencepiece would fail the whole encode there instead. */
static void tok_emit(const tokenizer *t, const char *s, size_t len, int32_t *ids, int *n,
                     bool *prev_unk) {
    int32_t id = tok_piece_id(t, s, len);
    bool unk = t->spec.pieces[id].type == TOK_T_UNKNOWN;
    if (unk && t->spec.byte_fallback) {
        for (size_t k = 0; k < len; k++)
            ids[(*n)++] = t->byte_id[(unsigned char)s[k]];
    } else if (!(unk && *prev_unk)) { /* a run of unknown pieces is one <unk> */
        ids[(*n)++] = id;
    }
    *prev_unk = unk;
}

/* resegment(): UNUSED pieces are replaced by the pair that formed them,
 * recursively; an explicit stack since a span can nest up to its length. */
static bool tok_bpe_resegment(tok_bpe_state *b, uint32_t start, uint32_t len, int32_t *ids, int *n,
                              bool *prev_unk) {
    const tokenizer *t = b->t;
    uint32_t stack_start[64], stack_len[64], *ss = stack_start, *sl = stack_len;
    size_t top = 0, cap = 64;
    bool ok = true;
    ss[top] = start;
    sl[top++] = len;
    while (top > 0) {
        uint32_t s0 = ss[--top], l0 = sl[top];
        const char *w = b->norm + s0;
        int32_t id = tok_piece_id(t, w, l0);
        const tok_rev *r = NULL;
        if (t->spec.pieces[id].type == TOK_T_UNUSED && b->rev.slot) {
            r = tok_rev_slot(&b->rev, b->norm, w, l0);
            if (!r->len) r = NULL;
        }
        if (!r) {
            tok_emit(t, w, l0, ids, n, prev_unk);
            continue;
        }
        if (top + 2 > cap) {
            size_t nc = cap * 2;
            uint32_t *a = malloc(sizeof(uint32_t) * nc), *c = malloc(sizeof(uint32_t) * nc);
            if (!a || !c) {
                free(a);
                free(c);
                ok = false;
                break;
            }
            memcpy(a, ss, sizeof(uint32_t) * top);
            memcpy(c, sl, sizeof(uint32_t) * top);
            if (ss != stack_start) {
                free(ss);
                free(sl);
            }
            ss = a;
            sl = c;
            cap = nc;
        }
        /* right first so the left half is emitted first; the halves' text is
         * read from where rev_merge recorded it (same bytes as w) */
        ss[top] = r->start + r->left_len;
        sl[top++] = r->len - r->left_len;
        ss[top] = r->start;
        sl[top++] = r->left_len;
    }
    if (ss != stack_start) {
        free(ss);
        free(sl);
    }
    return ok;
}

ps_status tok_bpe_encode(const tokenizer *t, const char *norm, size_t len, int32_t *ids, int *n,
                         ps_err *err) {
    tok_bpe_state b = {t, norm, NULL, {0}, {0}};
    ps_status st = PS_OK;
    if (len == 0) return PS_OK;
    b.sym = malloc(sizeof(tok_sym) * len);
    if (!b.sym) return ps_errf(err, PS_ENOMEM, "tokenizer: %zu symbols", len);
    int32_t n_sym = 0;
    for (size_t at = 0; at < len;) { /* characters; user-defined pieces whole */
        size_t m = tok_user_match(t, norm + at, len - at);
        bool freeze = m > 0;
        if (!freeze) {
            m = (size_t)tok_utf8_len((unsigned char)norm[at]);
            if (m > len - at) m = len - at;
        }
        b.sym[n_sym] =
            (tok_sym){n_sym - 1, at + m < len ? n_sym + 1 : -1, (uint32_t)at, (uint32_t)m, freeze};
        n_sym++;
        at += m;
    }
    for (int32_t i = 1; i < n_sym; i++)
        if (!tok_bpe_add_pair(&b, i - 1, i)) goto nomem;
    if (!tok_bpe_merge(&b)) goto nomem;
    bool prev_unk = false;
    for (int32_t i = 0; i != -1; i = b.sym[i].next)
        if (!tok_bpe_resegment(&b, b.sym[i].start, b.sym[i].len, ids, n, &prev_unk)) goto nomem;
    goto done;
nomem:
    st = ps_errf(err, PS_ENOMEM, "tokenizer: bpe over %zu bytes", len);
done:
    free(b.sym);
    free(b.heap.a);
    free(b.rev.slot);
    return st;
}

ps_status tok_encode(const tokenizer *t, const char *text, size_t len, bool add_bos,
                     int32_t **ids_out, int *n_out, ps_err *err) {
    *ids_out = NULL;
    *n_out = 0;
    if (!t || (!text && len > 0))
        return ps_errf(err, PS_EINVAL, "tok_encode: NULL tokenizer or text");
    if (len > TOK_MAX_TEXT_BYTES)
        return ps_errf(err, PS_ETOOLARGE, "tok_encode: text of %zu bytes, limit %zu", len,
                       TOK_MAX_TEXT_BYTES);
    if (add_bos && t->bos_id < 0)
        return ps_errf(err, PS_EINVAL, "tok_encode: add_bos but the tokenizer has no bos piece");
    char *norm = NULL;
    size_t n_norm = len;
    ps_status st;
    if (t->spec.model_type != TOK_MODEL_BYTES &&
        (st = tok_normalize(t, text, len, &norm, &n_norm, err)))
        return st;
    /* every id covers at least one normalised byte */
    int32_t *ids = malloc(sizeof(int32_t) * (n_norm + 1));
    if (!ids) {
        free(norm);
        return ps_errf(err, PS_ENOMEM, "tok_encode: %zu ids", n_norm + 1);
    }
    int n = 0;
    if (add_bos) ids[n++] = t->bos_id;
    if (t->spec.model_type == TOK_MODEL_BYTES) {
        for (size_t i = 0; i < len; i++)
            ids[n++] = t->byte_id[(unsigned char)text[i]];
    } else if ((st = tok_bpe_encode(t, norm, n_norm, ids, &n, err))) {
        free(norm);
        free(ids);
        return st;
    }
    free(norm);
    if (n == 0) {
        free(ids);
        ids = NULL;
    }
    *ids_out = ids;
    *n_out = n;
    return PS_OK;
}
