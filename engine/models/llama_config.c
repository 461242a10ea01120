/* config.json of a Hugging Face LLaMA folder -> llama_config.
 *
 * Mirrors transformers' LlamaConfig defaults (num_key_value_heads = heads,
 * head_dim = hidden / heads, rms_norm_eps 1e-6, rope_theta 10000, max 2048
 * positions, untied embeddings, bos 1, eos 2) and reads both the 4.x
 * `rope_theta` + `rope_scaling` keys and the 5.x `rope_parameters` object.
 * Everything this engine does not implement (RoPE scaling, biases, other
 * activations, sliding windows, non-bnb-4bit quantisation) is refused with
 * PS_ENOTSUP naming the key, rather than producing wrong numbers. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/llama_internal.h"

/* Sanity limits: far above any real LLaMA, low enough that products of two of
 * them cannot overflow int64 sizes. */
#define CFG_MAX_DIM (1 << 20)
#define CFG_MAX_VOCAB (1 << 23)
#define CFG_MAX_POS (1 << 24)

static ps_status get_int(json_t *root, const char *key, int64_t dflt, bool required, int64_t lo,
                         int64_t hi, int64_t *out, ps_err *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required) return ps_errf(err, PS_EFORMAT, "config.json: '%s' is missing", key);
        *out = dflt;
        return PS_OK;
    }
    double d;
    if (json_is_integer(v)) d = (double)json_integer_value(v);
    else if (json_is_real(v)) d = json_real_value(v);
    else return ps_errf(err, PS_EFORMAT, "config.json: '%s' must be an integer", key);
    if (!(d >= (double)lo && d <= (double)hi) || d != floor(d))
        return ps_errf(err, PS_EFORMAT, "config.json: '%s' is %g, expected an integer in [%lld, %lld]",
                       key, d, (long long)lo, (long long)hi);
    *out = (int64_t)d;
    return PS_OK;
}

static ps_status get_float(json_t *obj, const char *where, const char *key, double dflt,
                           double *out, ps_err *err) {
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        *out = dflt;
        return PS_OK;
    }
    if (!json_is_number(v))
        return ps_errf(err, PS_EFORMAT, "config.json: '%s%s' must be a number", where, key);
    *out = json_number_value(v);
    return PS_OK;
}

static bool get_bool(json_t *root, const char *key, bool dflt) {
    json_t *v = json_object_get(root, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

/* bos/eos: an integer, null (none: -1) or, for eos, a list whose first entry is used. */
static ps_status get_token_id(json_t *root, const char *key, int32_t dflt, int32_t *out,
                              ps_err *err) {
    json_t *v = json_object_get(root, key);
    if (!v) {
        *out = dflt;
        return PS_OK;
    }
    if (json_is_array(v)) v = json_array_size(v) ? json_array_get(v, 0) : json_null();
    if (json_is_null(v)) {
        *out = -1;
        return PS_OK;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= CFG_MAX_VOCAB)
        return ps_errf(err, PS_EFORMAT, "config.json: '%s' must be a token id, a list of them or null",
                       key);
    *out = (int32_t)json_integer_value(v);
    return PS_OK;
}

static ps_status check_architecture(json_t *root, ps_err *err) {
    static const char *const archs[] = {"LlamaForCausalLM", "MistralForCausalLM"};
    json_t *mt = json_object_get(root, "model_type"), *ar = json_object_get(root, "architectures");
    if (!mt && !ar)
        return ps_errf(err, PS_ENOTSUP, "config.json names neither 'model_type' nor 'architectures' "
                                        "(expected llama)");
    if (mt) {
        const char *s = json_string_value(mt);
        if (!s || (strcmp(s, "llama") && strcmp(s, "mistral")))
            return ps_errf(err, PS_ENOTSUP, "config.json: model_type '%s' is not supported (llama, mistral)",
                           s ? s : "(not a string)");
    }
    if (ar) {
        size_t i;
        json_t *a;
        if (!json_is_array(ar)) return ps_errf(err, PS_EFORMAT, "config.json: 'architectures' must be a list");
        json_array_foreach(ar, i, a) {
            const char *s = json_string_value(a);
            bool ok = s && (!strcmp(s, archs[0]) || !strcmp(s, archs[1]));
            if (!ok)
                return ps_errf(err, PS_ENOTSUP,
                               "config.json: architecture '%s' is not supported (LlamaForCausalLM, "
                               "MistralForCausalLM)", s ? s : "(not a string)");
        }
    }
    return PS_OK;
}

/* rope_scaling (4.x) or rope_parameters (5.x): only the default RoPE. */
static ps_status check_rope(json_t *root, double *theta, ps_err *err) {
    json_t *rp = json_object_get(root, "rope_parameters");
    json_t *rs = json_object_get(root, "rope_scaling");
    ps_status st = get_float(root, "", "rope_theta", 10000.0, theta, err);
    if (st) return st;
    const char *keys[2] = {"rope_parameters", "rope_scaling"};
    json_t *objs[2] = {rp, rs};
    for (int i = 0; i < 2; i++) {
        json_t *o = objs[i];
        if (!o || json_is_null(o)) continue;
        if (!json_is_object(o)) return ps_errf(err, PS_EFORMAT, "config.json: '%s' must be an object", keys[i]);
        json_t *ty = json_object_get(o, "rope_type");
        if (!ty) ty = json_object_get(o, "type");
        const char *s = ty ? json_string_value(ty) : "default";
        if (!s || strcmp(s, "default"))
            return ps_errf(err, PS_ENOTSUP,
                           "config.json: %s type '%s' is not supported (only the default RoPE)",
                           keys[i], s ? s : "(not a string)");
        if (o == rp && (st = get_float(rp, "rope_parameters.", "rope_theta", *theta, theta, err)))
            return st;
    }
    return PS_OK;
}

static ps_status check_unsupported(json_t *root, int64_t max_pos, ps_err *err) {
    json_t *act = json_object_get(root, "hidden_act");
    if (act && (!json_is_string(act) || strcmp(json_string_value(act), "silu")))
        return ps_errf(err, PS_ENOTSUP, "config.json: hidden_act '%s' is not supported (silu)",
                       json_is_string(act) ? json_string_value(act) : "(not a string)");
    if (get_bool(root, "attention_bias", false) || get_bool(root, "mlp_bias", false))
        return ps_errf(err, PS_ENOTSUP, "config.json: attention_bias/mlp_bias true is not supported");
    json_t *sw = json_object_get(root, "sliding_window");
    if (sw && !json_is_null(sw) && get_bool(root, "use_sliding_window", true) &&
        (!json_is_integer(sw) || json_integer_value(sw) < max_pos))
        return ps_errf(err, PS_ENOTSUP,
                       "config.json: sliding_window %lld below max_position_embeddings %lld is "
                       "not supported", json_is_integer(sw) ? (long long)json_integer_value(sw) : -1LL,
                       (long long)max_pos);
    json_t *qc = json_object_get(root, "quantization_config");
    if (qc && !json_is_null(qc)) {
        const char *meth = json_string_value(json_object_get(qc, "quant_method"));
        const char *qt = json_string_value(json_object_get(qc, "bnb_4bit_quant_type"));
        if (!meth || strcmp(meth, "bitsandbytes") || !get_bool(qc, "load_in_4bit", false))
            return ps_errf(err, PS_ENOTSUP,
                           "config.json: quantization_config '%s'%s is not supported (only "
                           "bitsandbytes load_in_4bit nf4, or an unquantised checkpoint)",
                           meth ? meth : "(no quant_method)",
                           get_bool(qc, "load_in_8bit", false) ? " 8-bit" : "");
        if (qt && strcmp(qt, "nf4"))
            return ps_errf(err, PS_ENOTSUP,
                           "config.json: bnb_4bit_quant_type '%s' is not supported (nf4)", qt);
    }
    return PS_OK;
}

ps_status llama_config_check(const llama_config *c, ps_err *err) {
    if (c->vocab < 1 || c->hidden < 1 || c->ffn < 1 || c->n_layers < 1 || c->n_heads < 1 ||
        c->n_kv_heads < 1 || c->head_dim < 2 || c->max_pos < 1)
        return ps_errf(err, PS_EFORMAT, "llama config: every dimension must be positive "
                                        "(vocab %d hidden %d ffn %d layers %d heads %d kv %d head_dim %d "
                                        "max_pos %d)", c->vocab, c->hidden, c->ffn, c->n_layers,
                       c->n_heads, c->n_kv_heads, c->head_dim, c->max_pos);
    if (c->n_heads % c->n_kv_heads)
        return ps_errf(err, PS_EFORMAT,
                       "llama config: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                       c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2)
        return ps_errf(err, PS_EFORMAT, "llama config: head_dim %d must be even (RoPE pairs)", c->head_dim);
    if ((int64_t)c->n_heads * c->head_dim > CFG_MAX_DIM)
        return ps_errf(err, PS_EFORMAT, "llama config: heads*head_dim %lld over %d",
                       (long long)c->n_heads * c->head_dim, CFG_MAX_DIM);
    if (!(c->rms_eps > 0.0f && c->rms_eps < 1.0f) || !(c->rope_theta > 0.0f && isfinite(c->rope_theta)))
        return ps_errf(err, PS_EFORMAT, "llama config: rms_norm_eps %g must be in (0, 1) and "
                                        "rope_theta %g positive", c->rms_eps, c->rope_theta);
    if (c->bos_id >= c->vocab || c->eos_id >= c->vocab)
        return ps_errf(err, PS_EFORMAT, "llama config: bos %d / eos %d outside the vocabulary of %d",
                       c->bos_id, c->eos_id, c->vocab);
    return PS_OK;
}

static ps_status parse_dims(json_t *root, llama_config *c, ps_err *err) {
    int64_t v[9];
    ps_status st;
    if ((st = get_int(root, "vocab_size", 0, true, 1, CFG_MAX_VOCAB, &v[0], err)) ||
        (st = get_int(root, "hidden_size", 0, true, 1, CFG_MAX_DIM, &v[1], err)) ||
        (st = get_int(root, "intermediate_size", 0, true, 1, CFG_MAX_DIM, &v[2], err)) ||
        (st = get_int(root, "num_hidden_layers", 0, true, 1, 4096, &v[3], err)) ||
        (st = get_int(root, "num_attention_heads", 0, true, 1, 65536, &v[4], err)) ||
        (st = get_int(root, "num_key_value_heads", v[4], false, 1, 65536, &v[5], err)) ||
        (st = get_int(root, "max_position_embeddings", 2048, false, 1, CFG_MAX_POS, &v[7], err)))
        return st;
    if (!json_object_get(root, "head_dim") && v[1] % v[4])
        return ps_errf(err, PS_EFORMAT,
                       "config.json: hidden_size %lld is not a multiple of num_attention_heads %lld "
                       "and no head_dim is given", (long long)v[1], (long long)v[4]);
    if ((st = get_int(root, "head_dim", v[1] / v[4], false, 2, 65536, &v[6], err))) return st;
    c->vocab = (int)v[0];
    c->hidden = (int)v[1];
    c->ffn = (int)v[2];
    c->n_layers = (int)v[3];
    c->n_heads = (int)v[4];
    c->n_kv_heads = (int)v[5];
    c->head_dim = (int)v[6];
    c->max_pos = (int)v[7];
    return PS_OK;
}

ps_status llama_config_parse(const char *json, size_t len, llama_config *c, ps_err *err) {
    memset(c, 0, sizeof *c);
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) return ps_errf(err, PS_EFORMAT, "config.json: line %d: %s", je.line, je.text);
    ps_status st;
    double eps, theta;
    if (!json_is_object(root)) {
        st = ps_errf(err, PS_EFORMAT, "config.json: top level must be an object");
        goto fail;
    }
    if ((st = check_architecture(root, err)) || (st = parse_dims(root, c, err)) ||
        (st = check_unsupported(root, c->max_pos, err)) || (st = check_rope(root, &theta, err)) ||
        (st = get_float(root, "", "rms_norm_eps", 1e-6, &eps, err)) ||
        (st = get_token_id(root, "bos_token_id", 1, &c->bos_id, err)) ||
        (st = get_token_id(root, "eos_token_id", 2, &c->eos_id, err)))
        goto fail;
    c->rms_eps = (float)eps;
    c->rope_theta = (float)theta;
    c->tie_embeddings = get_bool(root, "tie_word_embeddings", false);
    st = llama_config_check(c, err);
fail:
    json_decref(root);
    return st;
}

ps_status llama_config_load(const char *dir, llama_config *cfg, ps_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    memset(cfg, 0, sizeof *cfg);
    FILE *f = fopen(path, "rb");
    if (!f) return ps_errf(err, PS_ENOTFOUND, "%s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t n = 0, cap = 0;
    ps_status st = PS_OK;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 8192;
            if (cap > ((size_t)16 << 20)) {
                st = ps_errf(err, PS_EFORMAT, "%s: larger than 16 MB", path);
                break;
            }
            char *nb = realloc(buf, cap);
            if (!nb) {
                st = ps_errf(err, PS_ENOMEM, "%s: out of memory", path);
                break;
            }
            buf = nb;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    if (!st && ferror(f)) st = ps_errf(err, PS_EIO, "%s: read error", path);
    fclose(f);
    if (!st) st = llama_config_parse(buf, n, cfg, err);
    free(buf);
    return st;
}
