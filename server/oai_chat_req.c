/* Validation of a /v1/chat/completions body into an oai_gen_request, without a
 * connection (the handler replies; the fuzz target calls it directly). See
 * openai_chat.c for the endpoint's behaviour. */
#include <stdlib.h>
#include <string.h>

#include "oai_params.h"
#include "oai_request.h"

static bool parse_role(const json_t *m, int i, const char **role, api_error *e) {
    const json_t *v = json_object_get(m, "role");
    if (!json_is_string(v))
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, "messages", "'messages[%d].role' must be a string, got %s", i,
                          v ? oai_json_type_name(v) : "nothing");
    const char *s = json_string_value(v);
    if (!strcmp(s, "system") || !strcmp(s, "developer")) *role = "system";
    else if (!strcmp(s, "user")) *role = "user";
    else if (!strcmp(s, "assistant")) *role = "assistant";
    else if (!strcmp(s, "tool") || !strcmp(s, "function"))
        return api_errorf(e, SRV_ERR_UNSUPPORTED, "messages",
                          "'messages[%d].role' is '%s': tool calling is not supported", i, s);
    else
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, "messages",
                          "'messages[%d].role' is '%.64s', must be system, developer, user or assistant", i, s);
    const json_t *tc = json_object_get(m, "tool_calls");
    if (json_array_size(tc) > 0)
        return api_errorf(e, SRV_ERR_UNSUPPORTED, "messages", "'messages[%d].tool_calls': tool calling is not supported", i);
    return true;
}

/* A list of content parts -> one string (owned by r). */
static bool parse_parts(const json_t *parts, int i, oai_gen_request *r, const char **out, api_error *e) {
    size_t n = json_array_size(parts), total = 1;
    for (size_t k = 0; k < n; k++) {
        const json_t *p = json_array_get(parts, k);
        const json_t *type = json_object_get(p, "type");
        if (!json_is_object(p) || !json_is_string(type))
            return api_errorf(e, SRV_ERR_INVALID_REQUEST, "messages",
                              "'messages[%d].content[%zu]' must be an object with a string 'type'", i, k);
        const char *t = json_string_value(type);
        if (!strcmp(t, "image_url") || !strcmp(t, "input_audio") || !strcmp(t, "file"))
            return api_errorf(e, SRV_ERR_UNSUPPORTED, "messages",
                              "'messages[%d].content[%zu]' is a '%s' part: only text content is supported for now", i,
                              k, t);
        if (strcmp(t, "text") != 0)
            return api_errorf(e, SRV_ERR_INVALID_REQUEST, "messages",
                              "'messages[%d].content[%zu].type' is '%.64s', expected 'text'", i, k, t);
        const json_t *text = json_object_get(p, "text");
        if (!json_is_string(text))
            return api_errorf(e, SRV_ERR_INVALID_REQUEST, "messages",
                              "'messages[%d].content[%zu].text' must be a string, got %s", i, k,
                              text ? oai_json_type_name(text) : "nothing");
        total += json_string_length(text) + 1;
    }
    char *s = oai_gen_request_own(r, malloc(total));
    if (!s) return api_errorf(e, SRV_ERR_INTERNAL, NULL, "out of memory joining content parts");
    s[0] = 0;
    size_t at = 0;
    for (size_t k = 0; k < n; k++) {
        const json_t *text = json_object_get(json_array_get(parts, k), "text");
        if (k) s[at++] = '\n';
        memcpy(s + at, json_string_value(text), json_string_length(text));
        at += json_string_length(text);
    }
    s[at] = 0;
    *out = s;
    return true;
}

static bool parse_message(const json_t *m, int i, oai_gen_request *r, api_error *e) {
    if (!json_is_object(m))
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, "messages", "'messages[%d]' must be an object, got %s", i,
                          oai_json_type_name(m));
    engine_chat_msg *out = &r->msgs[i];
    if (!parse_role(m, i, &out->role, e)) return false;
    const json_t *c = json_object_get(m, "content");
    if (json_is_string(c)) {
        out->content = json_string_value(c);
        return true;
    }
    if (json_is_array(c)) return parse_parts(c, i, r, &out->content, e);
    if ((!c || json_is_null(c)) && !strcmp(out->role, "assistant")) {
        out->content = "";
        return true;
    }
    return api_errorf(e, SRV_ERR_INVALID_REQUEST, "messages",
                      "'messages[%d].content' must be a string or a list of text parts, got %s", i,
                      c ? oai_json_type_name(c) : "nothing");
}

static bool parse_messages(const json_t *body, oai_gen_request *r, api_error *e) {
    const json_t *ms = json_object_get(body, "messages");
    if (!ms || json_is_null(ms))
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, "messages", "missing required parameter 'messages'");
    if (!json_is_array(ms))
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, "messages", "'messages' must be an array, got %s",
                          oai_json_type_name(ms));
    size_t n = json_array_size(ms);
    if (n == 0) return api_errorf(e, SRV_ERR_INVALID_REQUEST, "messages", "'messages' must hold at least one message");
    r->msgs = calloc(n, sizeof *r->msgs);
    if (!r->msgs) return api_errorf(e, SRV_ERR_INTERNAL, NULL, "out of memory reading %zu messages", n);
    r->n_msgs = (int)n;
    for (size_t i = 0; i < n; i++)
        if (!parse_message(json_array_get(ms, i), (int)i, r, e)) return false;
    return true;
}

static bool parse_output(const json_t *body, oai_gen_request *r, api_error *e) {
    bool logprobs = false, has_top = false;
    long long top = 0;
    if (!oai_get_bool(body, "logprobs", &logprobs, e)) return false;
    if (!oai_get_int(body, "top_logprobs", 0, ENGINE_MAX_TOP_LOGPROBS, &top, &has_top, e)) return false;
    if (has_top && !logprobs)
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, "top_logprobs", "'top_logprobs' requires 'logprobs': true");
    r->logprobs = logprobs ? (int)top : -1;
    const json_t *tools = json_object_get(body, "tools"), *fns = json_object_get(body, "functions");
    if (json_array_size(tools) > 0 || json_array_size(fns) > 0)
        return api_errorf(e, SRV_ERR_UNSUPPORTED, tools ? "tools" : "functions", "tool calling is not supported");
    const json_t *rf = json_object_get(body, "response_format");
    if (rf && !json_is_null(rf)) {
        const json_t *t = json_object_get(rf, "type");
        if (!json_is_object(rf) || !json_is_string(t))
            return api_errorf(e, SRV_ERR_INVALID_REQUEST, "response_format",
                              "'response_format' must be an object with a string 'type'");
        if (strcmp(json_string_value(t), "text") != 0)
            return api_errorf(e, SRV_ERR_UNSUPPORTED, "response_format",
                              "'response_format' type '%.64s' is not supported (only 'text')", json_string_value(t));
    }
    return true;
}

bool oai_chat_parse(const json_t *body, const oai_ctx *ctx, oai_gen_request *r, api_error *e) {
    memset(r, 0, sizeof *r);
    r->chat = true;
    return oai_parse_common(body, ctx, r, e) && parse_messages(body, r, e) && parse_output(body, r, e);
}
