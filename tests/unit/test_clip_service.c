/* The CLIP service end to end, from the image files and strings of
 * clip-tiny against OpenAI CLIP's float64 results (ref/zeroshot.*,
 * ref/text.*, ref/image_embeds.*):
 *   every label set x every image: logits and probabilities per label, the
 *   argmax, sorted output; prompts and their token ids equal the reference's;
 *   the prompt-ensemble rule on the reference prompt embeddings;
 *   text and image embeddings (normalised);
 *   the label cache (second request: hits only, identical numbers);
 *   bad requests give the right status and the service keeps serving;
 *   concurrent callers get the serial answers.
 * Tolerances (clip-tiny/README.md: float32 reaches 3.0e-5 on logits, 4.3e-6
 * on probabilities, 5e-7 on normalised embeddings; the pixels are bit-exact,
 * see test_clip_image): logits 1e-3, probabilities 1e-4, normalised
 * embeddings 1e-5, class embeddings from reference prompts 1e-6. */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/safetensors.h"
#include "clip_service.h"
#include "clip_tokenizer.h"
#include "clip_zeroshot.h"
#include "testutil.h"

#define N_IMAGES 13

typedef struct {
    uint8_t *data;
    size_t n;
} blob;

static blob images[N_IMAGES];
static const char *image_names[N_IMAGES];

static blob read_blob(const char *path) {
    blob b = {0};
    b.data = (void *)tu_read_file(path, &b.n);
    return b;
}

static void load_images(json_t *imgs) {
    size_t i;
    json_t *it;
    json_array_foreach(imgs, i, it) {
        char rel[512];
        snprintf(rel, sizeof rel, "clip-tiny/%s", json_string_value(json_object_get(it, "file")));
        images[i] = read_blob(tu_path(rel));
        image_names[i] = json_string_value(json_object_get(it, "name"));
        TU_CHECK(images[i].n > 0, "read %s", rel);
    }
}

static const float *tensor_f32(const st_set *s, const char *name, int64_t n) {
    const st_tensor *t = st_find(s, name);
    TU_CHECK(t && t->dtype == ST_F32 && st_numel(t) == n, "ref '%s'", name);
    return t ? t->data : NULL;
}

/* Checks one label set: prompts, ids, ensemble rule and all images. */
static void check_set(clip_service *svc, const clip_tokenizer *tok, const st_set *zs, json_t *set,
                      double *max_logit, double *max_prob) {
    const char *name = json_string_value(json_object_get(set, "name"));
    json_t *jl = json_object_get(set, "labels"), *jt = json_object_get(set, "templates");
    int L = (int)json_array_size(jl), T = (int)json_array_size(jt), E = clip_service_dim(svc);
    const char *labels[64], *templates[8];
    for (int i = 0; i < L; i++) labels[i] = json_string_value(json_array_get(jl, (size_t)i));
    for (int i = 0; i < T; i++) templates[i] = json_string_value(json_array_get(jt, (size_t)i));
    char key[128];
    snprintf(key, sizeof key, "%s.prompt_input_ids", name);
    const st_tensor *ids = st_find(zs, key);
    for (int c = 0; c < L; c++)
        for (int t = 0; t < T; t++) {
            char *p = NULL;
            clip_format_prompt(templates[t], labels[c], &p, NULL);
            const char *want = json_string_value(json_array_get(json_array_get(json_object_get(set, "prompts"), (size_t)c), (size_t)t));
            TU_CHECK(p && strcmp(p, want) == 0, "%s: prompt '%s' want '%s'", name, p, want);
            int32_t got[77];
            clip_tok_tokenize(tok, p, strlen(p), 77, got, NULL, NULL, NULL);
            TU_CHECK(ids && memcmp(got, (const int32_t *)ids->data + (size_t)(c * T + t) * 77, sizeof got) == 0,
                     "%s: prompt ids of '%s'", name, p);
            free(p);
        }
    /* the ensemble rule alone, on the reference prompt embeddings */
    snprintf(key, sizeof key, "%s.prompt_text_embeds", name);
    const float *pe = tensor_f32(zs, key, (int64_t)L * T * E);
    snprintf(key, sizeof key, "%s.class_embeds", name);
    const float *ce = tensor_f32(zs, key, (int64_t)L * E);
    if (pe && ce) {
        float *cls = malloc(sizeof(float) * L * E);
        clip_class_embeddings(pe, L, T, E, cls);
        tu_cmp c = tu_compare(cls, ce, (int64_t)L * E);
        TU_CHECK(c.max_abs <= 1e-6, "%s: class embeddings from reference prompts max_abs %.3g", name, c.max_abs);
        free(cls);
    }
    snprintf(key, sizeof key, "%s.logits_per_image", name);
    const float *wl = tensor_f32(zs, key, (int64_t)N_IMAGES * L);
    snprintf(key, sizeof key, "%s.probs", name);
    const float *wp = tensor_f32(zs, key, (int64_t)N_IMAGES * L);
    if (!wl || !wp) return;
    int agree = 0;
    for (int i = 0; i < N_IMAGES; i++) {
        clip_score sc[64];
        ps_err err = {0};
        ps_status st = clip_service_classify(svc, images[i].data, images[i].n, labels, L,
                                             T == 1 && strcmp(templates[0], "a photo of a {}.") == 0 ? NULL : templates,
                                             T == 1 && strcmp(templates[0], "a photo of a {}.") == 0 ? 0 : T, sc, &err);
        TU_CHECK(st == PS_OK, "%s/%s: %s", name, image_names[i], err.msg);
        if (st) continue;
        int want_top = 0;
        for (int c = 0; c < L; c++) {
            const clip_score *s = &sc[c];
            double dl = fabs(s->logit - wl[i * L + s->label]), dp = fabs(s->probability - wp[i * L + s->label]);
            if (dl > *max_logit) *max_logit = dl;
            if (dp > *max_prob) *max_prob = dp;
            TU_CHECK(dl <= 1e-3 && dp <= 1e-4, "%s/%s label %s: logit %.6f want %.6f, prob %.6g want %.6g",
                     name, image_names[i], labels[s->label], s->logit, wl[i * L + s->label],
                     s->probability, wp[i * L + s->label]);
            if (c > 0) TU_CHECK(sc[c - 1].probability >= s->probability, "%s: output not sorted", name);
            if (wp[i * L + c] > wp[i * L + want_top]) want_top = c;
        }
        agree += sc[0].label == want_top;
    }
    printf("  set %-10s %2d labels x %d templates: top-1 agrees on %d/%d images\n", name, L, T, agree, N_IMAGES);
    TU_CHECK(agree == N_IMAGES, "%s: top-1 differs", name);
}

static void test_embeddings(clip_service *svc, const st_set *txt_ref, const st_set *img_ref) {
    int E = clip_service_dim(svc);
    json_t *tj = json_load_file(tu_path("clip-tiny/ref/text.json"), 0, NULL);
    json_t *items = json_object_get(tj, "items");
    int N = (int)json_array_size(items);
    const char **texts = malloc(sizeof(char *) * N);
    size_t *lens = malloc(sizeof(size_t) * N);
    for (int i = 0; i < N; i++) {
        json_t *s = json_object_get(json_array_get(items, (size_t)i), "text");
        texts[i] = json_string_value(s);
        lens[i] = json_string_length(s);
    }
    float *a = malloc(sizeof(float) * N * E), *b = malloc(sizeof(float) * N * E);
    ps_err err = {0};
    clip_service_info before, after;
    clip_service_get_info(svc, &before);
    int64_t toks = 0;
    TU_CHECK(clip_service_embed_texts(svc, texts, lens, N, true, a, &toks, &err) == PS_OK, "%s", err.msg);
    const float *want = tensor_f32(txt_ref, "text_embeds_norm", (int64_t)N * E);
    if (want) {
        tu_cmp c = tu_compare(a, want, (int64_t)N * E);
        printf("  text embeddings (40, normalised): max_abs %.3g, %lld tokens\n", c.max_abs, (long long)toks);
        TU_CHECK(c.max_abs <= 1e-5, "text embeddings max_abs %.3g", c.max_abs);
    }
    TU_CHECK(clip_service_embed_texts(svc, texts, lens, N, true, b, NULL, &err) == PS_OK, "%s", err.msg);
    clip_service_get_info(svc, &after);
    TU_CHECK(memcmp(a, b, sizeof(float) * N * E) == 0, "cached embeddings differ");
    TU_CHECK(after.texts_total - before.texts_total <= (uint64_t)N &&
                 after.cache_hits - before.cache_hits >= (uint64_t)N,
             "second request was not served from the cache (texts %llu, hits %llu)",
             (unsigned long long)(after.texts_total - before.texts_total),
             (unsigned long long)(after.cache_hits - before.cache_hits));
    free(a), free(b), free(texts), free(lens);
    json_decref(tj);

    const void *ptrs[N_IMAGES];
    size_t sizes[N_IMAGES];
    for (int i = 0; i < N_IMAGES; i++) ptrs[i] = images[i].data, sizes[i] = images[i].n;
    float *im = malloc(sizeof(float) * N_IMAGES * E);
    TU_CHECK(clip_service_embed_images(svc, ptrs, sizes, N_IMAGES, true, im, &err) == PS_OK, "%s", err.msg);
    const float *wi = tensor_f32(img_ref, "image_embeds_norm", (int64_t)N_IMAGES * E);
    if (wi) {
        tu_cmp c = tu_compare(im, wi, (int64_t)N_IMAGES * E);
        printf("  image embeddings from files (13, normalised): max_abs %.3g\n", c.max_abs);
        TU_CHECK(c.max_abs <= 1e-5, "image embeddings max_abs %.3g", c.max_abs);
    }
    free(im);
}

static void expect(clip_service *svc, const char *what, const void *img, size_t n,
                   const char *const *labels, int L, const char *const *tm, int T, ps_status want) {
    clip_score *sc = malloc(sizeof(clip_score) * (L > 0 ? L : 1));
    ps_err err = {0};
    ps_status st = clip_service_classify(svc, img, n, labels, L, tm, T, sc, &err);
    printf("  %-28s -> %s: %s\n", what, ps_status_name(st), err.msg);
    TU_CHECK(st == want, "%s: %s, want %s", what, ps_status_name(st), ps_status_name(want));
    free(sc);
}

static void test_bad_requests(clip_service *svc) {
    const char *labels[] = {"dog", "cat"}, *bad_t[] = {"a photo of a dog"}, *two_t[] = {"{} and {}"};
    const char *empty[] = {"dog", ""};
    blob *jpg = &images[7];
    static const char *many[3000];
    for (int i = 0; i < 3000; i++) many[i] = "dog";
    expect(svc, "not an image", "hello", 5, labels, 2, NULL, 0, PS_EFORMAT);
    expect(svc, "truncated jpeg", jpg->data, jpg->n / 2, labels, 2, NULL, 0, PS_EFORMAT);
    expect(svc, "no labels", jpg->data, jpg->n, labels, 0, NULL, 0, PS_EINVAL);
    expect(svc, "3000 labels", jpg->data, jpg->n, many, 3000, NULL, 0, PS_EINVAL);
    expect(svc, "empty label", jpg->data, jpg->n, empty, 2, NULL, 0, PS_EINVAL);
    expect(svc, "template without {}", jpg->data, jpg->n, labels, 2, bad_t, 1, PS_EINVAL);
    expect(svc, "template with two {}", jpg->data, jpg->n, labels, 2, two_t, 1, PS_EINVAL);
    expect(svc, "still serving", jpg->data, jpg->n, labels, 2, NULL, 0, PS_OK);
}

typedef struct {
    clip_service *svc;
    int image;
    clip_score sc[10];
    ps_status st;
} worker_arg;

static const char *cifar[] = {"airplane", "automobile", "bird", "cat", "deer",
                              "dog", "frog", "horse", "ship", "truck"};

static void *classify_thread(void *p) {
    worker_arg *a = p;
    for (int rep = 0; rep < 3 && a->st == PS_OK; rep++)
        a->st = clip_service_classify(a->svc, images[a->image].data, images[a->image].n, cifar, 10,
                                      NULL, 0, a->sc, NULL);
    return NULL;
}

static void test_concurrent(clip_service *svc) {
    worker_arg args[6];
    pthread_t th[6];
    for (int i = 0; i < 6; i++) {
        args[i] = (worker_arg){svc, i * 2, {{0}}, PS_OK};
        pthread_create(&th[i], NULL, classify_thread, &args[i]);
    }
    for (int i = 0; i < 6; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 6; i++) {
        clip_score serial[10];
        clip_service_classify(svc, images[i * 2].data, images[i * 2].n, cifar, 10, NULL, 0, serial, NULL);
        TU_CHECK(args[i].st == PS_OK && memcmp(serial, args[i].sc, sizeof serial) == 0,
                 "concurrent classify of image %d differs from the serial answer", i * 2);
    }
}

int main(void) {
    tu_fixtures_or_skip("clip-tiny");
    json_t *imgs = json_load_file(tu_path("clip-tiny/ref/images.json"), 0, NULL);
    json_t *zj = json_load_file(tu_path("clip-tiny/ref/zeroshot.json"), 0, NULL);
    TU_CHECK(imgs && zj, "reference json");
    if (!imgs || !zj) return tu_finish("clip service");
    load_images(json_object_get(imgs, "images"));
    clip_service_opts o = clip_service_opts_default();
    o.dir = tu_path("clip-tiny");
    o.device = "cpu";
    o.threads = 2;
    clip_service *svc = NULL;
    ps_err err = {0};
    TU_CHECK(clip_service_init(&svc, &o, &err) == PS_OK, "init: %s", err.msg);
    clip_tokenizer *tok = NULL;
    clip_tok_load(tu_path("clip-tiny"), &tok, &err);
    st_set *zs = NULL, *txt = NULL, *emb = NULL;
    st_open(tu_path("clip-tiny/ref/zeroshot.safetensors"), &zs, &err);
    st_open(tu_path("clip-tiny/ref/text.safetensors"), &txt, &err);
    st_open(tu_path("clip-tiny/ref/image_embeds.safetensors"), &emb, &err);
    if (svc && tok && zs && txt && emb) {
        double ml = 0, mp = 0;
        size_t i;
        json_t *set;
        json_array_foreach(json_object_get(zj, "label_sets"), i, set) check_set(svc, tok, zs, set, &ml, &mp);
        printf("  zero-shot from files: max |logit err| %.3g, max |prob err| %.3g\n", ml, mp);
        test_embeddings(svc, txt, emb);
        test_bad_requests(svc);
        test_concurrent(svc);
    }
    st_close(zs), st_close(txt), st_close(emb);
    clip_tok_free(tok);
    clip_service_free(svc);
    for (int i = 0; i < N_IMAGES; i++) free(images[i].data);
    json_decref(imgs);
    json_decref(zj);
    return tu_finish("clip service");
}
