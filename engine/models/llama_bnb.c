/* Weights saved by transformers + bitsandbytes with load_in_4bit (NF4, with or
 * without double quantisation), read without requantising.
 *
 * Linear4bit._save_to_state_dict writes, for module m (llama-tiny README 6.6):
 *   m.weight           U8 [n/2, 1]   packed codes, first element in the high nibble
 *   m.weight.absmax    U8 [nblocks]  DQ codes of the block scales (F32 scales when not nested)
 *   m.weight.quant_map F32 [16]      the NF4 table
 *   m.weight.nested_absmax F32, m.weight.nested_quant_map F32 [256]  (nested only)
 *   m.weight.quant_state.bitsandbytes__nf4  U8: JSON {quant_type, blocksize, dtype,
 *                      shape, nested_blocksize, nested_dtype, nested_offset}
 * This is exactly our ps_nf4 layout, so the bytes are uploaded as they are. We
 * only accept what our kernels compute bit-exactly: NF4, blocksize 64, nested
 * blocksize 256 and the standard NF4 / dynamic tables; anything else is
 * PS_ENOTSUP (FP4, other block sizes, 8-bit LLM.int8 weights). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "math/nf4.h"
#include "models/llama_internal.h"

static const st_tensor *find_suffix(const st_set *s, const char *name, const char *suffix) {
    char key[512];
    snprintf(key, sizeof key, "%s%s", name, suffix);
    return st_find(s, key);
}

bool llama_bnb_present(const st_set *s, const char *name) {
    const st_tensor *w = st_find(s, name);
    return find_suffix(s, name, ".quant_state.bitsandbytes__nf4") ||
           find_suffix(s, name, ".quant_state.bitsandbytes__fp4") || find_suffix(s, name, ".SCB") ||
           (w && (w->dtype == ST_U8 || w->dtype == ST_I8));
}

ps_status llama_bnb_state_parse(const char *json, size_t len, llama_bnb_state *q, ps_err *err) {
    memset(q, 0, sizeof *q);
    json_error_t je;
    json_t *root = json_loadb(json, len, 0, &je);
    if (!root) return ps_errf(err, PS_EFORMAT, "quant_state: invalid JSON at line %d: %s", je.line, je.text);
    ps_status st = PS_EFORMAT;
    json_t *qt = json_object_get(root, "quant_type"), *bs = json_object_get(root, "blocksize");
    json_t *sh = json_object_get(root, "shape"), *nb = json_object_get(root, "nested_blocksize");
    json_t *no = json_object_get(root, "nested_offset");
    if (!json_is_string(qt) || strlen(json_string_value(qt)) >= sizeof q->quant_type) {
        ps_errf(err, st, "quant_state: 'quant_type' must be a short string");
        goto done;
    }
    if (!json_is_integer(bs) || !json_is_array(sh) || json_array_size(sh) != 2) {
        ps_errf(err, st, "quant_state: needs an integer 'blocksize' and a 2-d 'shape'");
        goto done;
    }
    for (int i = 0; i < 2; i++) {
        json_t *d = json_array_get(sh, (size_t)i);
        if (!json_is_integer(d) || json_integer_value(d) < 1 || json_integer_value(d) > (1 << 24)) {
            ps_errf(err, st, "quant_state: shape[%d] must be an integer in [1, %d]", i, 1 << 24);
            goto done;
        }
        q->shape[i] = json_integer_value(d);
    }
    q->nested = nb || no;
    if (q->nested && (!json_is_integer(nb) || !json_is_number(no) ||
                      !isfinite(json_number_value(no)))) {
        ps_errf(err, st, "quant_state: 'nested_blocksize' and 'nested_offset' must both be numbers");
        goto done;
    }
    snprintf(q->quant_type, sizeof q->quant_type, "%s", json_string_value(qt));
    q->blocksize = json_integer_value(bs) > 0 && json_integer_value(bs) < (1 << 20) ? (int)json_integer_value(bs) : -1;
    if (q->nested) {
        json_int_t v = json_integer_value(nb);
        q->nested_blocksize = v > 0 && v < (1 << 20) ? (int)v : -1;
        /* Python prints the float32 offset as the shortest double that round-trips:
         * parsing it as double and rounding to float recovers it exactly. */
        q->nested_offset = (float)json_number_value(no);
    }
    st = PS_OK;
done:
    json_decref(root);
    return st;
}

/* A float32 table stored in the checkpoint must equal ours bit for bit. */
static ps_status check_table(const st_set *s, const char *name, const char *suffix,
                             const float *want, int n, ps_err *err) {
    const st_tensor *t = find_suffix(s, name, suffix);
    if (!t) return ps_errf(err, PS_EFORMAT, "tensor '%s%s' is missing", name, suffix);
    int64_t shape[1] = {n};
    ps_status st = llama_check_shape(t, 1, shape, err);
    if (st) return st;
    if (t->dtype != ST_F32)
        return ps_errf(err, PS_EFORMAT, "tensor '%s': dtype %s, expected F32", t->name,
                       st_dtype_name(t->dtype));
    for (int i = 0; i < n; i++) {
        float v;
        memcpy(&v, (const char *)t->data + 4 * i, 4);
        if (memcmp(&v, &want[i], 4))
            return ps_errf(err, PS_ENOTSUP,
                           "tensor '%s': entry %d is %.9g, the standard table has %.9g (custom "
                           "quantisation tables are not supported)", t->name, i, v, want[i]);
    }
    return PS_OK;
}

/* Presence, dtype and element count of one stored array. */
static ps_status get_array(const st_set *s, const char *name, const char *suffix, st_dtype dt,
                           int64_t numel, const st_tensor **out, ps_err *err) {
    const st_tensor *t = find_suffix(s, name, suffix);
    *out = t;
    if (!t) return ps_errf(err, PS_EFORMAT, "tensor '%s%s' is missing", name, suffix);
    if (t->dtype != dt)
        return ps_errf(err, PS_EFORMAT, "tensor '%s': dtype %s, expected %s", t->name,
                       st_dtype_name(t->dtype), st_dtype_name(dt));
    if (st_numel(t) != numel)
        return ps_errf(err, PS_EFORMAT, "tensor '%s': %lld elements, expected %lld", t->name,
                       (long long)st_numel(t), (long long)numel);
    return PS_OK;
}

static ps_status read_state(const st_set *s, const char *name, int64_t out, int64_t in,
                            llama_bnb_state *q, ps_err *err) {
    const st_tensor *js = find_suffix(s, name, ".quant_state.bitsandbytes__nf4");
    if (!js) {
        if (find_suffix(s, name, ".quant_state.bitsandbytes__fp4"))
            return ps_errf(err, PS_ENOTSUP, "tensor '%s': bitsandbytes FP4 is not supported (nf4 only)", name);
        if (find_suffix(s, name, ".SCB"))
            return ps_errf(err, PS_ENOTSUP, "tensor '%s': bitsandbytes 8-bit (LLM.int8) weights are "
                                            "not supported (nf4 only)", name);
        return ps_errf(err, PS_EFORMAT, "tensor '%s' is quantised but '%s.quant_state.bitsandbytes__nf4' "
                                        "is missing", name, name);
    }
    if (js->dtype != ST_U8 || js->ndim != 1)
        return ps_errf(err, PS_EFORMAT, "tensor '%s': dtype %s with %d dims, expected 1-d U8 JSON bytes",
                       js->name, st_dtype_name(js->dtype), js->ndim);
    ps_status st = llama_bnb_state_parse(js->data, js->nbytes, q, err);
    if (st) {
        ps_err_wrap(err, "tensor '%s'", js->name);
        return st;
    }
    if (strcmp(q->quant_type, "nf4") || q->blocksize != PS_NF4_BLOCK ||
        (q->nested && q->nested_blocksize != PS_NF4_DQ_BLOCK))
        return ps_errf(err, PS_ENOTSUP,
                       "tensor '%s': quant_type '%s' blocksize %d nested_blocksize %d is not "
                       "supported (nf4, 64, 256)", js->name, q->quant_type, q->blocksize,
                       q->nested_blocksize);
    if (q->shape[0] != out || q->shape[1] != in)
        return ps_errf(err, PS_EFORMAT, "tensor '%s': shape [%lld, %lld], expected [%lld, %lld]", name,
                       (long long)q->shape[0], (long long)q->shape[1], (long long)out, (long long)in);
    return PS_OK;
}

ps_status llama_bnb_load(llama_model *m, const st_set *s, const char *name, int64_t out,
                         int64_t in, ps_weight *w, ps_err *err) {
    llama_bnb_state q;
    ps_status st = read_state(s, name, out, in, &q, err);
    if (st) return st;
    int64_t n = out * in, nblocks = (n + PS_NF4_BLOCK - 1) / PS_NF4_BLOCK;
    int64_t n2 = (nblocks + PS_NF4_DQ_BLOCK - 1) / PS_NF4_DQ_BLOCK;
    const st_tensor *packed, *absmax, *absmax2 = NULL;
    if ((st = get_array(s, name, "", ST_U8, (n + 1) / 2, &packed, err)) ||
        (st = check_table(s, name, ".quant_map", ps_nf4_code, 16, err)) ||
        (st = get_array(s, name, ".absmax", q.nested ? ST_U8 : ST_F32, nblocks, &absmax, err)))
        return st;
    if (q.nested && ((st = get_array(s, name, ".nested_absmax", ST_F32, n2, &absmax2, err)) ||
                     (st = check_table(s, name, ".nested_quant_map", ps_dq_code, 256, err))))
        return st;
    ps_nf4 v = {out, in, NULL, NULL, NULL, q.nested_offset, NULL, m->be->dev};
    void *d;
    if ((st = llama_upload(m, packed->data, packed->nbytes, &d, err))) return st;
    v.packed = d;
    if ((st = llama_upload(m, absmax->data, absmax->nbytes, &d, err))) return st;
    if (q.nested) {
        v.absmax_q8 = d;
        if ((st = llama_upload(m, absmax2->data, absmax2->nbytes, &d, err))) return st;
        v.absmax2 = d;
    } else {
        v.absmax = d;
    }
    memset(w, 0, sizeof *w);
    w->kind = PS_WEIGHT_NF4;
    w->nf4 = v;
    return PS_OK;
}
