/* CLIP BPE tokenizer: vocabulary/merges loading and the BPE itself.
 *
 * Mirrors OpenAI clip/simple_tokenizer.py: bytes_to_unicode (:16-35), the
 * vocabulary layout, bpe() (:80-119: repeatedly take the adjacent pair with
 * the lowest merge rank and merge all its non-overlapping occurrences left to
 * right) and encode() (:121-127), plus clip.tokenize (clip.py:205-245).
 * Symbols are vocabulary ids (every merge result is checked to be in the
 * vocabulary at load), so the BPE never builds strings. Cleanup and the
 * pre-tokenising regex live in clip_pretok.c. */
#include "clip_tokenizer.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clip_pretok.h"
#include "unicode.h"

#define NO_RANK INT32_MAX

typedef struct {
    uint64_t key; /* (a << 32 | b) + 1; 0 = empty slot */
    int32_t rank, result;
} merge_slot;

struct clip_tokenizer {
    char **pieces; /* (V) id -> vocabulary string (owned) */
    int n_vocab;
    int32_t *vocab_slots; /* open addressing: string hash -> id, -1 empty */
    size_t vocab_cap;
    merge_slot *merges;
    size_t merge_cap;
    int n_merges;
    int32_t byte_id[256], byte_eow_id[256]; /* byte symbol, byte symbol + "</w>" */
    int32_t sot, eot;
};

/* ---- hash maps ---- */

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}
static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static int32_t vocab_find(const clip_tokenizer *t, const char *s) {
    size_t mask = t->vocab_cap - 1;
    for (size_t i = hash_str(s) & mask;; i = (i + 1) & mask) {
        int32_t id = t->vocab_slots[i];
        if (id < 0) return -1;
        if (strcmp(t->pieces[id], s) == 0) return id;
    }
}

static void vocab_insert(clip_tokenizer *t, int32_t id) {
    size_t mask = t->vocab_cap - 1;
    size_t i = hash_str(t->pieces[id]) & mask;
    while (t->vocab_slots[i] >= 0 && strcmp(t->pieces[t->vocab_slots[i]], t->pieces[id]) != 0)
        i = (i + 1) & mask;
    t->vocab_slots[i] = id;
}

static const merge_slot *merge_find(const clip_tokenizer *t, int32_t a, int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    size_t mask = t->merge_cap - 1;
    for (size_t i = hash_u64(key) & mask;; i = (i + 1) & mask) {
        if (t->merges[i].key == key) return &t->merges[i];
        if (t->merges[i].key == 0) return NULL;
    }
}

/* Adds a merge; a repeated pair takes the later rank, as the reference's
 * dict(zip(merges, range(len(merges)))) does. */
static void merge_insert(clip_tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t result) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) + 1;
    size_t mask = t->merge_cap - 1;
    size_t i = hash_u64(key) & mask;
    while (t->merges[i].key != 0 && t->merges[i].key != key) i = (i + 1) & mask;
    t->merges[i] = (merge_slot){key, rank, result};
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

void clip_tok_free(clip_tokenizer *t) {
    if (!t) return;
    if (t->pieces)
        for (int i = 0; i < t->n_vocab; i++) free(t->pieces[i]);
    free(t->pieces);
    free(t->vocab_slots);
    free(t->merges);
    free(t);
}

/* ---- loading ---- */

static ps_status load_vocab(clip_tokenizer *t, json_t *vocab, const char *path, ps_err *err) {
    if (!json_is_object(vocab) || json_object_size(vocab) == 0)
        return ps_errf(err, PS_EFORMAT, "%s: vocabulary must be a non-empty JSON object", path);
    const char *key;
    json_t *val;
    json_int_t max_id = -1;
    json_object_foreach(vocab, key, val) {
        if (!json_is_integer(val) || json_integer_value(val) < 0 ||
            json_integer_value(val) >= INT32_MAX / 2)
            return ps_errf(err, PS_EFORMAT, "%s: vocabulary entry '%s' has no valid id", path, key);
        if (json_integer_value(val) > max_id) max_id = json_integer_value(val);
    }
    t->n_vocab = (int)max_id + 1;
    t->pieces = calloc((size_t)t->n_vocab, sizeof(char *));
    t->vocab_cap = pow2_at_least((size_t)t->n_vocab * 2);
    t->vocab_slots = malloc(sizeof(int32_t) * t->vocab_cap);
    if (!t->pieces || !t->vocab_slots)
        return ps_errf(err, PS_ENOMEM, "%s: no memory for %d ids", path, t->n_vocab);
    memset(t->vocab_slots, 0xff, sizeof(int32_t) * t->vocab_cap);
    json_object_foreach(vocab, key, val) {
        int32_t id = (int32_t)json_integer_value(val);
        if (t->pieces[id])
            return ps_errf(err, PS_EFORMAT, "%s: id %d is used by both '%s' and '%s'", path, id,
                           t->pieces[id], key);
        if (!(t->pieces[id] = strdup(key))) return ps_errf(err, PS_ENOMEM, "%s: no memory", path);
        vocab_insert(t, id);
    }
    for (int i = 0; i < t->n_vocab; i++)
        if (!t->pieces[i]) return ps_errf(err, PS_EFORMAT, "%s: id %d has no entry (ids must be dense)", path, i);
    return PS_OK;
}

/* One merge "a b" -> ids of a, b and of their concatenation. */
static ps_status add_merge(clip_tokenizer *t, const char *a, const char *b, int rank,
                           const char *src, ps_err *err) {
    size_t la = strlen(a), lb = strlen(b);
    char buf[1024];
    if (la + lb + 1 > sizeof buf)
        return ps_errf(err, PS_EFORMAT, "%s: merge %d is %zu bytes long (max %zu)", src, rank,
                       la + lb, sizeof buf - 1);
    memcpy(buf, a, la);
    memcpy(buf + la, b, lb + 1);
    int32_t ia = vocab_find(t, a), ib = vocab_find(t, b), ir = vocab_find(t, buf);
    if (ia < 0 || ib < 0 || ir < 0)
        return ps_errf(err, PS_EFORMAT, "%s: merge %d '%s %s': '%s' is not in the vocabulary", src,
                       rank, a, b, ia < 0 ? a : ib < 0 ? b : buf);
    merge_insert(t, ia, ib, rank, ir);
    t->n_merges++;
    return PS_OK;
}

static ps_status alloc_merges(clip_tokenizer *t, size_t n, ps_err *err) {
    t->merge_cap = pow2_at_least(n * 2 + 1);
    t->merges = calloc(t->merge_cap, sizeof(merge_slot));
    return t->merges ? PS_OK : ps_errf(err, PS_ENOMEM, "clip tokenizer: no memory for %zu merges", n);
}

static ps_status load_merges_txt(clip_tokenizer *t, const char *path, ps_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return ps_errf(err, PS_EIO, "cannot open '%s'", path);
    char *data = NULL;
    ps_status st = PS_OK;
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0 || !(data = malloc((size_t)size + 1)) ||
        fread(data, 1, (size_t)size, f) != (size_t)size) {
        st = ps_errf(err, PS_EIO, "cannot read '%s'", path);
        goto fail;
    }
    data[size] = 0;
    size_t lines = 1;
    for (long i = 0; i < size; i++) lines += data[i] == '\n';
    if ((st = alloc_merges(t, lines, err))) goto fail;
    int rank = 0, line_no = 0;
    for (char *line = data, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        line_no++;
        size_t len = strlen(line);
        if (len && line[len - 1] == '\r') line[--len] = 0;
        if (len == 0 || (line_no == 1 && strncmp(line, "#version", 8) == 0)) continue;
        char *sp = strchr(line, ' ');
        if (!sp || sp == line || !sp[1] || strchr(sp + 1, ' ')) {
            st = ps_errf(err, PS_EFORMAT, "%s:%d: a merge must be two symbols separated by one space",
                         path, line_no);
            goto fail;
        }
        *sp = 0;
        if ((st = add_merge(t, line, sp + 1, rank++, path, err))) goto fail;
    }
fail:
    free(data);
    fclose(f);
    return st;
}

static ps_status load_merges_json(clip_tokenizer *t, json_t *merges, const char *path, ps_err *err) {
    if (!json_is_array(merges))
        return ps_errf(err, PS_EFORMAT, "%s: model.merges must be an array", path);
    ps_status st = alloc_merges(t, json_array_size(merges), err);
    size_t i;
    json_t *m;
    json_array_foreach(merges, i, m) {
        if (st) return st;
        char buf[1024];
        const char *a = NULL, *b = NULL;
        if (json_is_string(m) && json_string_length(m) < sizeof buf) {
            memcpy(buf, json_string_value(m), json_string_length(m) + 1);
            char *sp = strchr(buf, ' ');
            if (sp && sp != buf && sp[1] && !strchr(sp + 1, ' ')) {
                *sp = 0;
                a = buf;
                b = sp + 1;
            }
        } else if (json_is_array(m) && json_array_size(m) == 2) {
            a = json_string_value(json_array_get(m, 0));
            b = json_string_value(json_array_get(m, 1));
        }
        if (!a || !b || !*a || !*b)
            return ps_errf(err, PS_EFORMAT, "%s: model.merges[%zu] is not \"a b\" or [a, b]", path, i);
        st = add_merge(t, a, b, (int)i, path, err);
    }
    return st;
}

/* GPT-2 bytes_to_unicode: printable Latin-1 bytes map to themselves, the
 * others to U+0100.. in byte order. */
static ps_status init_bytes(clip_tokenizer *t, const char *src, ps_err *err) {
    int n = 0;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        uint32_t cp = printable ? (uint32_t)b : 256u + (uint32_t)n++;
        char s[16];
        int k = uni_utf8_put(cp, (unsigned char *)s);
        s[k] = 0;
        t->byte_id[b] = vocab_find(t, s);
        memcpy(s + k, "</w>", 5);
        t->byte_eow_id[b] = vocab_find(t, s);
        if (t->byte_id[b] < 0 || t->byte_eow_id[b] < 0)
            return ps_errf(err, PS_EFORMAT, "%s: byte 0x%02x has no symbol (or symbol+</w>) in the vocabulary",
                           src, b);
    }
    t->sot = vocab_find(t, "<|startoftext|>");
    t->eot = vocab_find(t, "<|endoftext|>");
    if (t->sot < 0 || t->eot < 0)
        return ps_errf(err, PS_EFORMAT, "%s: <|startoftext|> or <|endoftext|> is not in the vocabulary", src);
    return PS_OK;
}

ps_status clip_tok_load_files(const char *vocab_path, const char *merges_path,
                              clip_tokenizer **out, ps_err *err) {
    *out = NULL;
    clip_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return ps_errf(err, PS_ENOMEM, "clip tokenizer: no memory");
    json_error_t jerr;
    json_t *root = json_load_file(vocab_path, 0, &jerr);
    ps_status st;
    if (!root) {
        st = ps_errf(err, PS_EFORMAT, "%s:%d: %s", vocab_path, jerr.line, jerr.text);
        goto fail;
    }
    if (merges_path) {
        if ((st = load_vocab(t, root, vocab_path, err))) goto fail;
        if ((st = load_merges_txt(t, merges_path, err))) goto fail;
    } else {
        json_t *model = json_object_get(root, "model");
        const char *type = json_string_value(json_object_get(model, "type"));
        if (type && strcmp(type, "BPE") != 0) {
            st = ps_errf(err, PS_EFORMAT, "%s: model.type is '%s', expected 'BPE'", vocab_path, type);
            goto fail;
        }
        if ((st = load_vocab(t, json_object_get(model, "vocab"), vocab_path, err))) goto fail;
        if ((st = load_merges_json(t, json_object_get(model, "merges"), vocab_path, err))) goto fail;
    }
    if ((st = init_bytes(t, vocab_path, err))) goto fail;
    json_decref(root);
    *out = t;
    return PS_OK;
fail:
    json_decref(root);
    clip_tok_free(t);
    return st;
}

ps_status clip_tok_load(const char *dir, clip_tokenizer **out, ps_err *err) {
    char vocab[4096], merges[4096], tj[4096];
    snprintf(vocab, sizeof vocab, "%s/vocab.json", dir);
    snprintf(merges, sizeof merges, "%s/merges.txt", dir);
    snprintf(tj, sizeof tj, "%s/tokenizer.json", dir);
    FILE *f = fopen(vocab, "rb"), *g = fopen(merges, "rb");
    bool have_pair = f && g;
    if (f) fclose(f);
    if (g) fclose(g);
    if (have_pair) return clip_tok_load_files(vocab, merges, out, err);
    if ((f = fopen(tj, "rb"))) {
        fclose(f);
        return clip_tok_load_files(tj, NULL, out, err);
    }
    *out = NULL;
    return ps_errf(err, PS_ENOTFOUND,
                   "%s: no CLIP tokenizer (need vocab.json + merges.txt, or tokenizer.json)", dir);
}

int clip_tok_vocab_size(const clip_tokenizer *t) { return t->n_vocab; }
int32_t clip_tok_sot(const clip_tokenizer *t) { return t->sot; }
int32_t clip_tok_eot(const clip_tokenizer *t) { return t->eot; }
const char *clip_tok_piece(const clip_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_vocab ? t->pieces[id] : NULL;
}

/* ---- BPE ---- */

static int32_t pair_rank(const clip_tokenizer *t, int32_t a, int32_t b) {
    const merge_slot *m = merge_find(t, a, b);
    return m ? m->rank : NO_RANK;
}

/* bpe() on one piece of nb bytes. sym/rank/tmp are scratch of 4*nb int32s.
 * Each round merges every non-overlapping occurrence of the lowest-rank pair
 * (rank identifies the pair); pair ranks are recomputed only next to merges.
 * Returns the number of symbols left in sym. */
static int bpe_word(const clip_tokenizer *t, const unsigned char *bytes, int nb, int32_t *scratch) {
    int32_t *sym = scratch, *rank = sym + nb, *nsym = rank + nb, *nrank = nsym + nb;
    int m = nb;
    for (int i = 0; i < nb; i++) sym[i] = i == nb - 1 ? t->byte_eow_id[bytes[i]] : t->byte_id[bytes[i]];
    for (int i = 0; i + 1 < m; i++) rank[i] = pair_rank(t, sym[i], sym[i + 1]);
    /* nrank doubles as the "changed" marks and old-index map during a round */
    for (;;) {
        int32_t best = NO_RANK;
        for (int i = 0; i + 1 < m; i++)
            if (rank[i] < best) best = rank[i];
        if (best == NO_RANK) break;
        int j = 0;
        for (int i = 0; i < m; j++) {
            if (i + 1 < m && rank[i] == best) {
                nsym[j] = merge_find(t, sym[i], sym[i + 1])->result;
                nrank[j] = -1; /* changed */
                i += 2;
            } else {
                nsym[j] = sym[i];
                nrank[j] = i; /* old index */
                i += 1;
            }
        }
        for (int k = 0; k + 1 < j; k++) {
            bool changed = nrank[k] < 0 || nrank[k + 1] < 0;
            rank[k] = changed ? pair_rank(t, nsym[k], nsym[k + 1]) : rank[nrank[k]];
        }
        /* rank[k] reads rank[nrank[k]] with nrank[k] >= k: safe in place */
        memcpy(sym, nsym, sizeof(int32_t) * (size_t)j);
        m = j;
    }
    return m;
}

typedef struct {
    int32_t *ids;
    int n, cap;
} id_vec;

static ps_status push_ids(id_vec *v, const int32_t *ids, int n, ps_err *err) {
    if (v->n + n > v->cap) {
        int cap = v->cap ? v->cap : 64;
        while (cap < v->n + n) cap *= 2;
        int32_t *g = realloc(v->ids, sizeof(int32_t) * (size_t)cap);
        if (!g) return ps_errf(err, PS_ENOMEM, "clip tokenizer: no memory for %d ids", cap);
        v->ids = g;
        v->cap = cap;
    }
    memcpy(v->ids + v->n, ids, sizeof(int32_t) * (size_t)n);
    v->n += n;
    return PS_OK;
}

/* UTF-8 bytes of s[b..e); returns the count, or -1 past `cap`. */
static int piece_bytes(const uint32_t *s, size_t b, size_t e, unsigned char *out, int cap) {
    int n = 0;
    for (size_t i = b; i < e; i++) {
        if (n + 4 > cap) return -1;
        n += uni_utf8_put(s[i], out + n);
    }
    return n;
}

ps_status clip_tok_encode(const clip_tokenizer *t, const char *text, size_t len, int max_ids,
                          int32_t **ids, int *n, ps_err *err) {
    uint32_t *cps = NULL;
    size_t ncp, pos = 0, b, e;
    unsigned char *bytes = malloc(CLIP_TOK_MAX_WORD_BYTES + 4);
    int32_t *scratch = malloc(sizeof(int32_t) * 4 * (CLIP_TOK_MAX_WORD_BYTES + 4));
    id_vec v = {0};
    int kind;
    ps_status st = PS_OK;
    *ids = NULL;
    *n = 0;
    if (!bytes || !scratch) {
        st = ps_errf(err, PS_ENOMEM, "clip tokenizer: no memory for scratch");
        goto fail;
    }
    if ((st = clip_clean(text, len, &cps, &ncp, err))) goto fail;
    while ((max_ids <= 0 || v.n < max_ids) && clip_next_piece(cps, ncp, &pos, &b, &e, &kind)) {
        if (kind != CLIP_PIECE_TEXT) {
            int32_t id = kind == CLIP_PIECE_SOT ? t->sot : t->eot;
            if ((st = push_ids(&v, &id, 1, err))) goto fail;
            continue;
        }
        int nb = piece_bytes(cps, b, e, bytes, CLIP_TOK_MAX_WORD_BYTES + 4);
        if (nb < 0 || nb > CLIP_TOK_MAX_WORD_BYTES) {
            st = ps_errf(err, PS_ETOOLARGE,
                         "text has a word of more than %d bytes without a space or punctuation "
                         "(CLIP reads only the first 77 tokens; shorten it)",
                         CLIP_TOK_MAX_WORD_BYTES);
            goto fail;
        }
        int m = bpe_word(t, bytes, nb, scratch);
        if ((st = push_ids(&v, scratch, m, err))) goto fail;
    }
    *ids = v.ids;
    *n = v.n;
    v.ids = NULL;
fail:
    free(v.ids);
    free(cps);
    free(bytes);
    free(scratch);
    return st;
}

ps_status clip_tok_tokenize(const clip_tokenizer *t, const char *text, size_t len, int ctx,
                            int32_t *input_ids, int *eot_index, bool *truncated, ps_err *err) {
    if (ctx < 2) return ps_errf(err, PS_EINVAL, "clip tokenize: context length %d < 2", ctx);
    int32_t *ids;
    int n;
    /* ctx - 1 ids are enough to know [sot] + ids + [eot] overflows ctx */
    ps_status st = clip_tok_encode(t, text, len, ctx - 1, &ids, &n, err);
    if (st) return st;
    bool cut = n + 2 > ctx;
    int keep = cut ? ctx - 2 : n;
    input_ids[0] = t->sot;
    if (keep) memcpy(input_ids + 1, ids, sizeof(int32_t) * (size_t)keep);
    input_ids[keep + 1] = t->eot;
    for (int i = keep + 2; i < ctx; i++) input_ids[i] = 0;
    free(ids);
    /* the reference pools at argmax(input_ids), i.e. the first eot since eot is
     * CLIP's largest id; the first eot is what that means for any vocabulary */
    int am = 0;
    while (input_ids[am] != t->eot) am++;
    if (eot_index) *eot_index = am;
    if (truncated) *truncated = cut;
    return PS_OK;
}
