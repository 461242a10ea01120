/* Parameter getters for OpenAI-shaped JSON bodies. Messages follow the rule,
 * value, range pattern, e.g. "'temperature' is 5, must be in [0, 2]". */
#include "oai_params.h"

#include <math.h>
#include <string.h>

#define OAI_MAX_STOP_BYTES 256

const char *oai_json_type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

static const json_t *get(const json_t *obj, const char *key, bool *present) {
    const json_t *v = json_object_get(obj, key);
    if (v && json_is_null(v)) v = NULL;
    if (present) *present = v != NULL;
    return v;
}

bool oai_get_number(const json_t *obj, const char *key, double lo, double hi, bool lo_open, double *out,
                    bool *present, api_error *e) {
    const json_t *v = get(obj, key, present);
    if (!v) return true;
    if (!json_is_number(v))
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, key, "'%s' must be a number, got %s", key, oai_json_type_name(v));
    double x = json_number_value(v);
    if (!isfinite(x) || (lo_open ? x <= lo : x < lo) || x > hi)
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, key, "'%s' is %g, must be in %c%g, %g]", key, x,
                          lo_open ? '(' : '[', lo, hi);
    *out = x;
    return true;
}

bool oai_get_int(const json_t *obj, const char *key, long long lo, long long hi, long long *out, bool *present,
                 api_error *e) {
    const json_t *v = get(obj, key, present);
    if (!v) return true;
    long long x;
    if (json_is_integer(v)) {
        x = json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
               fabs(json_real_value(v)) < 9e15) {
        x = (long long)json_real_value(v);
    } else {
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, key, "'%s' must be an integer, got %s", key,
                          json_is_real(v) ? "a fraction" : oai_json_type_name(v));
    }
    if (x < lo || x > hi)
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, key, "'%s' is %lld, must be in [%lld, %lld]", key, x, lo, hi);
    *out = x;
    return true;
}

bool oai_get_bool(const json_t *obj, const char *key, bool *out, api_error *e) {
    const json_t *v = get(obj, key, NULL);
    if (!v) return true;
    if (!json_is_boolean(v))
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, key, "'%s' must be a boolean, got %s", key, oai_json_type_name(v));
    *out = json_is_true(v);
    return true;
}

bool oai_get_string(const json_t *obj, const char *key, const char **out, bool *present, api_error *e) {
    const json_t *v = get(obj, key, present);
    if (!v) return true;
    if (!json_is_string(v))
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, key, "'%s' must be a string, got %s", key, oai_json_type_name(v));
    *out = json_string_value(v);
    return true;
}

static bool stop_item(const json_t *v, int i, const char **out, api_error *e) {
    if (!json_is_string(v))
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, "stop", "'stop[%d]' must be a string, got %s", i,
                          oai_json_type_name(v));
    size_t n = json_string_length(v);
    if (n == 0) return api_errorf(e, SRV_ERR_INVALID_REQUEST, "stop", "'stop[%d]' is empty, stop strings must not be", i);
    if (n > OAI_MAX_STOP_BYTES)
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, "stop", "'stop[%d]' is %zu bytes, the limit is %d", i, n,
                          OAI_MAX_STOP_BYTES);
    *out = json_string_value(v);
    return true;
}

bool oai_get_stop(const json_t *obj, const char **stop, int max, int *n, api_error *e) {
    const json_t *v = get(obj, "stop", NULL);
    *n = 0;
    if (!v) return true;
    if (json_is_string(v)) {
        if (!stop_item(v, 0, &stop[0], e)) return false;
        *n = 1;
        return true;
    }
    if (!json_is_array(v))
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, "stop", "'stop' must be a string or an array of strings, got %s",
                          oai_json_type_name(v));
    size_t k = json_array_size(v);
    if (k > (size_t)max)
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, "stop", "'stop' has %zu entries, at most %d are allowed", k, max);
    for (size_t i = 0; i < k; i++)
        if (!stop_item(json_array_get(v, i), (int)i, &stop[i], e)) return false;
    *n = (int)k;
    return true;
}

bool oai_require_default_number(const json_t *obj, const char *key, double def, const char *why, api_error *e) {
    double x = def;
    if (!oai_get_number(obj, key, -1e300, 1e300, false, &x, NULL, e)) return false;
    if (x != def)
        return api_errorf(e, SRV_ERR_UNSUPPORTED, key, "'%s' is %g, only %g is supported (%s)", key, x, def, why);
    return true;
}
