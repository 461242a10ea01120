/* The CLIP service: model + tokenizer + preprocessing config, one worker
 * thread that owns the backend, the text-embedding cache, and the request
 * functions of clip_service.h.
 *
 * A caller prepares its inputs (decode + _transform, tokenize) in its own
 * thread, queues one job with all its model work and waits on the job's
 * condition; the worker runs jobs in arrival order, chunking large ones so
 * scratch memory stays bounded. */
#include "clip_service.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "clip_cache.h"
#include "clip_tokenizer.h"
#include "clip_zeroshot.h"
#include "image/clip_preprocess.h"
#include "models/clip.h"

#define CLIP_CHUNK_IMAGES 32
#define CLIP_CHUNK_TEXTS 256

typedef struct clip_job {
    const float *pixels; /* (n_images, 3, S, S) */
    int n_images;
    float *image_out;    /* (n_images, E) */
    const int32_t *ids;  /* (n_texts, ctx) */
    int n_texts;
    float *text_out;     /* (n_texts, E) */
    ps_status st;
    ps_err err;
    bool done;
    struct clip_job *next;
} clip_job;

struct clip_service {
    clip_service_opts opts;
    char *model_id;
    const char *device;
    ps_backend *be;
    clip_model *model;
    clip_tokenizer *tok;
    clip_image_cfg img;
    clip_cache *cache;
    int E, ctx;
    pthread_t worker;
    bool worker_started, stop;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    clip_job *head, *tail;
    uint64_t images_total, texts_total;
};

clip_service_opts clip_service_opts_default(void) {
    clip_service_opts o = {0};
    o.max_labels = 2048;
    o.max_templates = 64;
    o.max_inputs = 2048;
    o.cache_capacity = 16384;
    o.max_image_pixels = 40 * 1000 * 1000;
    o.max_image_side = 30000;
    return o;
}

/* ---- worker ---- */

static ps_status run_job(clip_service *s, clip_job *j) {
    int S = s->img.crop_w;
    for (int i = 0; i < j->n_images; i += CLIP_CHUNK_IMAGES) {
        int n = j->n_images - i < CLIP_CHUNK_IMAGES ? j->n_images - i : CLIP_CHUNK_IMAGES;
        ps_status st = clip_encode_images(s->model, j->pixels + (size_t)i * 3 * S * S, n,
                                          j->image_out + (size_t)i * s->E, &j->err);
        if (st) return st;
    }
    for (int i = 0; i < j->n_texts; i += CLIP_CHUNK_TEXTS) {
        int n = j->n_texts - i < CLIP_CHUNK_TEXTS ? j->n_texts - i : CLIP_CHUNK_TEXTS;
        ps_status st = clip_encode_texts(s->model, j->ids + (size_t)i * s->ctx, n,
                                         j->text_out + (size_t)i * s->E, &j->err);
        if (st) return st;
    }
    return PS_OK;
}

static void *worker_main(void *arg) {
    clip_service *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->stop && !s->head) pthread_cond_wait(&s->wake, &s->mu);
        if (s->stop) break;
        clip_job *j = s->head;
        s->head = j->next;
        if (!s->head) s->tail = NULL;
        pthread_mutex_unlock(&s->mu);
        ps_status st = run_job(s, j);
        pthread_mutex_lock(&s->mu);
        j->st = st;
        j->done = true;
        s->images_total += (uint64_t)j->n_images;
        s->texts_total += (uint64_t)j->n_texts;
        pthread_cond_broadcast(&s->done);
    }
    for (clip_job *j = s->head; j; j = j->next) { /* answer what is still queued */
        j->st = ps_errf(&j->err, PS_ESHUTDOWN, "clip service is shutting down");
        j->done = true;
    }
    s->head = s->tail = NULL;
    pthread_cond_broadcast(&s->done);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* Queues j and waits for the worker to finish it. */
static ps_status submit(clip_service *s, clip_job *j, ps_err *err) {
    pthread_mutex_lock(&s->mu);
    if (s->stop) {
        pthread_mutex_unlock(&s->mu);
        return ps_errf(err, PS_ESHUTDOWN, "clip service is shutting down");
    }
    j->next = NULL;
    j->done = false;
    if (s->tail) s->tail->next = j;
    else s->head = j;
    s->tail = j;
    pthread_cond_signal(&s->wake);
    while (!j->done) pthread_cond_wait(&s->done, &s->mu);
    pthread_mutex_unlock(&s->mu);
    if (j->st && err) *err = j->err;
    return j->st;
}

/* ---- init / free ---- */

static ps_status open_backend(clip_service *s, ps_err *err) {
    const char *dev = s->opts.device;
    if (!dev || strcmp(dev, "cuda") == 0) {
        ps_err e2 = {0};
        ps_status st = ps_backend_cuda_create(0, &s->be, &e2);
        if (st == PS_OK) {
            s->device = "cuda";
            return PS_OK;
        }
        if (dev) return ps_errf(err, st, "clip: %s", e2.msg);
        PS_LOG_INFO("clip", "no usable CUDA device (%s): running on the CPU", e2.msg);
    } else if (strcmp(dev, "cpu") != 0) {
        return ps_errf(err, PS_EINVAL, "clip: device '%s' (expected cpu or cuda)", dev);
    }
    s->device = "cpu";
    return ps_backend_cpu_create(s->opts.threads, &s->be, err);
}

/* One tiny forward of each tower: a backend missing an op fails here, at
 * start, rather than on the first request. */
static ps_status warm_up(clip_service *s, ps_err *err) {
    int S = s->img.crop_w;
    float *px = calloc((size_t)3 * S * S, sizeof(float)), *out = malloc(sizeof(float) * (size_t)s->E);
    int32_t *ids = calloc((size_t)s->ctx, sizeof(int32_t));
    ps_status st = PS_OK;
    if (!px || !out || !ids) st = ps_errf(err, PS_ENOMEM, "clip: no memory for the warm-up");
    if (st == PS_OK) {
        ids[0] = clip_tok_sot(s->tok);
        ids[1] = clip_tok_eot(s->tok);
        st = clip_encode_images(s->model, px, 1, out, err);
        if (st == PS_OK) st = clip_encode_texts(s->model, ids, 1, out, err);
    }
    free(px);
    free(out);
    free(ids);
    return st;
}

static ps_status load_on_backend(clip_service *s, ps_err *err) {
    const clip_service_opts *o = &s->opts;
    ps_status st;
    if ((st = clip_load(o->dir, s->be, &s->model, err))) return st;
    const clip_config *c = clip_get_config(s->model);
    s->E = c->projection_dim;
    s->ctx = c->ctx;
    if ((st = clip_tok_load(o->dir, &s->tok, err))) return st;
    if (clip_tok_vocab_size(s->tok) > c->vocab)
        return ps_errf(err, PS_EFORMAT, "clip '%s': tokenizer has %d ids, the model %d", o->dir,
                       clip_tok_vocab_size(s->tok), c->vocab);
    if ((st = clip_image_cfg_load(o->dir, c->image_size, &s->img, err))) return st;
    if (s->img.crop_w != c->image_size || s->img.crop_h != c->image_size)
        return ps_errf(err, PS_EFORMAT, "clip '%s': preprocessor crop %dx%d, model input %d", o->dir,
                       s->img.crop_w, s->img.crop_h, c->image_size);
    if ((st = clip_cache_init(&s->cache, o->cache_capacity, s->E, err))) return st;
    return warm_up(s, err);
}

/* Opens the backend and loads; with device auto, a CUDA backend that cannot
 * run CLIP (an op missing) falls back to the CPU instead of failing. */
static ps_status load(clip_service *s, ps_err *err) {
    ps_status st = open_backend(s, err);
    if (st == PS_OK) st = load_on_backend(s, err);
    if (st == PS_OK || s->opts.device || !s->be || strcmp(s->device, "cuda") != 0) return st;
    PS_LOG_WARN("clip", "CUDA backend cannot run CLIP (%s): using the CPU", err ? err->msg : "");
    clip_cache_free(s->cache), clip_tok_free(s->tok), clip_free(s->model), ps_backend_destroy(s->be);
    s->cache = NULL, s->tok = NULL, s->model = NULL, s->be = NULL;
    s->device = "cpu";
    if ((st = ps_backend_cpu_create(s->opts.threads, &s->be, err))) return st;
    return load_on_backend(s, err);
}

/* Last path component of dir ("a/b/clip-vit/" -> "clip-vit"), malloc'd. */
static char *folder_name(const char *dir) {
    size_t end = strlen(dir);
    while (end > 1 && dir[end - 1] == '/') end--;
    size_t begin = end;
    while (begin > 0 && dir[begin - 1] != '/') begin--;
    char *s = malloc(end - begin + 1);
    if (s) {
        memcpy(s, dir + begin, end - begin);
        s[end - begin] = 0;
    }
    return s;
}

ps_status clip_service_init(clip_service **out, const clip_service_opts *opts, ps_err *err) {
    *out = NULL;
    if (!opts->dir) return ps_errf(err, PS_EINVAL, "clip: no model folder given");
    clip_service *s = calloc(1, sizeof *s);
    if (!s) return ps_errf(err, PS_ENOMEM, "clip: no memory");
    s->opts = *opts;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->wake, NULL);
    pthread_cond_init(&s->done, NULL);
    s->model_id = opts->model_id ? strdup(opts->model_id) : folder_name(opts->dir);
    ps_status st = s->model_id ? load(s, err) : ps_errf(err, PS_ENOMEM, "clip: no memory");
    if (st == PS_OK && pthread_create(&s->worker, NULL, worker_main, s) != 0)
        st = ps_errf(err, PS_ENOMEM, "clip: cannot start the worker thread");
    if (st) {
        clip_service_free(s);
        return st;
    }
    s->worker_started = true;
    PS_LOG_INFO("clip", "service '%s' ready on %s: input %d px, embeddings %d, cache %d texts",
                s->model_id, s->device, s->img.crop_w, s->E, opts->cache_capacity);
    *out = s;
    return PS_OK;
}

void clip_service_free(clip_service *s) {
    if (!s) return;
    if (s->worker_started) {
        pthread_mutex_lock(&s->mu);
        s->stop = true;
        pthread_cond_broadcast(&s->wake);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->worker, NULL);
    }
    clip_cache_free(s->cache);
    clip_tok_free(s->tok);
    clip_free(s->model);
    ps_backend_destroy(s->be);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->wake);
    pthread_cond_destroy(&s->done);
    free(s->model_id);
    free(s);
}

void clip_service_get_info(clip_service *s, clip_service_info *out) {
    clip_cache_stats cs;
    clip_cache_get_stats(s->cache, &cs);
    pthread_mutex_lock(&s->mu);
    *out = (clip_service_info){s->model_id, s->device, s->img.crop_w, s->E, s->ctx,
                               clip_weight_bytes(s->model), cs.entries, cs.capacity, cs.hits,
                               cs.misses, s->images_total, s->texts_total};
    pthread_mutex_unlock(&s->mu);
}

int clip_service_dim(const clip_service *s) { return s->E; }

/* ---- requests ---- */

/* Decodes and preprocesses n images into pixels (n, 3, S, S). */
static ps_status prepare_images(clip_service *s, const void *const *images, const size_t *sizes,
                                int n, float *pixels, ps_err *err) {
    img_limits lim = {s->opts.max_image_pixels, s->opts.max_image_side};
    int S = s->img.crop_w;
    for (int i = 0; i < n; i++) {
        img_image im;
        ps_status st = img_decode(images[i], sizes[i], &lim, &im, err);
        if (st == PS_OK) st = clip_preprocess(&im, &s->img, pixels + (size_t)i * 3 * S * S, NULL, err);
        img_free(&im);
        if (st) return n > 1 ? ps_err_wrap(err, "image %d", i) : st;
    }
    return PS_OK;
}

/* Embeds texts through the cache: hits are copied, misses tokenized, run
 * together in one job, then cached. out (n, E) unnormalised. */
static ps_status texts_cached(clip_service *s, const char *const *texts, const size_t *lens, int n,
                              float *out, int64_t *n_tokens, ps_err *err) {
    int *miss = malloc(sizeof(int) * (size_t)n);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n * s->ctx);
    float *emb = malloc(sizeof(float) * (size_t)n * s->E);
    int n_miss = 0;
    int64_t toks = 0;
    ps_status st = PS_OK;
    if (!miss || !ids || !emb) {
        st = ps_errf(err, PS_ENOMEM, "clip: no memory for %d texts", n);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        size_t len = lens ? lens[i] : strlen(texts[i]);
        int eot = 0;
        bool hit = clip_cache_get(s->cache, texts[i], len, out + (size_t)i * s->E);
        /* tokenized even on a hit when the caller counts tokens (cheap, no model work) */
        if (!hit || n_tokens) {
            int32_t *row = ids + (size_t)n_miss * s->ctx;
            if ((st = clip_tok_tokenize(s->tok, texts[i], len, s->ctx, row, &eot, NULL, err))) {
                if (n > 1) ps_err_wrap(err, "text %d", i);
                goto done;
            }
            toks += eot + 1;
        }
        if (!hit) miss[n_miss++] = i;
    }
    if (n_miss) {
        clip_job j = {0};
        j.ids = ids;
        j.n_texts = n_miss;
        j.text_out = emb;
        if ((st = submit(s, &j, err))) goto done;
        for (int k = 0; k < n_miss; k++) {
            int i = miss[k];
            memcpy(out + (size_t)i * s->E, emb + (size_t)k * s->E, sizeof(float) * (size_t)s->E);
            clip_cache_put(s->cache, texts[i], lens ? lens[i] : strlen(texts[i]), emb + (size_t)k * s->E);
        }
    }
    if (n_tokens) *n_tokens = toks;
done:
    free(miss);
    free(ids);
    free(emb);
    return st;
}

static ps_status check_count(const char *what, int n, int max, ps_err *err) {
    if (n <= 0) return ps_errf(err, PS_EINVAL, "%s must not be empty", what);
    if (n > max) return ps_errf(err, PS_EINVAL, "%s: %d given, the limit is %d", what, n, max);
    return PS_OK;
}

ps_status clip_service_embed_texts(clip_service *s, const char *const *texts, const size_t *lens,
                                   int n, bool normalize, float *out, int64_t *n_tokens,
                                   ps_err *err) {
    ps_status st = check_count("input", n, s->opts.max_inputs, err);
    if (st == PS_OK) st = texts_cached(s, texts, lens, n, out, n_tokens, err);
    if (st == PS_OK && normalize) clip_normalize_rows(out, n, s->E);
    return st;
}

ps_status clip_service_embed_images(clip_service *s, const void *const *images,
                                    const size_t *sizes, int n, bool normalize, float *out,
                                    ps_err *err) {
    ps_status st = check_count("input", n, s->opts.max_inputs, err);
    if (st) return st;
    int S = s->img.crop_w;
    float *pixels = malloc(sizeof(float) * (size_t)n * 3 * S * S);
    if (!pixels) return ps_errf(err, PS_ENOMEM, "clip: no memory for %d images", n);
    st = prepare_images(s, images, sizes, n, pixels, err);
    if (st == PS_OK) {
        clip_job j = {0};
        j.pixels = pixels;
        j.n_images = n;
        j.image_out = out;
        st = submit(s, &j, err);
    }
    if (st == PS_OK && normalize) clip_normalize_rows(out, n, s->E);
    free(pixels);
    return st;
}

/* Prompts label-major: prompts[c * T + t] = templates[t].format(labels[c]). */
static ps_status make_prompts(const char *const *labels, int L, const char *const *templates, int T,
                              char **prompts, ps_err *err) {
    for (int c = 0; c < L; c++) {
        if (!labels[c] || !labels[c][0]) return ps_errf(err, PS_EINVAL, "labels[%d] is empty", c);
        for (int t = 0; t < T; t++) {
            ps_status st = clip_format_prompt(templates[t], labels[c], &prompts[c * T + t], err);
            if (st) return st;
        }
    }
    return PS_OK;
}

ps_status clip_service_check_labels(const clip_service *s, const char *const *labels, int n_labels,
                                    const char *const *templates, int n_templates,
                                    const char **param, ps_err *err) {
    ps_status st;
    *param = "labels";
    if ((st = check_count("labels", n_labels, s->opts.max_labels, err))) return st;
    for (int c = 0; c < n_labels; c++)
        if (!labels[c] || !labels[c][0]) return ps_errf(err, PS_EINVAL, "labels[%d] is empty", c);
    if (!templates || n_templates == 0) return PS_OK;
    *param = "templates";
    if ((st = check_count("templates", n_templates, s->opts.max_templates, err))) return st;
    for (int t = 0; t < n_templates; t++) {
        char *p = NULL;
        if (!templates[t]) return ps_errf(err, PS_EINVAL, "templates[%d] is missing", t);
        st = clip_format_prompt(templates[t], "x", &p, err);
        free(p);
        if (st) return st;
    }
    return PS_OK;
}

static int score_cmp(const void *a, const void *b) {
    const clip_score *x = a, *y = b;
    if (x->probability != y->probability) return x->probability > y->probability ? -1 : 1;
    return x->label - y->label;
}

ps_status clip_service_classify(clip_service *s, const void *image, size_t n,
                                const char *const *labels, int n_labels,
                                const char *const *templates, int n_templates, clip_score *out,
                                ps_err *err) {
    static const char *const default_templates[] = {"a photo of a {}."};
    if (!templates || n_templates == 0) {
        templates = default_templates;
        n_templates = 1;
    }
    const char *param;
    ps_status st = clip_service_check_labels(s, labels, n_labels, templates, n_templates, &param, err);
    if (st) return st;
    int P = n_labels * n_templates, E = s->E, S = s->img.crop_w;
    char **prompts = calloc((size_t)P, sizeof(char *));
    float *pe = malloc(sizeof(float) * (size_t)P * E), *classes = malloc(sizeof(float) * (size_t)n_labels * E);
    float *pixels = malloc(sizeof(float) * 3 * (size_t)S * S), *img = malloc(sizeof(float) * (size_t)E);
    float *logits = malloc(sizeof(float) * (size_t)n_labels), *probs = malloc(sizeof(float) * (size_t)n_labels);
    if (!prompts || !pe || !classes || !pixels || !img || !logits || !probs) {
        st = ps_errf(err, PS_ENOMEM, "clip classify: no memory for %d prompts", P);
        goto done;
    }
    if ((st = make_prompts(labels, n_labels, templates, n_templates, prompts, err)) ||
        (st = prepare_images(s, &image, &n, 1, pixels, err)))
        goto done;
    clip_job j = {0};
    j.pixels = pixels;
    j.n_images = 1;
    j.image_out = img;
    if ((st = submit(s, &j, err)) ||
        (st = texts_cached(s, (const char *const *)prompts, NULL, P, pe, NULL, err)))
        goto done;
    clip_normalize_rows(img, 1, E);
    clip_class_embeddings(pe, n_labels, n_templates, E, classes);
    clip_zeroshot_scores(img, classes, n_labels, E, clip_logit_scale(s->model), logits, probs);
    for (int c = 0; c < n_labels; c++) out[c] = (clip_score){c, probs[c], logits[c]};
    qsort(out, (size_t)n_labels, sizeof *out, score_cmp);
done:
    for (int i = 0; prompts && i < P; i++) free(prompts[i]);
    free(prompts), free(pe), free(classes), free(pixels), free(img), free(logits), free(probs);
    return st;
}
