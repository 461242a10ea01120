/* OpenAI CLIP's image transform (clip/clip.py _transform) on a decoded image:
 * Resize(n, BICUBIC) on the shorter side, CenterCrop, convert('RGB'),
 * ToTensor, Normalize — with Pillow's exact arithmetic (see image.h), so the
 * pixel tensor equals the Python reference bit for bit.
 *
 * Deliberately OpenAI's order, not HF CLIPImageProcessor's: HF converts to
 * RGB before resizing and floors the crop offset; OpenAI resizes in the
 * decoded mode (RGBA premultiplied, P and 1 by nearest neighbour, CMYK before
 * conversion) and rounds the offset half to even. */
#ifndef PS_ENGINE_CLIP_PREPROCESS_H
#define PS_ENGINE_CLIP_PREPROCESS_H

#include <stdint.h>

#include "image.h"

typedef struct {
    int shortest_edge;      /* Resize(n): the shorter side becomes n */
    int crop_w, crop_h;     /* CenterCrop; at most shortest_edge */
    float mean[3], std[3];  /* per channel, RGB order (float32, as torch holds them) */
} clip_image_cfg;

/* OpenAI's values for a given input resolution. */
clip_image_cfg clip_image_cfg_openai(int size);

/* dir/preprocessor_config.json (HF CLIPImageProcessor: size.shortest_edge or
 * size, crop_size {height, width} or int, image_mean, image_std, resample 3);
 * OpenAI's values for image_size when the file is absent. A resample other
 * than bicubic or do_center_crop false is PS_ENOTSUP (OpenAI's transform
 * always does both). */
ps_status clip_image_cfg_load(const char *dir, int image_size, clip_image_cfg *cfg, ps_err *err);

/* Output geometry of the resize: shorter side n, longer floor(n * long / short)
 * (torchvision's int(n * long / short)); ETOOLARGE when the longer side would
 * pass 2^24 (a degenerate aspect ratio). */
ps_status clip_resize_size(int w, int h, int n, int *out_w, int *out_h, ps_err *err);

/* Center-crop offset as torchvision: int(round((size - crop) / 2.0)) with
 * Python's round-half-to-even. */
int clip_crop_offset(int size, int crop);

/* pixels (3, crop_h, crop_w) float32 CHW, normalised. rgb, if not NULL,
 * receives the cropped RGB uint8 image (crop_h, crop_w, 3) before ToTensor. */
ps_status clip_preprocess(const img_image *im, const clip_image_cfg *cfg, float *pixels,
                          uint8_t *rgb, ps_err *err);

#endif
