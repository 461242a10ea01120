/* PEFT adapter loading: entry points (folder or in-memory files), the shared
 * plan helpers, modules_to_save, conversion to F32 with finiteness checks and
 * the upload into the adapter's one backend block.
 *
 * Nothing is registered here: a loaded adapter is a plain value the registry
 * takes over, so a failed load leaves no trace anywhere. Pickled
 * adapter_model.bin files are never opened (unpickling executes code). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "adapter_impl.h"
#include "math/half.h"

#define NM "'%.200s'"
#define ALIGN_BYTES 64 /* whole cache lines, aligned AVX-512 / coalesced loads */

adapter_limits adapter_limits_default(void) {
    adapter_limits l = {(int64_t)4 << 30, 512, 1024, 4096, 1 << 20, PS_DT_F32};
    return l;
}

static const char *const mod_parent[ADAPTER_MOD_COUNT] = {"self_attn", "self_attn", "self_attn",
                                                          "self_attn", "mlp", "mlp", "mlp"};
const char *adapter_module_parent(adapter_module m) {
    return (unsigned)m < ADAPTER_MOD_COUNT ? mod_parent[m] : "?";
}

int adapter_module_in(const adapter_base_shape *b, adapter_module m) {
    switch (m) {
    case ADAPTER_MOD_O: return b->n_heads * b->head_dim;
    case ADAPTER_MOD_DOWN: return b->ffn;
    default: return b->hidden;
    }
}

int adapter_module_out(const adapter_base_shape *b, adapter_module m) {
    switch (m) {
    case ADAPTER_MOD_Q: return b->n_heads * b->head_dim;
    case ADAPTER_MOD_K: case ADAPTER_MOD_V: return b->n_kv_heads * b->head_dim;
    case ADAPTER_MOD_GATE: case ADAPTER_MOD_UP: return b->ffn;
    default: return b->hidden;
    }
}

const char *adapter_kind_name(adapter_kind k) {
    return k == ADAPTER_LORA ? "lora" : k == ADAPTER_PREFIX ? "prefix_tuning" : "prompt_tuning";
}

ps_status adapter_name_check(const char *name, ps_err *err) {
    size_t n = name ? strlen(name) : 0;
    if (n < 1 || n > ADAPTER_NAME_MAX)
        return ps_errf(err, PS_EINVAL, "adapter name must be 1..%d characters, got %zu", ADAPTER_NAME_MAX, n);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                  c == '_' || c == '-';
        if (!ok)
            return ps_errf(err, PS_EINVAL, "adapter name has character 0x%02x at %zu; allowed: A-Z a-z 0-9 . _ -",
                           (unsigned char)c, i);
    }
    if (name[0] == '.') return ps_errf(err, PS_EINVAL, "adapter name must not start with '.'");
    if (strstr(name, "..")) return ps_errf(err, PS_EINVAL, "adapter name must not contain '..'");
    return PS_OK;
}

/* ---- plan helpers ---- */

ps_status adapter_plan_add(adapter_plan *p, const st_tensor *t, adapter_piece_kind kind, int layer,
                           adapter_module mod, int64_t numel, ps_err *err) {
    (void)err; /* the total is checked against max_bytes once planning is done */
    size_t off = (p->n_bytes + ALIGN_BYTES - 1) / ALIGN_BYTES * ALIGN_BYTES;
    ps_dtype dt = kind == PIECE_LORA_A || kind == PIECE_LORA_B ? p->lora_dt : PS_DT_F32;
    adapter_piece *pc = &p->pieces[p->n_pieces++];
    *pc = (adapter_piece){t, kind, layer, mod, off, numel, dt};
    p->n_bytes = off + (size_t)numel * ps_dtype_size(dt);
    return PS_OK;
}

static void shape_str(char *buf, size_t cap, const st_tensor *t) {
    int n = snprintf(buf, cap, "[");
    for (int d = 0; d < t->ndim && n < (int)cap; d++)
        n += snprintf(buf + n, cap - (size_t)n, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    if (n < (int)cap) snprintf(buf + n, cap - (size_t)n, "]");
}

ps_status adapter_check_tensor(const st_tensor *t, int64_t rows, int64_t cols, const char *hint,
                               ps_err *err) {
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
        return ps_errf(err, PS_EFORMAT, "tensor " NM ": dtype %s, expected F32, F16 or BF16", t->name,
                       st_dtype_name(t->dtype));
    if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols) {
        char got[96];
        shape_str(got, sizeof got, t);
        return ps_errf(err, PS_EFORMAT, "tensor " NM ": shape %s, expected [%lld, %lld] (%s)", t->name, got,
                       (long long)rows, (long long)cols, hint);
    }
    return PS_OK;
}

int adapter_plan_saved_module(adapter_plan *p, const st_tensor *t, ps_err *err) {
    static const char lm[] = ADAPTER_PEFT_PREFIX "lm_head.weight";
    static const char emb[] = ADAPTER_PEFT_PREFIX "model.embed_tokens.weight";
    bool is_lm = !strcmp(t->name, lm), is_emb = !strcmp(t->name, emb);
    if (!is_lm && !is_emb) return 0;
    const char *path = is_lm ? "lm_head" : "model.embed_tokens";
    bool listed = false;
    for (int i = 0; i < p->cfg->n_modules_to_save; i++)
        listed |= adapter_pattern_match(p->cfg->modules_to_save[i], path);
    ps_status s;
    if (!listed)
        s = ps_errf(err, PS_EFORMAT, "tensor " NM ": '%s' is not listed in modules_to_save", t->name, path);
    else
        s = adapter_check_tensor(t, p->base->vocab, p->base->hidden, "vocab_size x hidden_size of the base", err);
    if (!s) s = adapter_plan_add(p, t, is_lm ? PIECE_LM_HEAD : PIECE_EMBED, 0, 0,
                                 (int64_t)p->base->vocab * p->base->hidden, err);
    return s ? -(int)s : 1;
}

ps_status adapter_read_f32(const st_tensor *t, float *out, int64_t numel, ps_err *err) {
    ps_status s = st_to_f32(t, out, numel, err);
    if (s) return s;
    for (int64_t i = 0; i < numel; i++)
        if (!isfinite(out[i]))
            return ps_errf(err, PS_EFORMAT, "tensor " NM ": element %lld is %s (values must be finite)", t->name,
                           (long long)i, isnan(out[i]) ? "nan" : "inf");
    return PS_OK;
}

/* ---- fill ---- */

static void point_into_block(adapter_plan *p) {
    adapter *a = p->a;
    const char *base = a->block;
    for (int i = 0; i < p->n_pieces; i++) {
        const adapter_piece *pc = &p->pieces[i];
        const void *at = base + pc->offset;
        switch (pc->kind) {
        case PIECE_LORA_A: a->lora[ADAPTER_LORA_INDEX(a, pc->layer, pc->mod)].A = at; break;
        case PIECE_LORA_B: a->lora[ADAPTER_LORA_INDEX(a, pc->layer, pc->mod)].B = at; break;
        case PIECE_PREFIX: a->prefix_kv = (const float *)at; break;
        case PIECE_PROMPT: a->prompt = (const float *)at; break;
        case PIECE_LM_HEAD: a->lm_head = (const float *)at; break;
        case PIECE_EMBED: a->embed_tokens = (const float *)at; break;
        }
    }
}

/* Whether a 16-bit value is inf or nan: exponent all ones, 5 bits for F16, 8 for BF16. */
static bool half_nonfinite(ps_dtype dt, uint16_t h) {
    return dt == PS_DT_F16 ? (h & 0x7C00) == 0x7C00 : (h & 0x7F80) == 0x7F80;
}

/* A 16-bit LoRA tensor kept as stored: copied, and every value checked finite. */
static ps_status copy_16bit(const adapter_piece *pc, void *dst, ps_err *err) {
    memcpy(dst, pc->t->data, (size_t)pc->numel * 2);
    const uint8_t *b = dst;
    for (int64_t i = 0; i < pc->numel; i++) {
        uint16_t h = (uint16_t)(b[2 * i] | b[2 * i + 1] << 8);
        if (half_nonfinite(pc->dt, h))
            return ps_errf(err, PS_EFORMAT, "tensor " NM ": element %lld is %s (values must be finite)", pc->t->name,
                           (long long)i, (h & (pc->dt == PS_DT_F16 ? 0x3FF : 0x7F)) ? "nan" : "inf");
    }
    return PS_OK;
}

/* A LoRA tensor stored in another 16-bit dtype than the file's
 * (adapter_limits.lora_dtype): read as F32 (checked finite), rounded to
 * nearest-even (math/half.h); a value beyond the F16 range is an error,
 * never an inf. */
static ps_status narrow_16bit(const adapter_piece *pc, void *dst, ps_err *err) {
    float *f = malloc(sizeof(float) * (size_t)pc->numel);
    if (!f) return ps_errf(err, PS_ENOMEM, "tensor " NM ": out of memory", pc->t->name);
    ps_status s = adapter_read_f32(pc->t, f, pc->numel, err);
    uint16_t *h = dst;
    for (int64_t i = 0; !s && i < pc->numel; i++) {
        h[i] = pc->dt == PS_DT_F16 ? ps_f32_to_f16(f[i]) : ps_f32_to_bf16(f[i]);
        if (half_nonfinite(pc->dt, h[i]))
            s = ps_errf(err, PS_EFORMAT, "tensor " NM ": element %lld = %g overflows %s (the server stores LoRA "
                        "weights as %s)", pc->t->name, (long long)i, f[i], ps_dtype_name(pc->dt), ps_dtype_name(pc->dt));
    }
    free(f);
    return s;
}

/* A LoRA piece into dst in its storage dtype: F32 converted, 16-bit copied
 * as stored or narrowed. */
static ps_status read_lora(const adapter_piece *pc, void *dst, ps_err *err) {
    if (pc->dt == PS_DT_F32) return adapter_read_f32(pc->t, dst, pc->numel, err);
    bool same = (pc->dt == PS_DT_F16 && pc->t->dtype == ST_F16) || (pc->dt == PS_DT_BF16 && pc->t->dtype == ST_BF16);
    return same ? copy_16bit(pc, dst, err) : narrow_16bit(pc, dst, err);
}

/* lora_B.weight (out, r) stored transposed as (r, out) (ps_lora_slot.B): read
 * (converted or kept 16-bit) into a temporary, then transposed into dst. */
static ps_status fill_lora_b(const adapter_piece *pc, void *dst, ps_err *err) {
    int64_t out = pc->t->shape[0], r = pc->t->shape[1];
    size_t es = ps_dtype_size(pc->dt);
    char *tmp = malloc(es * (size_t)pc->numel);
    if (!tmp) return ps_errf(err, PS_ENOMEM, "tensor " NM ": out of memory", pc->t->name);
    ps_status s = read_lora(pc, tmp, err);
    for (int64_t o = 0; !s && o < out; o++)
        for (int64_t i = 0; i < r; i++) memcpy((char *)dst + (size_t)(i * out + o) * es, tmp + (size_t)(o * r + i) * es, es);
    free(tmp);
    return s;
}

/* Converts every piece (to the block directly on the CPU backend, through a
 * host staging buffer otherwise) and uploads it. */
static ps_status fill(adapter_plan *p, ps_backend *be, ps_err *err) {
    bool direct = be->dev == PS_DEV_CPU;
    int64_t most = 0;
    for (int i = 0; i < p->n_pieces; i++) most = p->pieces[i].numel > most ? p->pieces[i].numel : most;
    float *stage = direct ? NULL : malloc(sizeof(float) * (size_t)(most ? most : 1));
    if (!direct && !stage) return ps_errf(err, PS_ENOMEM, "adapter: no memory to stage %lld floats", (long long)most);
    ps_status s = PS_OK;
    for (int i = 0; i < p->n_pieces && !s; i++) {
        const adapter_piece *pc = &p->pieces[i];
        void *dst = (char *)p->a->block + pc->offset;
        void *buf = direct ? dst : stage;
        if (pc->kind == PIECE_PREFIX) s = adapter_fill_prefix(p, pc, buf, err);
        else if (pc->kind == PIECE_LORA_B) s = fill_lora_b(pc, buf, err);
        else if (pc->kind == PIECE_LORA_A) s = read_lora(pc, buf, err);
        else s = adapter_read_f32(pc->t, buf, pc->numel, err);
        if (!s && !direct) s = ps_buf_upload(be, dst, buf, (size_t)pc->numel * ps_dtype_size(pc->dt), err);
    }
    free(stage);
    return s;
}

static ps_status build(adapter_plan *p, ps_backend *be, ps_err *err) {
    ps_status s;
    p->pieces = calloc((size_t)st_count(p->set) + 1, sizeof *p->pieces);
    if (!p->pieces) return ps_errf(err, PS_ENOMEM, "adapter: out of memory");
    if (st_count(p->set) > p->lim->max_tensors)
        return ps_errf(err, PS_ETOOLARGE, "adapter_model.safetensors has %d tensors, limit %d", st_count(p->set),
                       p->lim->max_tensors);
    s = p->a->kind == ADAPTER_LORA ? adapter_plan_lora(p, err) : adapter_plan_prompt(p, err);
    if (s) return s;
    p->a->block_bytes = p->n_bytes;
    if ((int64_t)p->a->block_bytes > p->lim->max_bytes)
        return ps_errf(err, PS_ETOOLARGE, "adapter needs %.2f MB as F32, limit %.2f MB", p->a->block_bytes / 1e6,
                       (double)p->lim->max_bytes / 1e6);
    if ((s = ps_buf_alloc(be, p->a->block_bytes, &p->a->block, err))) return s;
    p->a->be = be;
    point_into_block(p);
    return fill(p, be, err);
}

static ps_status load_set(const char *name, const adapter_config *cfg, st_set *set,
                          const adapter_base_shape *base, const adapter_limits *lim, ps_backend *be,
                          adapter **out, ps_err *err) {
    ps_status s = adapter_name_check(name, err);
    if (s) return s;
    adapter *a = calloc(1, sizeof *a);
    if (!a) return ps_errf(err, PS_ENOMEM, "adapter: out of memory");
    static _Atomic uint64_t next_uid = 1;
    a->uid = atomic_fetch_add(&next_uid, 1);
    snprintf(a->name, sizeof a->name, "%s", name);
    a->kind = cfg->kind;
    a->base = *base;
    adapter_plan p = {cfg, base, lim, set, a, NULL, 0, 0, PS_DT_F32, {0}};
    s = build(&p, be, err);
    free(p.pieces);
    if (s) {
        adapter_free(a);
        return s;
    }
    *out = a;
    return PS_OK;
}

ps_status adapter_load_mem(const char *name, const char *config_json, size_t config_len,
                           const void *st_buf, size_t st_len, const adapter_base_shape *base,
                           const adapter_limits *lim, ps_backend *be, adapter **out, ps_err *err) {
    *out = NULL;
    adapter_limits dl = adapter_limits_default();
    if (!lim) lim = &dl;
    ps_status s = adapter_name_check(name, err);
    if (s) return s;
    if ((int64_t)config_len > lim->max_config_bytes)
        return ps_errf(err, PS_ETOOLARGE, "adapter_config.json is %zu bytes, limit %lld", config_len,
                       (long long)lim->max_config_bytes);
    adapter_config cfg;
    if ((s = adapter_config_parse(config_json, config_len, &cfg, err))) return s;
    st_set *set = NULL;
    if ((s = st_open_buffer(st_buf, st_len, &set, err))) {
        ps_err_wrap(err, "adapter_model.safetensors");
    } else {
        s = load_set(name, &cfg, set, base, lim, be, out, err);
    }
    st_close(set);
    adapter_config_free(&cfg);
    return s;
}

static ps_status read_small_file(const char *path, int64_t limit, char **buf, size_t *n, ps_err *err) {
    *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return ps_errf(err, errno == ENOENT ? PS_ENOTFOUND : PS_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    ps_status s = PS_OK;
    if (fstat(fileno(f), &st) != 0 || st.st_size > limit) {
        s = ps_errf(err, PS_ETOOLARGE, "%s: %lld bytes, limit %lld", path, (long long)st.st_size, (long long)limit);
    } else if (!(*buf = malloc((size_t)st.st_size + 1))) {
        s = ps_errf(err, PS_ENOMEM, "%s: out of memory", path);
    } else if (fread(*buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
        s = ps_errf(err, PS_EIO, "%s: short read", path);
    }
    fclose(f);
    if (s) free(*buf), *buf = NULL;
    else *n = (size_t)st.st_size;
    return s;
}

ps_status adapter_load_dir(const char *dir, const char *name, const adapter_base_shape *base,
                           const adapter_limits *lim, ps_backend *be, adapter **out, ps_err *err) {
    *out = NULL;
    adapter_limits dl = adapter_limits_default();
    if (!lim) lim = &dl;
    char cpath[4200], spath[4200];
    snprintf(cpath, sizeof cpath, "%s/adapter_config.json", dir);
    snprintf(spath, sizeof spath, "%s/adapter_model.safetensors", dir);
    struct stat st;
    if (stat(spath, &st) != 0) {
        char bin[4200];
        snprintf(bin, sizeof bin, "%s/adapter_model.bin", dir);
        if (stat(bin, &st) == 0)
            return ps_errf(err, PS_EFORMAT,
                           "%s: pickled adapter_model.bin is refused (unpickling runs code); save the adapter "
                           "with safe_serialization=True to get adapter_model.safetensors", dir);
        return ps_errf(err, PS_ENOTFOUND, "%s: adapter_model.safetensors not found", dir);
    }
    char *json = NULL;
    size_t n = 0;
    ps_status s = read_small_file(cpath, lim->max_config_bytes, &json, &n, err);
    if (s) return s;
    adapter_config cfg;
    st_set *set = NULL;
    if ((s = adapter_config_parse(json, n, &cfg, err))) {
        ps_err_wrap(err, "%s", dir);
    } else {
        if (!(s = st_open(spath, &set, err))) s = load_set(name, &cfg, set, base, lim, be, out, err);
        adapter_config_free(&cfg);
    }
    st_close(set);
    free(json);
    return s;
}

void adapter_free(adapter *a) {
    if (!a) return;
    if (a->block && a->be) ps_buf_free(a->be, a->block);
    free(a->lora);
    free(a);
}

size_t adapter_bytes(const adapter *a) {
    return a ? a->block_bytes : 0;
}
