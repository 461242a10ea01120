/* Pillow's Image.resize, bit-exact, for the modes we decode.
 *
 * Mirrors Pillow 9.4: Image.resize (1/P -> NEAREST whatever the filter;
 * RGBA/LA -> premultiplied RGBa/La, resize, back), _imaging.c _resize
 * (NEAREST through ImagingTransform's affine scale: source index
 * (int)(scale/2 + i*scale), accumulated in double), and libImaging/Resample.c
 * for BICUBIC (a = -0.5): precompute_coeffs (support 2*max(scale,1),
 * normalised weights), normalize_coeffs_8bpc (22-bit fixed point rounded half
 * away from zero), horizontal pass first over only the rows the vertical pass
 * needs, a uint8 intermediate, accumulators starting at 2^21, clip8.
 * Premultiply / unpremultiply are Convert.c rgbA2rgba / rgba2rgbA.
 *
 * Only a window of the output is computed (see img_resize_window): a
 * coefficient row depends only on its output index, so this is exact. */
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"

#define PRECISION_BITS (32 - 8 - 2)

static double bicubic_filter(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

typedef struct {
    int ksize;
    int *bounds;    /* (n, 2): first input index, count */
    int32_t *kk;    /* (n, ksize) fixed-point weights */
} coeffs;

static void coeffs_free(coeffs *c) {
    free(c->bounds);
    free(c->kk);
}

/* precompute_coeffs + normalize_coeffs_8bpc for output indices [o0, o0+n)
 * of an in_size -> out_size resize (box 0..in_size). */
static ps_status coeffs_init(coeffs *c, int in_size, int out_size, int o0, int n, ps_err *err) {
    double scale = (double)(float)in_size / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 2.0 * filterscale;
    c->ksize = (int)ceil(support) * 2 + 1;
    c->bounds = malloc(sizeof(int) * 2 * (size_t)n);
    c->kk = malloc(sizeof(int32_t) * (size_t)c->ksize * (size_t)n);
    double *k = malloc(sizeof(double) * (size_t)c->ksize);
    if (!c->bounds || !c->kk || !k) {
        free(k);
        return ps_errf(err, PS_ENOMEM, "resize %d -> %d: no memory for %d x %d coefficients",
                       in_size, out_size, n, c->ksize);
    }
    for (int i = 0; i < n; i++) {
        int xx = o0 + i;
        double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        for (int x = 0; x < xmax; x++) {
            k[x] = bicubic_filter((x + xmin - center + 0.5) * ss);
            ww += k[x];
        }
        int32_t *q = c->kk + (size_t)i * c->ksize;
        for (int x = 0; x < c->ksize; x++) {
            double v = x < xmax ? (ww != 0.0 ? k[x] / ww : k[x]) : 0.0;
            q[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS))
                         : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        c->bounds[2 * i] = xmin;
        c->bounds[2 * i + 1] = xmax;
    }
    free(k);
    return PS_OK;
}

static uint8_t clip8(int32_t v) {
    if (v >= (255 << PRECISION_BITS)) return 255;
    if (v <= 0) return 0;
    return (uint8_t)(v >> PRECISION_BITS);
}

/* dst (rows, n, C) = horizontal pass of src rows [y0, y0+rows) (width sw). */
static void pass_h(const uint8_t *src, int sw, int C, int y0, int rows, const coeffs *c, int n,
                   uint8_t *dst) {
    for (int y = 0; y < rows; y++) {
        const uint8_t *s = src + ((size_t)(y0 + y) * sw) * C;
        uint8_t *d = dst + (size_t)y * n * C;
        for (int i = 0; i < n; i++) {
            int xmin = c->bounds[2 * i], xmax = c->bounds[2 * i + 1];
            const int32_t *k = c->kk + (size_t)i * c->ksize;
            for (int ch = 0; ch < C; ch++) {
                int32_t ss = 1 << (PRECISION_BITS - 1);
                for (int x = 0; x < xmax; x++) ss += s[(size_t)(x + xmin) * C + ch] * k[x];
                d[(size_t)i * C + ch] = clip8(ss);
            }
        }
    }
}

/* dst (n, w, C) = vertical pass over src (rows start at input row `base`). */
static void pass_v(const uint8_t *src, int w, int C, int base, const coeffs *c, int n, uint8_t *dst) {
    size_t stride = (size_t)w * C;
    for (int i = 0; i < n; i++) {
        int ymin = c->bounds[2 * i] - base, ymax = c->bounds[2 * i + 1];
        const int32_t *k = c->kk + (size_t)i * c->ksize;
        uint8_t *d = dst + (size_t)i * stride;
        for (size_t x = 0; x < stride; x++) {
            int32_t ss = 1 << (PRECISION_BITS - 1);
            for (int y = 0; y < ymax; y++) ss += src[(size_t)(y + ymin) * stride + x] * k[y];
            d[x] = clip8(ss);
        }
    }
}

/* ImagingResampleInner for the window: horizontal pass (if the width
 * changes) over the input rows the window's output rows read, then the
 * vertical pass (if the height changes). */
static ps_status bicubic_window(const img_image *in, int out_w, int out_h, int x0, int y0, int w,
                                int h, img_image *out, ps_err *err) {
    int C = in->channels;
    bool need_h = out_w != in->w, need_v = out_h != in->h;
    coeffs ch = {0}, cv = {0};
    uint8_t *tmp = NULL;
    ps_status st;
    if ((st = coeffs_init(&ch, in->w, out_w, x0, w, err))) goto fail;
    if ((st = coeffs_init(&cv, in->h, out_h, y0, h, err))) goto fail;
    /* input rows the window's output rows read */
    int r0 = need_v ? cv.bounds[0] : y0;
    int r1 = need_v ? cv.bounds[2 * (h - 1)] + cv.bounds[2 * (h - 1) + 1] : y0 + h;
    const uint8_t *src = in->pix;
    int src_w = in->w, base = 0;
    if (need_h) {
        tmp = malloc((size_t)(r1 - r0) * w * C);
        if (!tmp) {
            st = ps_errf(err, PS_ENOMEM, "resize: no memory for a %dx%d intermediate", w, r1 - r0);
            goto fail;
        }
        pass_h(in->pix, in->w, C, r0, r1 - r0, &ch, w, tmp);
        src = tmp;
        src_w = w;
        base = r0;
    } else {
        src += (size_t)x0 * C; /* same width: the window's columns of the input */
    }
    if (need_v) {
        if (need_h) {
            pass_v(src, w, C, base, &cv, h, out->pix);
        } else { /* rows of the input, window columns only */
            for (int i = 0; i < h; i++) {
                int ymin = cv.bounds[2 * i], ymax = cv.bounds[2 * i + 1];
                const int32_t *k = cv.kk + (size_t)i * cv.ksize;
                for (int x = 0; x < w * C; x++) {
                    int32_t ss = 1 << (PRECISION_BITS - 1);
                    for (int y = 0; y < ymax; y++) ss += src[(size_t)(y + ymin) * src_w * C + x] * k[y];
                    out->pix[((size_t)i * w) * C + x] = clip8(ss);
                }
            }
        }
    } else { /* height unchanged: the window's rows of the intermediate */
        for (int i = 0; i < h; i++)
            memcpy(out->pix + (size_t)i * w * C, src + (size_t)(y0 + i - base) * src_w * C, (size_t)w * C);
    }
fail:
    coeffs_free(&ch);
    coeffs_free(&cv);
    free(tmp);
    return st;
}

/* ImagingScaleAffine: out[y][x] = in[(int)yo][(int)xo], xo accumulated. */
static ps_status nearest_window(const img_image *in, int out_w, int out_h, int x0, int y0, int w,
                                int h, img_image *out, ps_err *err) {
    int C = in->channels;
    int *xin = malloc(sizeof(int) * (size_t)w);
    if (!xin) return ps_errf(err, PS_ENOMEM, "resize: no memory for %d indices", w);
    double ax = (double)(float)in->w / out_w, ay = (double)(float)in->h / out_h;
    double xo = ax * 0.5;
    for (int x = 0; x < x0 + w; x++, xo += ax)
        if (x >= x0) xin[x - x0] = xo < 0.0 ? -1 : (int)xo;
    double yo = ay * 0.5;
    for (int y = 0; y < y0 + h; y++, yo += ay) {
        if (y < y0) continue;
        int yi = yo < 0.0 ? -1 : (int)yo;
        uint8_t *d = out->pix + (size_t)(y - y0) * w * C;
        memset(d, 0, (size_t)w * C);
        if (yi < 0 || yi >= in->h) continue;
        for (int x = 0; x < w; x++)
            if (xin[x] >= 0 && xin[x] < in->w)
                memcpy(d + (size_t)x * C, in->pix + ((size_t)yi * in->w + xin[x]) * C, (size_t)C);
    }
    free(xin);
    return PS_OK;
}

static uint8_t muldiv255(unsigned a, unsigned b) {
    unsigned t = a * b + 128;
    return (uint8_t)(((t >> 8) + t) >> 8);
}

/* rgbA2rgba / la2La: colour channels times alpha (the last channel). */
static void premultiply(uint8_t *p, size_t n, int C) {
    for (size_t i = 0; i < n; i++, p += C)
        for (int c = 0; c < C - 1; c++) p[c] = muldiv255(p[c], p[C - 1]);
}

/* rgba2rgbA / La2lA: alpha 0 or 255 unchanged, else min(255, 255 c / a). */
static void unpremultiply(uint8_t *p, size_t n, int C) {
    for (size_t i = 0; i < n; i++, p += C) {
        unsigned a = p[C - 1];
        if (a == 0 || a == 255) continue;
        for (int c = 0; c < C - 1; c++) {
            unsigned v = 255u * p[c] / a;
            p[c] = (uint8_t)(v > 255 ? 255 : v);
        }
    }
}

ps_status img_resize_window(const img_image *in, int out_w, int out_h, int x0, int y0, int w,
                            int h, img_image *out, ps_err *err) {
    memset(out, 0, sizeof *out);
    if (out_w <= 0 || out_h <= 0 || x0 < 0 || y0 < 0 || w <= 0 || h <= 0 || x0 + w > out_w ||
        y0 + h > out_h)
        return ps_errf(err, PS_EINVAL, "resize to %dx%d: window %dx%d at (%d, %d) is outside it",
                       out_w, out_h, w, h, x0, y0);
    ps_status st = img_alloc(out, w, h, in->mode, err);
    if (st) return st;
    memcpy(out->palette, in->palette, sizeof out->palette);
    out->n_palette = in->n_palette;
    int C = in->channels;
    if (out_w == in->w && out_h == in->h) { /* Pillow returns a copy */
        for (int y = 0; y < h; y++)
            memcpy(out->pix + (size_t)y * w * C, in->pix + ((size_t)(y0 + y) * in->w + x0) * C,
                   (size_t)w * C);
        return PS_OK;
    }
    if (in->mode == IMG_MODE_1 || in->mode == IMG_MODE_P)
        st = nearest_window(in, out_w, out_h, x0, y0, w, h, out, err);
    else if (in->mode == IMG_MODE_RGBA || in->mode == IMG_MODE_LA) {
        img_image pre;
        size_t n = (size_t)in->w * in->h;
        if ((st = img_alloc(&pre, in->w, in->h, in->mode, err)) == PS_OK) {
            memcpy(pre.pix, in->pix, n * C);
            premultiply(pre.pix, n, C);
            st = bicubic_window(&pre, out_w, out_h, x0, y0, w, h, out, err);
            if (st == PS_OK) unpremultiply(out->pix, (size_t)w * h, C);
        }
        img_free(&pre);
    } else {
        st = bicubic_window(in, out_w, out_h, x0, y0, w, h, out, err);
    }
    if (st) img_free(out);
    return st;
}
