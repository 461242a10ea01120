/* CLIP _transform on an img_image; see clip_preprocess.h.
 * Mirrors clip/clip.py:79-86 with torchvision 0.14 semantics:
 * functional.py:363-386 (_compute_resized_output_size), :465-468 (same size
 * -> untouched), :589-590 (crop offsets, Python round), :171 (ToTensor
 * v / 255 in float32), functional_tensor.py:932-940 (Normalize in float32). */
#include "clip_preprocess.h"

#include <math.h>
#include <string.h>

clip_image_cfg clip_image_cfg_openai(int size) {
    clip_image_cfg c = {size, size, size, {0.48145466f, 0.4578275f, 0.40821073f},
                        {0.26862954f, 0.26130258f, 0.27577711f}};
    return c;
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
