/* LoRA tensors of a PEFT file -> load plan: key parsing, module and layer
 * checks against the base, rank from rank_pattern / r checked against the
 * tensor shapes, scale alpha / r or alpha / sqrt(r) (use_rslora), and A/B
 * pairing.
 *
 * Keys (PEFT get_peft_model_state_dict, adapter name removed):
 *   base_model.model.model.layers.<l>.self_attn.<q|k|v|o>_proj.lora_A.weight  [r, in]
 *   base_model.model.model.layers.<l>.mlp.<gate|up|down>_proj.lora_B.weight    [out, r]
 * Mirrors peft tuners/lora/layer.py update_layer (scaling) and forward
 * (y = W x + B(A x) * scaling). Embedding LoRA, DoRA magnitudes and LoRA
 * biases are refused (PS_ENOTSUP). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapter_impl.h"

#define NM "'%.200s'"

static const char *const mod_names[ADAPTER_MOD_COUNT] = {"q_proj", "k_proj", "v_proj", "o_proj",
                                                         "gate_proj", "up_proj", "down_proj"};

static int find_module(const char *parent, size_t parent_len, const char *name) {
    for (int m = 0; m < ADAPTER_MOD_COUNT; m++) {
        const char *want = adapter_module_parent((adapter_module)m);
        if (strlen(want) == parent_len && !strncmp(parent, want, parent_len) &&
            !strcmp(name, mod_names[m]))
            return m;
    }
    return -1;
}

/* "model.layers.<l>.<parent>.<module>" -> layer, module. */
static ps_status parse_path(const char *tname, const char *path, const adapter_base_shape *b,
                            int *layer, adapter_module *mod, ps_err *err) {
    static const char lp[] = "model.layers.";
    const char *p = path + sizeof lp - 1;
    if (strncmp(path, lp, sizeof lp - 1) != 0 || *p < '0' || *p > '9') goto no_module;
    long l = 0;
    while (*p >= '0' && *p <= '9') {
        if (l < 100000000) l = l * 10 + (*p - '0');
        p++;
    }
    if (*p++ != '.') goto no_module;
    const char *dot = strchr(p, '.');
    if (!dot) goto no_module;
    int m = find_module(p, (size_t)(dot - p), dot + 1);
    if (m < 0) goto no_module;
    if (l >= b->n_layers)
        return ps_errf(err, PS_EINVAL, "tensor " NM ": layer %ld out of range (the base has %d layers)",
                       tname, l, b->n_layers);
    *layer = (int)l;
    *mod = (adapter_module)m;
    return PS_OK;
no_module:
    return ps_errf(err, PS_EINVAL,
                   "tensor " NM ": the base has no module '%.120s' a LoRA can adapt (supported: "
                   "model.layers.<l>.self_attn.{q,k,v,o}_proj and model.layers.<l>.mlp.{gate,up,down}_proj)",
                   tname, path);
}

/* Explains a tensor that is neither a LoRA weight nor a saved module. */
static ps_status unknown_tensor(const char *name, ps_err *err) {
    if (strstr(name, "lora_magnitude_vector"))
        return ps_errf(err, PS_ENOTSUP, "tensor " NM ": DoRA magnitudes are not supported", name);
    if (strstr(name, "lora_embedding_"))
        return ps_errf(err, PS_ENOTSUP, "tensor " NM ": LoRA on embeddings is not supported", name);
    if (strstr(name, ".lora_A.") || strstr(name, ".lora_B."))
        return ps_errf(err, PS_ENOTSUP, "tensor " NM ": only lora_A.weight / lora_B.weight are supported (no LoRA bias)", name);
    return ps_errf(err, PS_EFORMAT,
                   "tensor " NM ": not a LoRA weight ('" ADAPTER_PEFT_PREFIX "<module>.lora_A.weight' / "
                   "'.lora_B.weight') nor a modules_to_save copy", name);
}

/* Splits a LoRA key: 0 = A, 1 = B, -1 = not a LoRA key; path gets the module path. */
static int split_key(const char *name, char *path, size_t cap) {
    static const char pre[] = ADAPTER_PEFT_PREFIX;
    size_t n = strlen(name), pl = sizeof pre - 1, sl = strlen(".lora_A.weight");
    if (n <= pl + sl || strncmp(name, pre, pl) != 0) return -1;
    const char *suf = name + n - sl;
    int which = !strcmp(suf, ".lora_A.weight") ? 0 : !strcmp(suf, ".lora_B.weight") ? 1 : -1;
    if (which < 0 || n - pl - sl >= cap) return -1;
    memcpy(path, name + pl, n - pl - sl);
    path[n - pl - sl] = 0;
    return which;
}

/* Rank and alpha for one module from the config; fills the lora table entry. */
static ps_status set_rank(adapter_plan *p, const char *tname, const char *path, adapter_lora *e,
                          ps_err *err) {
    const adapter_config *c = p->cfg;
    if (!adapter_config_targets(c, path))
        return ps_errf(err, PS_EFORMAT, "tensor " NM ": module '%.120s' is not in target_modules", tname, path);
    int r = adapter_config_rank(c, path);
    if (r > p->lim->max_rank)
        return ps_errf(err, PS_ETOOLARGE, "tensor " NM ": rank %d over the limit %d", tname, r, p->lim->max_rank);
    e->r = r;
    e->alpha = (float)adapter_config_alpha(c, path);
    /* peft tuners/lora/layer.py update_layer: scaling = lora_alpha / (sqrt(r) if use_rslora else r) */
    e->scale = (float)(adapter_config_alpha(c, path) / (c->use_rslora ? sqrt((double)r) : (double)r));
    return PS_OK;
}

static ps_status plan_one(adapter_plan *p, const st_tensor *t, unsigned char *seen, ps_err *err) {
    char path[256];
    int which = split_key(t->name, path, sizeof path);
    if (which < 0) return unknown_tensor(t->name, err);
    int l = 0;
    adapter_module m = ADAPTER_MOD_Q;
    ps_status s = parse_path(t->name, path, p->base, &l, &m, err);
    if (s) return s;
    adapter_lora *e = &p->a->lora[ADAPTER_LORA_INDEX(p->a, l, m)];
    if (!e->r && (s = set_rank(p, t->name, path, e, err))) return s;
    int64_t in = adapter_module_in(p->base, m), out = adapter_module_out(p->base, m);
    char hint[160];
    snprintf(hint, sizeof hint, "r=%d from adapter_config.json, %s %lld of the base", e->r,
             which ? "out_features" : "in_features", (long long)(which ? out : in));
    if ((s = adapter_check_tensor(t, which ? out : e->r, which ? e->r : in, hint, err))) return s;
    seen[ADAPTER_LORA_INDEX(p->a, l, m)] |= (unsigned char)(1u << which);
    p->a->targets |= 1u << m;
    if (e->r > p->a->max_rank) p->a->max_rank = e->r;
    return adapter_plan_add(p, t, which ? PIECE_LORA_B : PIECE_LORA_A, l, m,
                            which ? out * e->r : e->r * in, err);
}

/* F16 or BF16 when every LoRA weight in the file has that dtype, else F32
 * (a mix is widened: one dtype per adapter keeps the kernels simple), unless
 * the loader's lora_dtype narrows them all (adapter_plan_lora). */
static ps_dtype lora_storage(const st_set *set) {
    int n16 = 0, nb16 = 0, n = 0;
    for (int i = 0; i < st_count(set); i++) {
        const st_tensor *t = st_at(set, i);
        if (!strstr(t->name, ".lora_A.weight") && !strstr(t->name, ".lora_B.weight")) continue;
        n++;
        n16 += t->dtype == ST_F16;
        nb16 += t->dtype == ST_BF16;
    }
    return n && n16 == n ? PS_DT_F16 : n && nb16 == n ? PS_DT_BF16 : PS_DT_F32;
}

ps_status adapter_plan_lora(adapter_plan *p, ps_err *err) {
    const adapter_base_shape *b = p->base;
    p->lora_dt = p->a->lora_dtype = p->lim->lora_dtype != PS_DT_F32 ? p->lim->lora_dtype : lora_storage(p->set);
    int n_entries = b->n_layers * ADAPTER_MOD_COUNT;
    unsigned char *seen = calloc((size_t)n_entries, 1);
    p->a->lora = calloc((size_t)n_entries, sizeof *p->a->lora);
    if (!seen || !p->a->lora) {
        free(seen);
        return ps_errf(err, PS_ENOMEM, "adapter: out of memory");
    }
    p->a->rslora = p->cfg->use_rslora;
    ps_status s = PS_OK;
    for (int i = 0; i < st_count(p->set) && !s; i++) {
        const st_tensor *t = st_at(p->set, i);
        int saved = adapter_plan_saved_module(p, t, err);
        if (saved < 0) s = (ps_status)-saved;
        else if (!saved) s = plan_one(p, t, seen, err);
    }
    for (int i = 0; i < n_entries && !s; i++) {
        if (seen[i] == 0 || seen[i] == 3) continue;
        int l = i / ADAPTER_MOD_COUNT, m = i % ADAPTER_MOD_COUNT;
        s = ps_errf(err, PS_EFORMAT,
                    "tensor '" ADAPTER_PEFT_PREFIX "model.layers.%d.%s.%s.lora_%c.weight' is missing "
                    "(its lora_%c is present)", l, adapter_module_parent((adapter_module)m),
                    mod_names[m], seen[i] == 1 ? 'B' : 'A', seen[i] == 1 ? 'A' : 'B');
    }
    if (!s && p->a->max_rank == 0)
        s = ps_errf(err, PS_EFORMAT, "adapter_model.safetensors holds no LoRA tensors "
                    "('" ADAPTER_PEFT_PREFIX "model.layers.<l>.<module>.lora_A.weight')");
    free(seen);
    return s;
}

const char *adapter_module_name(adapter_module m) {
    return (unsigned)m < ADAPTER_MOD_COUNT ? mod_names[m] : "?";
}
