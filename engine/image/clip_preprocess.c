/* CLIP _transform on an img_image; see clip_preprocess.h.
 * Mirrors clip/clip.py:79-86 with torchvision 0.14 semantics:
 * functional.py:363-386 (_compute_resized_output_size), :465-468 (same size
 * -> untouched), :589-590 (crop offsets, Python round), :171 (ToTensor
 * v / 255 in float32), functional_tensor.py:932-940 (Normalize in float32). */
#include "clip_preprocess.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

clip_image_cfg clip_image_cfg_openai(int size) {
    clip_image_cfg c = {size, size, size, {0.48145466f, 0.4578275f, 0.40821073f},
                        {0.26862954f, 0.26130258f, 0.27577711f}};
    return c;
}

/* An int, or an object's key (shortest_edge / height / width). */
static int json_size(json_t *v, const char *key) {
    if (json_is_integer(v)) return (int)json_integer_value(v);
    return (int)json_integer_value(json_object_get(v, key));
}

static ps_status read_triple(json_t *root, const char *key, float out[3], const char *path, ps_err *err) {
    json_t *a = json_object_get(root, key);
    if (!a) return PS_OK;
    if (!json_is_array(a) || json_array_size(a) != 3)
        return ps_errf(err, PS_EFORMAT, "%s: '%s' must be an array of 3 numbers", path, key);
    for (int c = 0; c < 3; c++) {
        json_t *v = json_array_get(a, (size_t)c);
        if (!json_is_number(v)) return ps_errf(err, PS_EFORMAT, "%s: '%s'[%d] is not a number", path, key, c);
        out[c] = (float)json_number_value(v); /* torch.as_tensor(mean, dtype=float32) */
    }
    return PS_OK;
}

ps_status clip_image_cfg_load(const char *dir, int image_size, clip_image_cfg *cfg, ps_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/preprocessor_config.json", dir);
    *cfg = clip_image_cfg_openai(image_size);
    FILE *f = fopen(path, "rb");
    if (!f) return PS_OK;
    fclose(f);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    if (!root) return ps_errf(err, PS_EFORMAT, "%s:%d: %s", path, je.line, je.text);
    ps_status st = PS_OK;
    json_t *size = json_object_get(root, "size"), *crop = json_object_get(root, "crop_size");
    json_t *resample = json_object_get(root, "resample"), *do_crop = json_object_get(root, "do_center_crop");
    if (size) cfg->shortest_edge = json_size(size, "shortest_edge");
    if (crop) {
        cfg->crop_h = json_size(crop, "height");
        cfg->crop_w = json_size(crop, "width");
    }
    if (resample && json_integer_value(resample) != 3)
        st = ps_errf(err, PS_ENOTSUP, "%s: resample %lld (only 3 = bicubic, as OpenAI CLIP, is supported)",
                     path, (long long)json_integer_value(resample));
    else if (do_crop && !json_is_true(do_crop))
        st = ps_errf(err, PS_ENOTSUP, "%s: do_center_crop false is not supported", path);
    else if (cfg->shortest_edge <= 0 || cfg->crop_w <= 0 || cfg->crop_h <= 0 ||
             cfg->crop_w > cfg->shortest_edge || cfg->crop_h > cfg->shortest_edge)
        st = ps_errf(err, PS_EFORMAT, "%s: size %d and crop %dx%d (the crop must fit the resized image)",
                     path, cfg->shortest_edge, cfg->crop_w, cfg->crop_h);
    if (st == PS_OK) st = read_triple(root, "image_mean", cfg->mean, path, err);
    if (st == PS_OK) st = read_triple(root, "image_std", cfg->std, path, err);
    json_decref(root);
    return st;
}

ps_status clip_resize_size(int w, int h, int n, int *out_w, int *out_h, ps_err *err) {
    int64_t s = w <= h ? w : h, l = w <= h ? h : w;
    int64_t nl = (int64_t)n * l / s; /* exact: int(n*l/s) in double equals the floor */
    if (nl > (1 << 24))
        return ps_errf(err, PS_ETOOLARGE,
                       "image %dx%d: aspect ratio too extreme (resized long side %lld > %d)", w, h,
                       (long long)nl, 1 << 24);
    *out_w = w <= h ? n : (int)nl;
    *out_h = w <= h ? (int)nl : n;
    return PS_OK;
}

int clip_crop_offset(int size, int crop) {
    int d = size - crop;
    if (d % 2 == 0) return d / 2;
    int k = d / 2; /* (d/2.0) = k + 0.5: half to even */
    return k % 2 == 0 ? k : k + 1;
}

ps_status clip_preprocess(const img_image *im, const clip_image_cfg *cfg, float *pixels,
                          uint8_t *rgb_out, ps_err *err) {
    int rw = 0, rh = 0;
    if (cfg->crop_w > cfg->shortest_edge || cfg->crop_h > cfg->shortest_edge || cfg->crop_w <= 0 ||
        cfg->crop_h <= 0)
        return ps_errf(err, PS_EINVAL, "clip preprocess: crop %dx%d must fit the resized side %d",
                       cfg->crop_w, cfg->crop_h, cfg->shortest_edge);
    ps_status st = clip_resize_size(im->w, im->h, cfg->shortest_edge, &rw, &rh, err);
    if (st) return st;
    int x0 = clip_crop_offset(rw, cfg->crop_w), y0 = clip_crop_offset(rh, cfg->crop_h);
    img_image win = {0}, rgb = {0};
    if ((st = img_resize_window(im, rw, rh, x0, y0, cfg->crop_w, cfg->crop_h, &win, err))) goto fail;
    if ((st = img_to_rgb(&win, &rgb, err))) goto fail;
    int HW = cfg->crop_w * cfg->crop_h;
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < HW; i++) /* no FMA possible here: divide, subtract, divide */
            pixels[c * HW + i] = ((float)rgb.pix[3 * i + c] / 255.0f - cfg->mean[c]) / cfg->std[c];
    if (rgb_out) memcpy(rgb_out, rgb.pix, (size_t)HW * 3);
fail:
    img_free(&win);
    img_free(&rgb);
    return st;
}
