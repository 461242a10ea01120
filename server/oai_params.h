/* Typed getters for OpenAI request parameters, each naming the parameter in
 * its error (api_error.param) and stating the rule with the value received.
 *
 * Convention for all getters: an absent key or JSON null leaves *out as it
 * was and returns true (the caller pre-sets the default); *present, when not
 * NULL, says whether a value was given. On a wrong type or value they fill e
 * and return false. No connection needed: the fuzz target calls them. */
#ifndef PS_SERVER_OAI_PARAMS_H
#define PS_SERVER_OAI_PARAMS_H

#include <jansson.h>
#include <stdbool.h>

#include "api_error.h"

/* "string", "integer", "number", "boolean", "array", "object", "null" */
const char *oai_json_type_name(const json_t *v);

/* Number in [lo, hi]; lo_open makes the lower end exclusive, as for top_p. */
bool oai_get_number(const json_t *obj, const char *key, double lo, double hi, bool lo_open, double *out,
                    bool *present, api_error *e);

/* Integer in [lo, hi] (a JSON real with an integral value is accepted, as
 * Python clients sometimes send 16.0). */
bool oai_get_int(const json_t *obj, const char *key, long long lo, long long hi, long long *out, bool *present,
                 api_error *e);

bool oai_get_bool(const json_t *obj, const char *key, bool *out, api_error *e);

/* The string stays owned by obj. */
bool oai_get_string(const json_t *obj, const char *key, const char **out, bool *present, api_error *e);

/* `stop`: a string or an array of up to max non-empty strings. */
bool oai_get_stop(const json_t *obj, const char **stop, int max, int *n, api_error *e);

/* Accepts only a value equal to the default (absent, null, `def`): a
 * parameter we parse but do not implement, e.g. presence_penalty != 0. */
bool oai_require_default_number(const json_t *obj, const char *key, double def, const char *why, api_error *e);

#endif
