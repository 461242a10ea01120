/* Images as Pillow sees them: decoding JPEG/PNG into Pillow's modes, Pillow's
 * resize (bicubic / nearest, with its mode rules) and convert('RGB').
 *
 * Vision models are compared against Python pipelines built on Pillow
 * (OpenAI CLIP's _transform, HF image processors), so decoding and resizing
 * reproduce Pillow 9.4 bit for bit rather than doing "a good resize":
 *  - JPEG via libjpeg-turbo defaults (ISLOW, fancy upsampling): 1 component
 *    -> L, 3 -> RGB, 4 -> CMYK read inverted (Adobe convention, as Pillow's
 *    "CMYK;I"). EXIF orientation is ignored (CLIP never applies it).
 *  - PNG via libpng: 16-bit samples keep the high byte; gray 1-bit -> mode 1
 *    (0/255), 2/4-bit -> L scaled; palette -> P (indices + palette, tRNS
 *    ignored); gray+alpha -> LA; RGB(A) -> RGB(A). 16-bit grayscale, which
 *    Pillow opens as 32-bit "I" and then saturates in convert('RGB'), is read
 *    as L from the high byte instead (a deliberate, documented difference).
 *  - Truncated or inconsistent files are errors (PS_EFORMAT) naming what is
 *    wrong; images over the pixel limits are PS_ETOOLARGE before any pixel
 *    buffer is allocated.
 * Not handled: GIF/WebP/BMP/TIFF (PS_EFORMAT naming the format), ICC
 * profiles (ignored, as Pillow's convert does), animation. */
#ifndef PS_ENGINE_IMAGE_H
#define PS_ENGINE_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef enum {
    IMG_MODE_1 = 0, /* 1-bit, stored one byte per pixel as 0 or 255 */
    IMG_MODE_L,     /* 8-bit gray */
    IMG_MODE_P,     /* palette indices */
    IMG_MODE_LA,    /* gray + alpha */
    IMG_MODE_RGB,
    IMG_MODE_RGBA,
    IMG_MODE_CMYK,  /* Pillow's CMYK (already inverted from Adobe JPEG data) */
} img_mode;

typedef struct {
    int w, h;
    img_mode mode;
    int channels;             /* bytes per pixel: 1 (1, L, P), 2 (LA), 3 (RGB), 4 (RGBA, CMYK) */
    uint8_t *pix;             /* (h, w, channels), owned */
    uint8_t palette[256 * 3]; /* P: RGB entries; entries the file does not set are
                                 Pillow's gray ramp (i, i, i) */
    int n_palette;            /* entries the file set */
} img_image;

typedef struct {
    int64_t max_pixels; /* width * height */
    int max_side;       /* either side */
} img_limits;

/* 40 M pixels (a 160 MB RGBA buffer), 30000 px per side. */
img_limits img_limits_default(void);

const char *img_mode_name(img_mode m); /* Pillow's name: "1", "L", "P", "LA", ... */
int img_mode_channels(img_mode m);

/* Sniffs JPEG / PNG and decodes. lim NULL = defaults. out is zeroed on failure. */
ps_status img_decode(const void *data, size_t n, const img_limits *lim, img_image *out, ps_err *err);
ps_status img_decode_jpeg(const void *data, size_t n, const img_limits *lim, img_image *out,
                          ps_err *err);
ps_status img_decode_png(const void *data, size_t n, const img_limits *lim, img_image *out,
                         ps_err *err);

/* Allocates an image of the given geometry (pixels uninitialised). */
ps_status img_alloc(img_image *im, int w, int h, img_mode mode, ps_err *err);
void img_free(img_image *im); /* accepts a zeroed image */

/* Pillow Image.convert('RGB'): L/1 replicate, LA/RGBA drop alpha (no
 * compositing), P palette lookup, CMYK via Pillow's cmyk2rgb. */
ps_status img_to_rgb(const img_image *in, img_image *out, ps_err *err);

/* Pillow Image.resize((out_w, out_h), BICUBIC) (reducing_gap None), but only
 * the window [x0, x0 + w) x [y0, y0 + h) of the result is produced: each
 * output pixel depends only on its own coordinates, so the window equals the
 * crop of the full resize while never allocating the full result. Follows
 * Pillow's mode rules: 1 and P use nearest neighbour, RGBA/LA are resized
 * premultiplied, L/RGB/CMYK by the fixed-point bicubic with a uint8
 * intermediate. Same size -> plain crop. out is in the input's mode. */
ps_status img_resize_window(const img_image *in, int out_w, int out_h, int x0, int y0, int w,
                            int h, img_image *out, ps_err *err);

#endif
