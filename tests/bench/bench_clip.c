/* CLIP throughput on the CPU backend for a ViT-B/32-shaped random model
 * (224 px, patch 32, vision 768 x 12, text 512 x 12, embeddings 512):
 *   1. towers: images/s and texts/s (8-token prompts and full 77-token texts);
 *   2. the label cache: classify one image against a 1000-label set twice
 *      through the CLIP service (the second request finds every prompt
 *      embedding cached) and report the speedup.
 * Part 2 writes a random ViT-B/32 CLIPModel folder (about 300 MB) to a temp
 * folder, linking the real CLIP vocabulary from $PEFTSERVE_FIXTURES, and
 * classifies fixtures/clip-tiny/images/jpeg_large444_640x480.jpg.
 *
 * usage: bench_clip [--threads N] [--iters N] [--labels N] [--skip-cache] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/safetensors.h"
#include "clip_service.h"
#include "math/half.h"
#include "models/clip.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU seconds of the whole process: on a shared machine wall time overstates
 * the cost, so both are reported. */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t rng = 88172645463325252ull;
static float frand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((double)(rng >> 11) / (double)(1ull << 53) * 2.0 - 1.0);
}

static int bench_towers(int threads, int iters) {
    ps_backend *be;
    ps_err err = {0};
    clip_model *m;
    clip_config c = clip_config_vit_b32();
    if (ps_backend_cpu_create(threads, &be, &err) || clip_init_random(&c, 1, be, &m, &err)) {
        fprintf(stderr, "bench_clip: %s\n", err.msg);
        return 1;
    }
    int S = c.image_size, E = c.projection_dim, Bi = 8, Bt = 256;
    float *px = malloc(sizeof(float) * (size_t)Bi * 3 * S * S), *out = malloc(sizeof(float) * (size_t)Bt * E);
    int32_t *ids = calloc((size_t)Bt * c.ctx, sizeof(int32_t));
    for (size_t i = 0; i < (size_t)Bi * 3 * S * S; i++) px[i] = frand();
    printf("ViT-B/32-shaped random CLIP, %.0f MB of F16 weights, CPU backend, %d threads\n",
           (double)clip_weight_bytes(m) / 1e6, threads);
    clip_encode_images(m, px, 1, out, &err); /* warm-up: scratch buffers */
    double t0 = now(), c0 = cpu_now();
    for (int it = 0; it < iters; it++)
        if (clip_encode_images(m, px, Bi, out, &err)) fprintf(stderr, "%s\n", err.msg);
    double dt = now() - t0, dc = cpu_now() - c0;
    printf("  images: %7.2f images/s wall, %7.2f per CPU-second (batches of %d)\n", iters * Bi / dt,
           iters * Bi / dc, Bi);
    static const int lens[2] = {8, 77};
    for (int k = 0; k < 2; k++) {
        int n = k == 0 ? Bt : 32, L = lens[k];
        for (int b = 0; b < n; b++) {
            int32_t *r = ids + (size_t)b * c.ctx;
            r[0] = 49406;
            for (int t = 1; t < L - 1; t++) r[t] = 300 + (int32_t)((b * 131 + t * 17) % 40000);
            r[L - 1] = 49407;
        }
        clip_encode_texts(m, ids, 1, out, &err);
        t0 = now(), c0 = cpu_now();
        for (int it = 0; it < iters; it++)
            if (clip_encode_texts(m, ids, n, out, &err)) fprintf(stderr, "%s\n", err.msg);
        dt = now() - t0, dc = cpu_now() - c0;
        printf("  texts:  %7.2f texts/s wall,  %7.2f per CPU-second (%d tokens each, batches of %d)\n",
               iters * n / dt, iters * n / dc, L, n);
    }
    free(px), free(out), free(ids);
    clip_free(m);
    ps_backend_destroy(be);
    return 0;
}

/* ---- a random ViT-B/32 CLIPModel folder ---- */

typedef struct {
    st_write_item *items;
    int n;
} item_list;

static void add(item_list *l, const char *name, int ndim, int64_t a, int64_t b, int64_t c, int64_t d) {
    int64_t shape[4] = {a, b, c, d}, numel = 1;
    st_write_item *it = &l->items[l->n++];
    memset(it, 0, sizeof *it);
    it->name = strdup(name);
    it->dtype = ST_F16;
    it->ndim = ndim;
    for (int i = 0; i < ndim; i++) it->shape[i] = shape[i], numel *= shape[i];
    uint16_t *v = malloc(sizeof(uint16_t) * (size_t)numel);
    float scale = strstr(name, "norm") && strstr(name, "weight") ? 0.0f : 0.03f;
    for (int64_t i = 0; i < numel; i++) v[i] = ps_f32_to_f16((scale == 0.0f ? 1.0f : 0.0f) + scale * frand());
    it->data = v;
}

static void add_tower(item_list *l, const char *tw, int layers, int64_t W, int64_t F) {
    char n[256];
    static const char *lin[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj"};
    for (int i = 0; i < layers; i++) {
        for (int k = 0; k < 4; k++) {
            snprintf(n, sizeof n, "%s.encoder.layers.%d.%s.weight", tw, i, lin[k]), add(l, n, 2, W, W, 0, 0);
            snprintf(n, sizeof n, "%s.encoder.layers.%d.%s.bias", tw, i, lin[k]), add(l, n, 1, W, 0, 0, 0);
        }
        snprintf(n, sizeof n, "%s.encoder.layers.%d.mlp.fc1.weight", tw, i), add(l, n, 2, F, W, 0, 0);
        snprintf(n, sizeof n, "%s.encoder.layers.%d.mlp.fc1.bias", tw, i), add(l, n, 1, F, 0, 0, 0);
        snprintf(n, sizeof n, "%s.encoder.layers.%d.mlp.fc2.weight", tw, i), add(l, n, 2, W, F, 0, 0);
        snprintf(n, sizeof n, "%s.encoder.layers.%d.mlp.fc2.bias", tw, i), add(l, n, 1, W, 0, 0, 0);
        for (int k = 1; k <= 2; k++) {
            snprintf(n, sizeof n, "%s.encoder.layers.%d.layer_norm%d.weight", tw, i, k), add(l, n, 1, W, 0, 0, 0);
            snprintf(n, sizeof n, "%s.encoder.layers.%d.layer_norm%d.bias", tw, i, k), add(l, n, 1, W, 0, 0, 0);
        }
    }
}

static int write_folder(const char *dir, const char *fixtures) {
    clip_config c = clip_config_vit_b32();
    item_list l = {calloc(512, sizeof(st_write_item)), 0};
    int64_t Wt = c.text.hidden, Wv = c.vision.hidden, E = c.projection_dim, G = c.image_size / c.patch_size;
    add(&l, "text_model.embeddings.token_embedding.weight", 2, c.vocab, Wt, 0, 0);
    add(&l, "text_model.embeddings.position_embedding.weight", 2, c.ctx, Wt, 0, 0);
    add_tower(&l, "text_model", c.text.layers, Wt, c.text.ffn);
    add(&l, "text_model.final_layer_norm.weight", 1, Wt, 0, 0, 0);
    add(&l, "text_model.final_layer_norm.bias", 1, Wt, 0, 0, 0);
    add(&l, "text_projection.weight", 2, E, Wt, 0, 0);
    add(&l, "vision_model.embeddings.class_embedding", 1, Wv, 0, 0, 0);
    add(&l, "vision_model.embeddings.patch_embedding.weight", 4, Wv, 3, c.patch_size, c.patch_size);
    add(&l, "vision_model.embeddings.position_embedding.weight", 2, G * G + 1, Wv, 0, 0);
    add(&l, "vision_model.pre_layrnorm.weight", 1, Wv, 0, 0, 0);
    add(&l, "vision_model.pre_layrnorm.bias", 1, Wv, 0, 0, 0);
    add_tower(&l, "vision_model", c.vision.layers, Wv, c.vision.ffn);
    add(&l, "vision_model.post_layernorm.weight", 1, Wv, 0, 0, 0);
    add(&l, "vision_model.post_layernorm.bias", 1, Wv, 0, 0, 0);
    add(&l, "visual_projection.weight", 2, E, Wv, 0, 0);
    uint16_t scale = ps_f32_to_f16(4.60546875f);
    l.items[l.n++] = (st_write_item){"logit_scale", ST_F16, 0, {0}, &scale};
    char path[4096], src[4096];
    ps_err err = {0};
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    int rc = st_write(path, l.items, l.n, NULL, &err) != PS_OK;
    if (rc) fprintf(stderr, "bench_clip: %s\n", err.msg);
    for (int i = 0; i < l.n - 1; i++) free((void *)l.items[i].name), free((void *)l.items[i].data);
    free(l.items);
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return 1;
    fprintf(f, "{\"model_type\": \"clip\", \"projection_dim\": 512, \"text_config\": {}, \"vision_config\": {}}\n");
    fclose(f);
    static const char *tok[] = {"vocab.json", "merges.txt"};
    for (int i = 0; i < 2 && !rc; i++) {
        snprintf(src, sizeof src, "%s/tokenizers/clip/%s", fixtures, tok[i]);
        snprintf(path, sizeof path, "%s/%s", dir, tok[i]);
        rc = symlink(src, path) != 0;
    }
    return rc;
}

static char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc(*n);
    if (fread(b, 1, *n, f) != *n) *n = 0;
    fclose(f);
    return b;
}

static int bench_cache(int threads, int n_labels) {
    const char *fx = getenv("PEFTSERVE_FIXTURES");
    if (!fx) fx = "../shared/fixtures";
    char dir[] = "/tmp/bench_clip_XXXXXX", path[4096];
    snprintf(path, sizeof path, "%s/clip-tiny/images/jpeg_large444_640x480.jpg", fx);
    size_t n_img;
    char *img = read_all(path, &n_img);
    if (!img || !mkdtemp(dir)) {
        printf("label cache: skipped (no fixtures at %s; set PEFTSERVE_FIXTURES)\n", fx);
        free(img);
        return 0;
    }
    double t0 = now();
    int rc = write_folder(dir, fx);
    printf("label cache: wrote a random ViT-B/32 folder in %.1f s\n", now() - t0);
    static const char *adj[] = {"red", "small", "old", "wooden", "striped", "shiny", "wet", "giant",
                                "broken", "golden", "fluffy", "tiny", "dark", "bright", "plastic",
                                "frozen", "young", "metal", "blue", "green", "paper", "round",
                                "square", "heavy", "soft"};
    static const char *noun[] = {"dog", "cat", "car", "apple", "chair", "boat", "tree", "house",
                                 "bird", "horse", "lamp", "clock", "shoe", "guitar", "bridge",
                                 "robot", "flower", "truck", "camera", "bottle", "spoon", "kite",
                                 "train", "piano", "castle", "rabbit", "fish", "cake", "bicycle",
                                 "pencil", "teapot", "rocket", "umbrella", "drum", "ladder",
                                 "cloud", "window", "banana", "statue", "candle"};
    char **labels = malloc(sizeof(char *) * (size_t)n_labels);
    for (int i = 0; i < n_labels; i++) {
        labels[i] = malloc(64);
        snprintf(labels[i], 64, "%s %s", adj[i % 25], noun[(i / 25) % 40]);
        if (i >= 1000) snprintf(labels[i], 64, "%s %s %d", adj[i % 25], noun[(i / 25) % 40], i);
    }
    clip_service_opts o = clip_service_opts_default();
    o.dir = dir;
    o.device = "cpu";
    o.threads = threads;
    o.max_labels = n_labels;
    clip_service *s = NULL;
    ps_err err = {0};
    clip_score *sc = malloc(sizeof(clip_score) * (size_t)n_labels);
    if (!rc && clip_service_init(&s, &o, &err) == PS_OK) {
        double times[3], cpu[3];
        for (int r = 0; r < 3; r++) {
            t0 = now();
            double c0 = cpu_now();
            if (clip_service_classify(s, img, n_img, (const char *const *)labels, n_labels, NULL, 0, sc, &err))
                fprintf(stderr, "classify: %s\n", err.msg);
            times[r] = now() - t0;
            cpu[r] = cpu_now() - c0;
        }
        clip_service_info info;
        clip_service_get_info(s, &info);
        printf("  classify 1 image x %d labels: cold %.3f s (%.3f CPU s), cached %.4f s and %.4f s "
               "(%.4f CPU s) -> %.0fx faster wall, %.0fx in CPU time\n"
               "  (cache %d entries, %llu hits, %llu misses)\n",
               n_labels, times[0], cpu[0], times[1], times[2], cpu[2], times[0] / times[2],
               cpu[0] / cpu[2], info.cache_entries,
               (unsigned long long)info.cache_hits, (unsigned long long)info.cache_misses);
    } else {
        fprintf(stderr, "bench_clip: %s\n", err.msg);
        rc = 1;
    }
    clip_service_free(s);
    for (int i = 0; i < n_labels; i++) free(labels[i]);
    free(labels), free(sc), free(img);
    static const char *files[] = {"model.safetensors", "config.json", "vocab.json", "merges.txt"};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
    return rc;
}

int main(int argc, char **argv) {
    int threads = 0, iters = 3, labels = 1000, skip_cache = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--labels") && i + 1 < argc) labels = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--skip-cache")) skip_cache = 1;
        else {
            fprintf(stderr, "usage: %s [--threads N] [--iters N] [--labels N] [--skip-cache]\n", argv[0]);
            return 2;
        }
    }
    if (threads <= 0) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    int rc = bench_towers(threads, iters);
    if (!rc && !skip_cache) rc = bench_cache(threads, labels);
    return rc;
}
