/* adapter_config.json -> adapter_config (see adapter_config.h). Mirrors the
 * defaults of PEFT's LoraConfig / PrefixTuningConfig / PromptTuningConfig
 * (r 8, lora_alpha 8, use_rslora false) for keys older versions omit. */
#include "adapter_config.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CFG "adapter_config.json"

static ps_status get_int(json_t *root, const char *key, int def, int lo, int hi, int *out,
                         ps_err *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (def < lo) return ps_errf(err, PS_EFORMAT, CFG ": missing '%s'", key);
        *out = def;
        return PS_OK;
    }
    double d;
    if (json_is_integer(v)) d = (double)json_integer_value(v);
    else if (json_is_real(v)) d = json_real_value(v);
    else return ps_errf(err, PS_EFORMAT, CFG ": '%s' must be an integer", key);
    if (d != floor(d)) return ps_errf(err, PS_EFORMAT, CFG ": '%s' is %g, expected an integer", key, d);
    if (d < lo || d > hi)
        return ps_errf(err, d > hi ? PS_ETOOLARGE : PS_EFORMAT,
                       CFG ": '%s' is %.0f, allowed %d..%d", key, d, lo, hi);
    *out = (int)d;
    return PS_OK;
}

static ps_status get_num(json_t *root, const char *key, double def, double *out, ps_err *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return PS_OK;
    }
    if (!json_is_number(v)) return ps_errf(err, PS_EFORMAT, CFG ": '%s' must be a number", key);
    *out = json_number_value(v);
    if (!isfinite(*out)) return ps_errf(err, PS_EFORMAT, CFG ": '%s' is not finite", key);
    return PS_OK;
}

static ps_status get_bool(json_t *root, const char *key, bool def, bool *out, ps_err *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return PS_OK;
    }
    if (!json_is_boolean(v)) return ps_errf(err, PS_EFORMAT, CFG ": '%s' must be true or false", key);
    *out = json_is_true(v);
    return PS_OK;
}

/* A list of strings (or null). Each string is copied. */
static ps_status get_str_list(json_t *root, const char *key, char ***out, int *n, ps_err *err) {
    *out = NULL;
    *n = 0;
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return PS_OK;
    if (!json_is_array(v)) return ps_errf(err, PS_EFORMAT, CFG ": '%s' must be a list of strings", key);
    size_t cnt = json_array_size(v);
    if (cnt > 4096) return ps_errf(err, PS_ETOOLARGE, CFG ": '%s' has %zu entries, limit 4096", key, cnt);
    *out = calloc(cnt ? cnt : 1, sizeof **out);
    if (!*out) return ps_errf(err, PS_ENOMEM, CFG ": out of memory");
    for (size_t i = 0; i < cnt; i++) {
        json_t *s = json_array_get(v, i);
        if (!json_is_string(s))
            return ps_errf(err, PS_EFORMAT, CFG ": '%s'[%zu] must be a string", key, i);
        (*out)[i] = strdup(json_string_value(s));
        if (!(*out)[i]) return ps_errf(err, PS_ENOMEM, CFG ": out of memory");
        (*n)++;
    }
    return PS_OK;
}

/* PEFT pattern keys are regexes; we implement literal dotted suffixes only. */
static bool has_regex_syntax(const char *k) {
    return strpbrk(k, "*+?()[]{}|^$\\") != NULL;
}

static ps_status get_patterns(json_t *root, const char *key, bool integer, adapter_pattern **out,
                              int *n, ps_err *err) {
    *out = NULL;
    *n = 0;
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return PS_OK;
    if (!json_is_object(v)) return ps_errf(err, PS_EFORMAT, CFG ": '%s' must be an object", key);
    size_t cnt = json_object_size(v);
    if (cnt > 4096) return ps_errf(err, PS_ETOOLARGE, CFG ": '%s' has %zu entries, limit 4096", key, cnt);
    *out = calloc(cnt ? cnt : 1, sizeof **out);
    if (!*out) return ps_errf(err, PS_ENOMEM, CFG ": out of memory");
    const char *k;
    json_t *val;
    json_object_foreach(v, k, val) { /* jansson keeps insertion (file) order */
        if (has_regex_syntax(k))
            return ps_errf(err, PS_ENOTSUP,
                           CFG ": %s key '%.80s' uses regular-expression syntax; only module names "
                           "and dotted suffixes such as 'layers.3.self_attn.q_proj' are supported",
                           key, k);
        if (!json_is_number(val))
            return ps_errf(err, PS_EFORMAT, CFG ": %s['%.80s'] must be a number", key, k);
        double d = json_number_value(val);
        if (!isfinite(d) || (integer && (d != floor(d) || d < 1 || d > 1e6)))
            return ps_errf(err, PS_EFORMAT, CFG ": %s['%.80s'] is %g, expected %s", key, k, d,
                           integer ? "a positive integer" : "a finite number");
        (*out)[*n].key = strdup(k);
        if (!(*out)[*n].key) return ps_errf(err, PS_ENOMEM, CFG ": out of memory");
        (*out)[*n].value = d;
        (*n)++;
    }
    return PS_OK;
}

/* Keys whose non-default value changes the forward pass in a way we do not implement. */
static ps_status refuse_unsupported(json_t *root, ps_err *err) {
    static const char *const must_be_false[] = {"use_dora", "lora_bias", "fan_in_fan_out",
                                                "use_qalora", "use_bdlora"};
    static const char *const must_be_null[] = {"layer_replication", "alora_invocation_tokens",
                                               "trainable_token_indices", "target_parameters"};
    for (size_t i = 0; i < sizeof must_be_false / sizeof must_be_false[0]; i++) {
        json_t *v = json_object_get(root, must_be_false[i]);
        if (v && !json_is_null(v) && !json_is_false(v))
            return ps_errf(err, PS_ENOTSUP, CFG ": '%s' is set; this server serves plain LoRA only",
                           must_be_false[i]);
    }
    for (size_t i = 0; i < sizeof must_be_null / sizeof must_be_null[0]; i++) {
        json_t *v = json_object_get(root, must_be_null[i]);
        bool empty = !v || json_is_null(v) || (json_is_array(v) && json_array_size(v) == 0) ||
                     (json_is_object(v) && json_object_size(v) == 0);
        if (!empty)
            return ps_errf(err, PS_ENOTSUP, CFG ": '%s' is set; this server does not implement it",
                           must_be_null[i]);
    }
    json_t *bias = json_object_get(root, "bias");
    if (bias && !json_is_null(bias) && !(json_is_string(bias) && !strcmp(json_string_value(bias), "none")))
        return ps_errf(err, PS_ENOTSUP, CFG ": 'bias' must be \"none\" (LoRA bias terms are not supported)");
    return PS_OK;
}

static ps_status parse_lora(json_t *root, adapter_config *c, ps_err *err) {
    ps_status s;
    if ((s = refuse_unsupported(root, err))) return s;
    if ((s = get_int(root, "r", 8, 1, 1000000, &c->r, err))) return s;
    if ((s = get_num(root, "lora_alpha", 8.0, &c->lora_alpha, err))) return s;
    if ((s = get_bool(root, "use_rslora", false, &c->use_rslora, err))) return s;
    json_t *t = json_object_get(root, "target_modules");
    if (!t || json_is_null(t) || json_is_string(t)) {
        c->target_all = true; /* PEFT's regex / default mapping: the tensors decide */
    } else {
        if ((s = get_str_list(root, "target_modules", &c->targets, &c->n_targets, err))) return s;
        if (c->n_targets == 0) return ps_errf(err, PS_EFORMAT, CFG ": 'target_modules' is empty");
    }
    if ((s = get_patterns(root, "rank_pattern", true, &c->rank_pattern, &c->n_rank_pattern, err)))
        return s;
    return get_patterns(root, "alpha_pattern", false, &c->alpha_pattern, &c->n_alpha_pattern, err);
}

static ps_status parse_prompt(json_t *root, adapter_config *c, ps_err *err) {
    ps_status s;
    int subs;
    if ((s = get_int(root, "num_virtual_tokens", -1, 1, 1000000, &c->num_virtual_tokens, err))) return s;
    if ((s = get_int(root, "token_dim", -1, 1, 1000000, &c->token_dim, err))) return s;
    if ((s = get_int(root, "num_layers", 0, 0, 100000, &c->num_layers, err))) return s;
    if ((s = get_int(root, "num_attention_heads", 0, 0, 100000, &c->num_attention_heads, err))) return s;
    if ((s = get_int(root, "encoder_hidden_size", 0, 0, 1000000, &c->encoder_hidden_size, err))) return s;
    if ((s = get_bool(root, "prefix_projection", false, &c->prefix_projection, err))) return s;
    if ((s = get_int(root, "num_transformer_submodules", 1, 1, 2, &subs, err))) return s;
    if (subs != 1)
        return ps_errf(err, PS_ENOTSUP, CFG ": num_transformer_submodules is %d; decoder-only models use 1", subs);
    return PS_OK;
}

static ps_status parse_kind(json_t *root, adapter_config *c, ps_err *err) {
    json_t *pt = json_object_get(root, "peft_type");
    if (!json_is_string(pt)) return ps_errf(err, PS_EFORMAT, CFG ": missing string 'peft_type'");
    const char *p = json_string_value(pt);
    if (!strcmp(p, "LORA")) c->kind = ADAPTER_LORA;
    else if (!strcmp(p, "PREFIX_TUNING")) c->kind = ADAPTER_PREFIX;
    else if (!strcmp(p, "PROMPT_TUNING")) c->kind = ADAPTER_PROMPT;
    else
        return ps_errf(err, PS_ENOTSUP,
                       CFG ": peft_type '%.40s' is not supported (supported: LORA, PREFIX_TUNING, PROMPT_TUNING)", p);
    json_t *tt = json_object_get(root, "task_type");
    if (tt && !json_is_null(tt) && !(json_is_string(tt) && !strcmp(json_string_value(tt), "CAUSAL_LM")))
        return ps_errf(err, PS_ENOTSUP, CFG ": task_type '%.40s' is not supported (expected CAUSAL_LM)",
                       json_is_string(tt) ? json_string_value(tt) : "?");
    return PS_OK;
}

ps_status adapter_config_parse(const char *json, size_t len, adapter_config *c, ps_err *err) {
    memset(c, 0, sizeof *c);
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) return ps_errf(err, PS_EFORMAT, CFG ": line %d column %d: %s", je.line, je.column, je.text);
    ps_status s;
    if (!json_is_object(root)) {
        s = ps_errf(err, PS_EFORMAT, CFG ": expected a JSON object");
        goto fail;
    }
    if ((s = parse_kind(root, c, err))) goto fail;
    s = c->kind == ADAPTER_LORA ? parse_lora(root, c, err) : parse_prompt(root, c, err);
    if (s) goto fail;
    if ((s = get_str_list(root, "modules_to_save", &c->modules_to_save, &c->n_modules_to_save, err)))
        goto fail;
    json_decref(root);
    return PS_OK;
fail:
    json_decref(root);
    adapter_config_free(c);
    return s;
}

void adapter_config_free(adapter_config *c) {
    if (!c) return;
    for (int i = 0; c->targets && i < c->n_targets; i++) free(c->targets[i]);
    for (int i = 0; c->modules_to_save && i < c->n_modules_to_save; i++) free(c->modules_to_save[i]);
    for (int i = 0; c->rank_pattern && i < c->n_rank_pattern; i++) free(c->rank_pattern[i].key);
    for (int i = 0; c->alpha_pattern && i < c->n_alpha_pattern; i++) free(c->alpha_pattern[i].key);
    free(c->targets);
    free(c->modules_to_save);
    free(c->rank_pattern);
    free(c->alpha_pattern);
    memset(c, 0, sizeof *c);
}

bool adapter_pattern_match(const char *key, const char *path) {
    size_t kl = strlen(key), pl = strlen(path);
    if (kl == 0 || kl > pl) return false;
    if (strcmp(path + pl - kl, key) != 0) return false;
    return kl == pl || path[pl - kl - 1] == '.';
}

int adapter_config_rank(const adapter_config *c, const char *path) {
    for (int i = 0; i < c->n_rank_pattern; i++)
        if (adapter_pattern_match(c->rank_pattern[i].key, path)) return (int)c->rank_pattern[i].value;
    return c->r;
}

double adapter_config_alpha(const adapter_config *c, const char *path) {
    for (int i = 0; i < c->n_alpha_pattern; i++)
        if (adapter_pattern_match(c->alpha_pattern[i].key, path)) return c->alpha_pattern[i].value;
    return c->lora_alpha;
}

bool adapter_config_targets(const adapter_config *c, const char *path) {
    if (c->target_all) return true;
    for (int i = 0; i < c->n_targets; i++)
        if (adapter_pattern_match(c->targets[i], path)) return true;
    return false;
}
