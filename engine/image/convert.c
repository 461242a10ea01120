/* Pillow Image.convert('RGB') for every mode we decode.
 * Mirrors Pillow 9.4 libImaging/Convert.c: l2rgb / bit2rgb (replicate),
 * la2rgb / rgba2rgb (drop alpha, no compositing), p2rgb (palette lookup;
 * transparency ignored), cmyk2rgb (nk = 255 - k, c' = nk - MULDIV255(c, nk)). */
#include "image.h"

#include <string.h>

static uint8_t muldiv255(unsigned a, unsigned b) {
    unsigned t = a * b + 128;
    return (uint8_t)(((t >> 8) + t) >> 8);
}

static uint8_t clip8(int v) { return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v); }

ps_status img_to_rgb(const img_image *in, img_image *out, ps_err *err) {
    ps_status st = img_alloc(out, in->w, in->h, IMG_MODE_RGB, err);
    if (st) return st;
    size_t n = (size_t)in->w * (size_t)in->h;
    const uint8_t *s = in->pix;
    uint8_t *d = out->pix;
    for (size_t i = 0; i < n; i++, d += 3) {
        switch (in->mode) {
        case IMG_MODE_1: case IMG_MODE_L: d[0] = d[1] = d[2] = s[i]; break;
        case IMG_MODE_LA: d[0] = d[1] = d[2] = s[2 * i]; break;
        case IMG_MODE_P: memcpy(d, in->palette + 3 * s[i], 3); break;
        case IMG_MODE_RGB: memcpy(d, s + 3 * i, 3); break;
        case IMG_MODE_RGBA: memcpy(d, s + 4 * i, 3); break;
        case IMG_MODE_CMYK: {
            const uint8_t *p = s + 4 * i;
            int nk = 255 - p[3];
            for (int c = 0; c < 3; c++) d[c] = clip8(nk - muldiv255(p[c], (unsigned)nk));
        } break;
        }
    }
    return PS_OK;
}
