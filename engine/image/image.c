/* Image buffers, Pillow mode names, format sniffing and the decode limits. */
#include "image.h"

#include <stdlib.h>
#include <string.h>

img_limits img_limits_default(void) {
    img_limits l = {40 * 1000 * 1000, 30000};
    return l;
}

const char *img_mode_name(img_mode m) {
    switch (m) {
    case IMG_MODE_1: return "1";
    case IMG_MODE_L: return "L";
    case IMG_MODE_P: return "P";
    case IMG_MODE_LA: return "LA";
    case IMG_MODE_RGB: return "RGB";
    case IMG_MODE_RGBA: return "RGBA";
    case IMG_MODE_CMYK: return "CMYK";
    }
    return "?";
}

int img_mode_channels(img_mode m) {
    switch (m) {
    case IMG_MODE_LA: return 2;
    case IMG_MODE_RGB: return 3;
    case IMG_MODE_RGBA: case IMG_MODE_CMYK: return 4;
    default: return 1;
    }
}

ps_status img_alloc(img_image *im, int w, int h, img_mode mode, ps_err *err) {
    memset(im, 0, sizeof *im);
    if (w <= 0 || h <= 0)
        return ps_errf(err, PS_EINVAL, "image size %dx%d: both sides must be positive", w, h);
    im->w = w;
    im->h = h;
    im->mode = mode;
    im->channels = img_mode_channels(mode);
    size_t bytes = (size_t)w * (size_t)h * (size_t)im->channels;
    im->pix = malloc(bytes);
    if (!im->pix) return ps_errf(err, PS_ENOMEM, "image %dx%d %s: no memory for %zu bytes", w, h,
                                 img_mode_name(mode), bytes);
    for (int i = 0; i < 256; i++) /* Pillow's ImagingPaletteNew: a gray ramp */
        im->palette[3 * i] = im->palette[3 * i + 1] = im->palette[3 * i + 2] = (uint8_t)i;
    return PS_OK;
}

void img_free(img_image *im) {
    if (!im) return;
    free(im->pix);
    memset(im, 0, sizeof *im);
}

static const char *sniff_other(const uint8_t *b, size_t n) {
    if (n >= 6 && (memcmp(b, "GIF87a", 6) == 0 || memcmp(b, "GIF89a", 6) == 0)) return "GIF";
    if (n >= 12 && memcmp(b, "RIFF", 4) == 0 && memcmp(b + 8, "WEBP", 4) == 0) return "WebP";
    if (n >= 2 && b[0] == 'B' && b[1] == 'M') return "BMP";
    if (n >= 4 && (memcmp(b, "II*\0", 4) == 0 || memcmp(b, "MM\0*", 4) == 0)) return "TIFF";
    if (n >= 12 && memcmp(b + 4, "ftyp", 4) == 0) return "HEIF/AVIF";
    return NULL;
}

ps_status img_decode(const void *data, size_t n, const img_limits *lim, img_image *out,
                     ps_err *err) {
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    const uint8_t *b = data;
    memset(out, 0, sizeof *out);
    if (n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return img_decode_jpeg(data, n, lim, out, err);
    if (n >= 8 && memcmp(b, png_sig, 8) == 0) return img_decode_png(data, n, lim, out, err);
    const char *other = sniff_other(b, n);
    if (other)
        return ps_errf(err, PS_EFORMAT, "image format %s is not supported (send JPEG or PNG)", other);
    if (n == 0) return ps_errf(err, PS_EFORMAT, "image is empty (0 bytes)");
    return ps_errf(err, PS_EFORMAT,
                   "not a JPEG or PNG image (%zu bytes starting %02x %02x %02x %02x)", n, b[0],
                   n > 1 ? b[1] : 0, n > 2 ? b[2] : 0, n > 3 ? b[3] : 0);
}
