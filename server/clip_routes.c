/* POST /v1/classify and POST /v1/embeddings on the CLIP service; see
 * clip_routes.h for the request and reply shapes.
 *
 * Handlers only parse, validate and shape JSON: decoding, preprocessing and
 * tokenizing happen inside clip_service_* calls, which hand the model work to
 * the service's own worker thread (no tensor here). Error statuses come from
 * error_map.c; the one choice made here is which parameter an engine error
 * names, and that an image over the pixel limits is 413 (the upload is too
 * large for us) rather than the context-length 400 ETOOLARGE means for text. */
#include "clip_routes.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "multipart.h"
#include "reply.h"
#include "request.h"

#define CLIP_MAX_PARTS 16

/* ---- helpers ---- */

static bool have_clip(http_req *rq, api_error *e) {
    if (rq->srv->clip) return true;
    return api_errorf(e, SRV_ERR_MODEL_NOT_FOUND, "model",
                      "no CLIP model is loaded (start peftserve with --clip DIR)");
}

/* `model`, when given, must name the CLIP model. */
static bool check_model(http_req *rq, json_t *model, bool required, api_error *e) {
    clip_service_info in;
    clip_service_get_info(rq->srv->clip, &in);
    if (!model || json_is_null(model)) {
        if (!required) return true;
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, "model", "model is required (the CLIP model is '%s')",
                          in.model_id);
    }
    if (!json_is_string(model))
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, "model", "model must be a string");
    if (strcmp(json_string_value(model), in.model_id) != 0)
        return api_errorf(e, SRV_ERR_MODEL_NOT_FOUND, "model",
                          "the model '%.200s' does not exist here (the CLIP model is '%s')",
                          json_string_value(model), in.model_id);
    return true;
}

/* An engine error, naming `param`; images over the pixel limits are 413. */
static bool from_service(api_error *e, const ps_err *err, const char *param, bool image) {
    if (image && err->code == PS_ETOOLARGE)
        return api_errorf(e, SRV_ERR_BODY_TOO_LARGE, param, "%s", err->msg);
    return api_error_from_ps(e, err, param);
}

/* Base64 or a base64 data: URI -> bytes (malloc'd). */
static bool decode_image(const char *s, size_t len, const char *param, unsigned char **out,
                         size_t *n, api_error *e) {
    const char *payload;
    size_t plen;
    char mt[64];
    ps_err err = {0};
    if (b64_data_uri(s, len, &payload, &plen, mt, sizeof mt, &err))
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, param, "%s", err.msg);
    if (!payload) payload = s, plen = len;
    if (b64_decode(payload, plen, out, n, &err))
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, param, "%s: %s", param, err.msg);
    return true;
}

/* A JSON array of strings -> borrowed pointers (valid while a lives). */
static bool string_array(json_t *a, const char *param, bool required, const char ***out, int *n,
                         api_error *e) {
    *out = NULL;
    *n = 0;
    if (!a || json_is_null(a)) {
        if (!required) return true;
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, param, "%s is required (an array of strings)", param);
    }
    if (!json_is_array(a)) return api_errorf(e, SRV_ERR_INVALID_REQUEST, param, "%s must be an array of strings", param);
    size_t k = json_array_size(a);
    if (k > (1u << 20)) return api_errorf(e, SRV_ERR_INVALID_REQUEST, param, "%s has %zu entries", param, k);
    *out = malloc(sizeof(char *) * (k ? k : 1));
    if (!*out) return api_errorf(e, SRV_ERR_INTERNAL, param, "out of memory for %zu %s", k, param);
    for (size_t i = 0; i < k; i++) {
        json_t *v = json_array_get(a, i);
        if (!json_is_string(v)) {
            free(*out);
            *out = NULL;
            return api_errorf(e, SRV_ERR_INVALID_REQUEST, param, "%s[%zu] must be a string", param, i);
        }
        (*out)[i] = json_string_value(v);
    }
    *n = (int)k;
    return true;
}

/* ---- /v1/classify ---- */

typedef struct {
    char *body;
    size_t body_len;
    mp_form form;
    json_t *root, *labels_json, *templates_json; /* owned */
    unsigned char *image_buf;                      /* decoded base64, owned */
    const unsigned char *image;                    /* into body or image_buf */
    size_t image_len;
    const char **labels, **templates;
    int n_labels, n_templates;
} classify_req;

static void classify_req_free(classify_req *c) {
    free(c->body);
    mp_free(&c->form);
    json_decref(c->root);
    json_decref(c->labels_json);
    json_decref(c->templates_json);
    free(c->image_buf);
    free(c->labels);
    free(c->templates);
}

/* A multipart text field holding a JSON array (labels, templates). */
static bool multipart_json_field(const mp_form *f, const char *name, json_t **out, api_error *e) {
    const mp_part *p = mp_find(f, name);
    *out = NULL;
    if (!p) return true;
    json_error_t je;
    *out = json_loadb((const char *)p->data, p->len, JSON_DECODE_ANY, &je);
    if (!*out || !json_is_array(*out))
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, name,
                          "multipart field '%s' must be a JSON array of strings, e.g. [\"dog\", \"cat\"]%s%s",
                          name, *out ? "" : ": ", *out ? "" : je.text);
    return true;
}

static bool parse_multipart(http_req *rq, const char *ct, classify_req *c, api_error *e) {
    ps_err err = {0};
    if (mp_parse(ct, c->body, c->body_len, CLIP_MAX_PARTS, &c->form, &err))
        return api_error_from_ps(e, &err, NULL);
    const mp_part *img = mp_find(&c->form, "image");
    if (!img) img = mp_find(&c->form, "file");
    if (!img) return api_errorf(e, SRV_ERR_INVALID_REQUEST, "image", "multipart body has no 'image' file part");
    c->image = img->data;
    c->image_len = img->len;
    const mp_part *model = mp_find(&c->form, "model");
    if (model) {
        json_t *m = json_stringn((const char *)model->data, model->len);
        bool ok = m && check_model(rq, m, false, e);
        json_decref(m);
        if (!ok) return m ? false : api_errorf(e, SRV_ERR_INVALID_REQUEST, "model", "model is not UTF-8 text");
    }
    return multipart_json_field(&c->form, "labels", &c->labels_json, e) &&
           multipart_json_field(&c->form, "templates", &c->templates_json, e) &&
           string_array(c->labels_json, "labels", true, &c->labels, &c->n_labels, e) &&
           string_array(c->templates_json, "templates", false, &c->templates, &c->n_templates, e);
}

static bool parse_json(http_req *rq, classify_req *c, api_error *e) {
    if (!request_parse_json(c->body, c->body_len, &c->root, e)) return false;
    json_t *img = json_object_get(c->root, "image");
    if (!json_is_string(img))
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, "image",
                          "image is required: base64 or a data: URI (or send multipart/form-data with a file)");
    if (!decode_image(json_string_value(img), json_string_length(img), "image", &c->image_buf,
                      &c->image_len, e))
        return false;
    c->image = c->image_buf;
    return check_model(rq, json_object_get(c->root, "model"), false, e) &&
           string_array(json_object_get(c->root, "labels"), "labels", true, &c->labels, &c->n_labels, e) &&
           string_array(json_object_get(c->root, "templates"), "templates", false, &c->templates,
                        &c->n_templates, e);
}

static int classify_reply(http_req *rq, const classify_req *c, const clip_score *sc) {
    clip_service_info in;
    clip_service_get_info(rq->srv->clip, &in);
    json_t *list = json_array();
    for (int i = 0; i < c->n_labels; i++)
        json_array_append_new(list, json_pack("{s:s, s:f, s:f}", "label", c->labels[sc[i].label],
                                              "probability", (double)sc[i].probability, "logit",
                                              (double)sc[i].logit));
    json_t *o = json_pack("{s:s, s:o}", "model", in.model_id, "labels", list);
    int st = o ? reply_json(rq->conn, 200, o, NULL)
               : reply_errorf(rq->conn, SRV_ERR_INTERNAL, NULL, "out of memory building the reply");
    json_decref(o);
    return st;
}

int clip_routes_classify(http_req *rq) {
    classify_req c = {0};
    api_error e = {0};
    clip_score *sc = NULL;
    const char *ct = mg_get_header(rq->conn, "Content-Type");
    bool multipart = mp_is_multipart(ct);
    /* the body is read first, whatever follows, so keep-alive stays in sync */
    bool ok = request_read_body(rq->conn, rq->srv->opts.clip_max_body, &c.body, &c.body_len, &e) &&
              have_clip(rq, &e) && (multipart || request_check_content_type(ct, &e)) &&
              (multipart ? parse_multipart(rq, ct, &c, &e) : parse_json(rq, &c, &e));
    ps_err err = {0};
    const char *param = NULL;
    if (ok && clip_service_check_labels(rq->srv->clip, c.labels, c.n_labels, c.templates, c.n_templates,
                                        &param, &err))
        ok = from_service(&e, &err, param, false);
    snprintf(rq->detail, sizeof rq->detail, "clip labels=%d templates=%d image_bytes=%zu %s", c.n_labels,
             c.n_templates, c.image_len, multipart ? "multipart" : "json");
    if (ok && !(sc = malloc(sizeof(clip_score) * (size_t)c.n_labels)))
        ok = api_errorf(&e, SRV_ERR_INTERNAL, NULL, "out of memory for %d scores", c.n_labels);
    if (ok && clip_service_classify(rq->srv->clip, c.image, c.image_len, c.labels, c.n_labels, c.templates,
                                    c.n_templates, sc, &err))
        ok = from_service(&e, &err, "image", true);
    int st = ok ? classify_reply(rq, &c, sc) : reply_error(rq->conn, &e);
    free(sc);
    classify_req_free(&c);
    return st;
}

/* ---- /v1/embeddings ---- */

typedef struct {
    int n, n_texts, n_images;
    const char **texts;
    size_t *text_lens;
    unsigned char **images; /* decoded, owned */
    size_t *image_lens;
    int *slot;              /* input i -> row in texts (>= 0) or images (-1 - row) */
} embed_inputs;

static void embed_inputs_free(embed_inputs *in) {
    for (int i = 0; i < in->n_images; i++) free(in->images[i]);
    free(in->texts), free(in->text_lens), free(in->images), free(in->image_lens), free(in->slot);
}

static bool embed_item(json_t *v, size_t i, embed_inputs *in, api_error *e) {
    if (json_is_string(v)) {
        in->texts[in->n_texts] = json_string_value(v);
        in->text_lens[in->n_texts] = json_string_length(v);
        in->slot[i] = in->n_texts++;
        return true;
    }
    json_t *img = json_object_get(v, "image");
    if (json_is_object(v) && json_is_string(img)) {
        char param[48];
        snprintf(param, sizeof param, "input[%zu].image", i);
        if (!decode_image(json_string_value(img), json_string_length(img), param, &in->images[in->n_images],
                          &in->image_lens[in->n_images], e))
            return false;
        in->slot[i] = -1 - in->n_images++;
        return true;
    }
    if (json_is_integer(v) || json_is_array(v))
        return api_errorf(e, SRV_ERR_UNSUPPORTED, "input",
                          "input: token ids are not supported (the CLIP text tower tokenizes text itself)");
    return api_errorf(e, SRV_ERR_INVALID_REQUEST, "input",
                      "input[%zu] must be a string or {\"image\": base64 or data: URI}", i);
}

static bool parse_inputs(json_t *input, embed_inputs *in, api_error *e) {
    if (!input) return api_errorf(e, SRV_ERR_INVALID_REQUEST, "input", "input is required");
    json_t *one = json_is_array(input) ? NULL : input;
    size_t n = one ? 1 : json_array_size(input);
    if (n == 0) return api_errorf(e, SRV_ERR_INVALID_REQUEST, "input", "input must not be empty");
    if (n > (1u << 20)) return api_errorf(e, SRV_ERR_INVALID_REQUEST, "input", "input has %zu entries", n);
    in->texts = malloc(sizeof(char *) * n);
    in->text_lens = malloc(sizeof(size_t) * n);
    in->images = calloc(n, sizeof(unsigned char *));
    in->image_lens = malloc(sizeof(size_t) * n);
    in->slot = malloc(sizeof(int) * n);
    if (!in->texts || !in->text_lens || !in->images || !in->image_lens || !in->slot)
        return api_errorf(e, SRV_ERR_INTERNAL, NULL, "out of memory for %zu inputs", n);
    in->n = (int)n;
    if (json_is_array(input) && json_is_integer(json_array_get(input, 0)))
        return embed_item(json_array_get(input, 0), 0, in, e); /* one token-id array */
    for (size_t i = 0; i < n; i++)
        if (!embed_item(one ? one : json_array_get(input, i), i, in, e)) return false;
    return true;
}

/* One embedding as a JSON array or as base64 of little-endian float32. */
static json_t *embedding_json(const float *v, int E, bool b64) {
    if (!b64) {
        json_t *a = json_array();
        for (int k = 0; k < E; k++) json_array_append_new(a, json_real((double)v[k]));
        return a;
    }
    unsigned char *bytes = malloc((size_t)E * 4);
    if (!bytes) return NULL;
    for (int k = 0; k < E; k++) {
        uint32_t u;
        memcpy(&u, &v[k], 4);
        for (int b = 0; b < 4; b++) bytes[4 * k + b] = (unsigned char)(u >> (8 * b));
    }
    char *s = b64_encode(bytes, (size_t)E * 4);
    free(bytes);
    json_t *j = s ? json_string(s) : NULL;
    free(s);
    return j;
}

static int embeddings_reply(http_req *rq, const embed_inputs *in, const float *tv, const float *iv,
                            int64_t tokens, bool b64) {
    clip_service_info info;
    clip_service_get_info(rq->srv->clip, &info);
    int E = info.embed_dim;
    json_t *data = json_array();
    for (int i = 0; i < in->n; i++) {
        const float *v = in->slot[i] >= 0 ? tv + (size_t)in->slot[i] * E : iv + (size_t)(-1 - in->slot[i]) * E;
        json_array_append_new(data, json_pack("{s:s, s:i, s:o*}", "object", "embedding", "index", i,
                                              "embedding", embedding_json(v, E, b64)));
    }
    json_t *o = json_pack("{s:s, s:o, s:s, s:{s:I, s:I}}", "object", "list", "data", data, "model",
                          info.model_id, "usage", "prompt_tokens", (json_int_t)tokens, "total_tokens",
                          (json_int_t)tokens);
    int st = o ? reply_json(rq->conn, 200, o, NULL)
               : reply_errorf(rq->conn, SRV_ERR_INTERNAL, NULL, "out of memory building the reply");
    json_decref(o);
    return st;
}

/* encoding_format, dimensions and normalize. */
static bool embed_options(json_t *root, int E, bool *b64, bool *normalize, api_error *e) {
    json_t *fmt = json_object_get(root, "encoding_format"), *dims = json_object_get(root, "dimensions");
    json_t *norm = json_object_get(root, "normalize");
    const char *f = json_string_value(fmt);
    if (fmt && !json_is_null(fmt) && (!f || (strcmp(f, "float") != 0 && strcmp(f, "base64") != 0)))
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, "encoding_format", "encoding_format must be 'float' or 'base64'");
    *b64 = f && strcmp(f, "base64") == 0;
    if (dims && !json_is_null(dims) && (!json_is_integer(dims) || json_integer_value(dims) != E))
        return api_errorf(e, SRV_ERR_UNSUPPORTED, "dimensions",
                          "dimensions must be %d, the CLIP embedding size (shortening is not supported)", E);
    if (norm && !json_is_boolean(norm))
        return api_errorf(e, SRV_ERR_INVALID_REQUEST, "normalize", "normalize must be true or false");
    *normalize = !norm || json_is_true(norm);
    return true;
}

int clip_routes_embeddings(http_req *rq) {
    api_error e = {0};
    json_t *root = NULL;
    int st = request_json_or_reply(rq->conn, rq->srv->opts.clip_max_body, &root);
    if (st) return st;
    if (!have_clip(rq, &e)) {
        json_decref(root);
        return reply_error(rq->conn, &e);
    }
    clip_service *svc = rq->srv->clip;
    int E = clip_service_dim(svc);
    embed_inputs in = {0};
    bool b64 = false, normalize = true;
    float *tv = NULL, *iv = NULL;
    int64_t tokens = 0;
    ps_err err = {0};
    bool ok = check_model(rq, json_object_get(root, "model"), true, &e) &&
              embed_options(root, E, &b64, &normalize, &e) && parse_inputs(json_object_get(root, "input"), &in, &e);
    snprintf(rq->detail, sizeof rq->detail, "clip texts=%d images=%d", in.n_texts, in.n_images);
    if (ok && (!(tv = malloc(sizeof(float) * (size_t)(in.n_texts + 1) * E)) ||
               !(iv = malloc(sizeof(float) * (size_t)(in.n_images + 1) * E))))
        ok = api_errorf(&e, SRV_ERR_INTERNAL, NULL, "out of memory for %d embeddings", in.n);
    if (ok && in.n_texts &&
        clip_service_embed_texts(svc, in.texts, in.text_lens, in.n_texts, normalize, tv, &tokens, &err))
        ok = from_service(&e, &err, "input", false);
    if (ok && in.n_images &&
        clip_service_embed_images(svc, (const void *const *)in.images, in.image_lens, in.n_images, normalize,
                                  iv, &err))
        ok = from_service(&e, &err, "input", true);
    st = ok ? embeddings_reply(rq, &in, tv, iv, tokens, b64) : reply_error(rq->conn, &e);
    free(tv);
    free(iv);
    embed_inputs_free(&in);
    json_decref(root);
    return st;
}

/* ---- /health, /v1/models ---- */

const char *clip_routes_model_id(const server *srv) {
    if (!srv->clip) return NULL;
    clip_service_info in;
    clip_service_get_info(srv->clip, &in);
    return in.model_id;
}

json_t *clip_routes_model_object(const server *srv) {
    const char *id = clip_routes_model_id(srv);
    if (!id) return NULL;
    return json_pack("{s:s, s:s, s:I, s:s}", "id", id, "object", "model", "created", (json_int_t)srv->started,
                     "owned_by", "peftserve");
}


json_t *clip_routes_health(const server *srv) {
    if (!srv->clip) return json_null();
    clip_service_info in;
    clip_service_get_info(srv->clip, &in);
    return json_pack("{s:s, s:s, s:i, s:i, s:i, s:I, s:i, s:i, s:I, s:I, s:I, s:I}", "model", in.model_id,
                     "device", in.device, "image_size", in.image_size, "embed_dim", in.embed_dim,
                     "context_length", in.context_length, "weight_bytes", (json_int_t)in.weight_bytes,
                     "cache_entries", in.cache_entries, "cache_capacity", in.cache_capacity, "cache_hits",
                     (json_int_t)in.cache_hits, "cache_misses", (json_int_t)in.cache_misses, "images_total",
                     (json_int_t)in.images_total, "texts_total", (json_int_t)in.texts_total);
}
