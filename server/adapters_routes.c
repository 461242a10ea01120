/* Adapter routes (see adapters_routes.h). Uploads are read whole (up to
 * --max-upload), split with multipart.c (mp_parse) and handed to engine_adapter_add,
 * which validates everything against the base and persists the files; a
 * failed upload leaves the registry and the adapters folder as they were.
 *
 * Upload errors are classified here into the server's error kinds (the one
 * table in error_map.c turns kinds into statuses): malformed or mismatched
 * files 400, valid PEFT features we do not serve 400 unsupported_value,
 * over a size limit 413, a taken name 409, the adapter memory budget full of
 * adapters in use 503. */
#include "adapters_routes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "multipart.h"
#include "reply.h"
#include "request.h"

/* ---- descriptions ---- */

static const char *peft_type(const char *kind) {
    return !strcmp(kind, "lora") ? "LORA" : !strcmp(kind, "prefix_tuning") ? "PREFIX_TUNING" : "PROMPT_TUNING";
}

static json_t *describe(const server *srv, const engine_adapter_info *a) {
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:s, s:s, s:I, s:b, s:i}", "id", a->name, "object", "adapter",
                          "created", (json_int_t)a->created, "owned_by", "peftserve", "base_model", srv->model_id,
                          "peft_type", peft_type(a->kind), "bytes", (json_int_t)a->bytes, "resident", a->resident,
                          "active_requests", a->active_requests);
    if (!o) return NULL;
    if (!strcmp(a->kind, "lora")) {
        json_t *t = json_array();
        for (const char *p = a->targets; *p;) {
            size_t n = strcspn(p, ",");
            json_array_append_new(t, json_stringn(p, n));
            p += n + (p[n] == ',');
        }
        json_object_set_new(o, "r", json_integer(a->rank));
        json_object_set_new(o, "dtype", json_string(a->dtype));
        json_object_set_new(o, "use_rslora", json_boolean(a->rslora));
        json_object_set_new(o, "target_modules", t);
    } else {
        json_object_set_new(o, "num_virtual_tokens", json_integer(a->num_virtual_tokens));
    }
    json_t *mts = json_array();
    if (a->lm_head) json_array_append_new(mts, json_string("lm_head"));
    if (a->embed_tokens) json_array_append_new(mts, json_string("embed_tokens"));
    json_object_set_new(o, "modules_to_save", mts);
    return o;
}

static json_t *model_object(const server *srv, const engine_adapter_info *a) {
    return json_pack("{s:s, s:s, s:I, s:s, s:s, s:s}", "id", a->name, "object", "model", "created",
                     (json_int_t)a->created, "owned_by", "peftserve", "parent", srv->model_id, "peft_type",
                     peft_type(a->kind));
}

bool adapters_find_for_model(void *user, const char *name, int *extra_tokens) {
    server *srv = user;
    engine_adapter_info a;
    ps_err err;
    if (engine_adapter_get(srv->eng, name, &a, &err) != PS_OK) return false;
    *extra_tokens = a.num_virtual_tokens;
    return true;
}

void adapters_append_models(server *srv, json_t *data) {
    engine_adapter_info *list = NULL;
    int n = engine_adapter_list(srv->eng, &list);
    for (int i = 0; i < n; i++) json_array_append_new(data, model_object(srv, &list[i]));
    free(list);
}

json_t *adapters_model_object(server *srv, const char *name) {
    engine_adapter_info a;
    ps_err err;
    return engine_adapter_get(srv->eng, name, &a, &err) == PS_OK ? model_object(srv, &a) : NULL;
}

/* ---- upload ---- */

#define UPLOAD_MAX_PARTS 8

typedef struct {
    const mp_part *name, *config, *weights, *replace;
} upload_parts;

static bool is_file(const mp_part *p, const char *file) { return p->filename && !strcmp(p->filename, file); }

static bool is_field(const mp_part *p, const char *file, const char *alias1, const char *alias2) {
    return !strcmp(p->name, file) || !strcmp(p->name, alias1) || !strcmp(p->name, alias2) || is_file(p, file);
}

/* Which part is what: field names as DESIGN.md spells them, short aliases,
 * or the PEFT file name as the part's filename (curl -F x=@adapter_config.json). */
static bool sort_parts(const mp_form *f, upload_parts *u, api_error *e) {
    memset(u, 0, sizeof *u);
    for (int i = 0; i < f->n; i++) {
        const mp_part *p = &f->parts[i];
        const mp_part **slot = NULL;
        if (is_file(p, "adapter_model.bin") || !strcmp(p->name, "adapter_model.bin"))
            return api_errorf(e, SRV_ERR_INVALID_REQUEST, "adapter_model.bin",
                              "pickled adapter_model.bin is refused (unpickling runs code); save the adapter with "
                              "safe_serialization=True and upload adapter_model.safetensors");
        if (!strcmp(p->name, "name") && !p->filename) slot = &u->name;
        else if (!strcmp(p->name, "replace") && !p->filename) slot = &u->replace;
        else if (is_field(p, "adapter_config.json", "config", "adapter_config")) slot = &u->config;
        else if (is_field(p, "adapter_model.safetensors", "model", "weights")) slot = &u->weights;
        if (!slot)
            return api_errorf(e, SRV_ERR_INVALID_REQUEST, p->name,
                              "unexpected form field '%.100s' (expected name, adapter_config.json, "
                              "adapter_model.safetensors, replace)", p->name);
        if (*slot) return api_errorf(e, SRV_ERR_INVALID_REQUEST, p->name, "form field '%.100s' given twice", p->name);
        *slot = p;
    }
    if (!u->name) return api_errorf(e, SRV_ERR_INVALID_REQUEST, "name", "missing form field 'name'");
    if (!u->config)
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, "adapter_config.json", "missing file 'adapter_config.json'");
    if (!u->weights)
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, "adapter_model.safetensors",
                          "missing file 'adapter_model.safetensors'");
    return true;
}

static srv_err_kind upload_kind(ps_status s) {
    switch (s) {
    case PS_ENOTSUP: return SRV_ERR_UNSUPPORTED;
    case PS_ETOOLARGE: return SRV_ERR_BODY_TOO_LARGE;
    case PS_EINVAL: case PS_EFORMAT: case PS_ENOTFOUND: return SRV_ERR_INVALID_REQUEST;
    default: return srv_err_kind_of_status(s);
    }
}

/* The loader's messages start with what they are about. */
static const char *upload_param(const char *msg) {
    if (!strncmp(msg, "adapter name", 12)) return "name";
    if (!strncmp(msg, "adapter_config.json", 19)) return "adapter_config.json";
    return "adapter_model.safetensors"; /* "tensor '...'", "adapter_model.safetensors: ...", sizes */
}

static int add_or_reply(http_req *rq, const upload_parts *u) {
    char name[ENGINE_ADAPTER_NAME_MAX + 2];
    if (u->name->len > ENGINE_ADAPTER_NAME_MAX || memchr(u->name->data, 0, u->name->len))
        return reply_errorf(rq->conn, SRV_ERR_INVALID_REQUEST, "name", "adapter name must be 1..%d characters of "
                            "A-Z a-z 0-9 . _ -", ENGINE_ADAPTER_NAME_MAX);
    snprintf(name, sizeof name, "%.*s", (int)u->name->len, u->name->data);
    bool replace = false;
    if (u->replace) {
        if (u->replace->len == 4 && !memcmp(u->replace->data, "true", 4)) replace = true;
        else if (!(u->replace->len == 5 && !memcmp(u->replace->data, "false", 5)))
            return reply_errorf(rq->conn, SRV_ERR_INVALID_REQUEST, "replace", "'replace' must be true or false");
    }
    snprintf(rq->detail, sizeof rq->detail, "adapter=%s bytes=%zu%s", name, u->weights->len, replace ? " replace" : "");
    engine_adapter_info info;
    ps_err err = {0};
    ps_status st = engine_adapter_add(rq->srv->eng, name, u->config->data, u->config->len, u->weights->data,
                                      u->weights->len, replace, &info, &err);
    if (st) return reply_errorf(rq->conn, upload_kind(st), upload_param(err.msg), "%s", err.msg);
    json_t *o = describe(rq->srv, &info);
    char loc[128];
    snprintf(loc, sizeof loc, "Location: /v1/adapters/%s\r\n", name);
    int status = o ? reply_json(rq->conn, 201, o, loc) : reply_errorf(rq->conn, SRV_ERR_INTERNAL, NULL, "out of memory");
    json_decref(o);
    return status;
}

int adapters_upload(http_req *rq) {
    const char *ct = mg_get_header(rq->conn, "Content-Type");
    api_error e = {0};
    if (!mp_is_multipart(ct))
        return reply_errorf(rq->conn, SRV_ERR_MEDIA_TYPE, NULL,
                            "content type '%.100s' is not multipart/form-data (send name, adapter_config.json and "
                            "adapter_model.safetensors as form fields)", ct ? ct : "(none)");
    char *body = NULL;
    size_t len = 0;
    if (!request_read_body(rq->conn, rq->srv->opts.max_upload, &body, &len, &e)) return reply_error(rq->conn, &e);
    mp_form f = {0};
    upload_parts u;
    ps_err err = {0};
    int status;
    if (mp_parse(ct, body, len, UPLOAD_MAX_PARTS, &f, &err) != PS_OK) {
        api_error_from_ps(&e, &err, NULL);
        if (err.code == PS_EFORMAT || err.code == PS_EINVAL) e.kind = SRV_ERR_INVALID_REQUEST;
        status = reply_error(rq->conn, &e);
    } else {
        status = sort_parts(&f, &u, &e) ? add_or_reply(rq, &u) : reply_error(rq->conn, &e);
    }
    mp_free(&f);
    free(body);
    return status;
}

/* ---- list / get / delete ---- */

int adapters_list(http_req *rq) {
    engine_adapter_info *list = NULL;
    int n = engine_adapter_list(rq->srv->eng, &list);
    json_t *data = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(data, describe(rq->srv, &list[i]));
    free(list);
    json_t *o = json_pack("{s:s, s:o}", "object", "list", "data", data);
    int st = o && n >= 0 ? reply_json(rq->conn, 200, o, NULL)
                         : reply_errorf(rq->conn, SRV_ERR_INTERNAL, NULL, "out of memory listing adapters");
    json_decref(o);
    return st;
}

static const char *path_name(http_req *rq) {
    return mg_get_request_info(rq->conn)->local_uri + strlen("/v1/adapters/");
}

int adapters_get(http_req *rq) {
    engine_adapter_info a;
    ps_err err = {0};
    if (engine_adapter_get(rq->srv->eng, path_name(rq), &a, &err) != PS_OK)
        return reply_errorf(rq->conn, SRV_ERR_MODEL_NOT_FOUND, NULL, "%s", err.msg);
    json_t *o = describe(rq->srv, &a);
    int st = o ? reply_json(rq->conn, 200, o, NULL) : reply_errorf(rq->conn, SRV_ERR_INTERNAL, NULL, "out of memory");
    json_decref(o);
    return st;
}

int adapters_delete(http_req *rq) {
    const char *name = path_name(rq);
    ps_err err = {0};
    ps_status s = engine_adapter_remove(rq->srv->eng, name, &err);
    if (s) return reply_errorf(rq->conn, s == PS_ENOTFOUND ? SRV_ERR_MODEL_NOT_FOUND : srv_err_kind_of_status(s), NULL,
                               "%s", err.msg);
    snprintf(rq->detail, sizeof rq->detail, "adapter=%.64s deleted", name);
    json_t *o = json_pack("{s:s, s:s, s:b}", "id", name, "object", "adapter", "deleted", 1);
    int st = reply_json(rq->conn, 200, o, NULL);
    json_decref(o);
    return st;
}
