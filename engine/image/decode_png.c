/* PNG decoding with libpng into Pillow 9.4's modes (PngImagePlugin.py:61-68
 * mode table; see image.h): png_set_strip_16 (high byte, "RGB;16B"),
 * png_set_expand_gray_1_2_4_to_8 for gray (1-bit becomes 0/255 = mode 1),
 * png_set_packing for palette indices, tRNS never applied, Adam7 through
 * png_set_interlace_handling.
 *
 * Errors: libpng's error callback longjmps back with its message (bad CRC in
 * a critical chunk, bad IHDR, zlib errors, ...); reading past the end of the
 * data is "truncated". The header is checked against the pixel limits before
 * any row is allocated. Like Pillow, chunks after the image data (and a
 * missing IEND) are not read. */
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"

typedef struct {
    const uint8_t *data;
    size_t n, pos;
    char msg[256];
} png_reader;

static void on_read(png_structp png, png_bytep out, size_t len) {
    png_reader *r = png_get_io_ptr(png);
    if (len > r->n - r->pos) {
        snprintf(r->msg, sizeof r->msg,
                 "file is truncated (needs %zu more bytes at offset %zu of %zu)", len,
                 r->pos, r->n);
        png_longjmp(png, 1);
    }
    memcpy(out, r->data + r->pos, len);
    r->pos += len;
}

static void on_error(png_structp png, png_const_charp msg) {
    png_reader *r = png_get_error_ptr(png);
    snprintf(r->msg, sizeof r->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

/* Chooses Pillow's mode for the IHDR and sets the libpng transforms. */
static img_mode png_mode(png_structp png, int depth, int color_type) {
    if (depth == 16) png_set_strip_16(png);
    switch (color_type) {
    case PNG_COLOR_TYPE_GRAY:
        if (depth < 8) png_set_expand_gray_1_2_4_to_8(png);
        return depth == 1 ? IMG_MODE_1 : IMG_MODE_L;
    case PNG_COLOR_TYPE_PALETTE:
        if (depth < 8) png_set_packing(png);
        return IMG_MODE_P;
    case PNG_COLOR_TYPE_GRAY_ALPHA: return IMG_MODE_LA;
    case PNG_COLOR_TYPE_RGB: return IMG_MODE_RGB;
    default: return IMG_MODE_RGBA;
    }
}

static ps_status check_limits(uint32_t w, uint32_t h, const img_limits *lim, ps_err *err) {
    if ((int64_t)w > lim->max_side || (int64_t)h > lim->max_side ||
        (int64_t)w * (int64_t)h > lim->max_pixels)
        return ps_errf(err, PS_ETOOLARGE,
                       "image is %ux%u (%llu pixels); the limit is %lld pixels and %d per side",
                       (unsigned)w, (unsigned)h, (unsigned long long)w * h, (long long)lim->max_pixels,
                       lim->max_side);
    return PS_OK;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

ps_status img_decode_png(const void *data, size_t n, const img_limits *lim_in, img_image *out,
                         ps_err *err) {
    img_limits lim = lim_in ? *lim_in : img_limits_default();
    const uint8_t *b = data;
    /* IHDR must be the first chunk: refuse a huge image before libpng reads on */
    if (n >= 24 && memcmp(b + 12, "IHDR", 4) == 0) {
        ps_status st = check_limits(be32(b + 16), be32(b + 20), &lim, err);
        if (st) {
            memset(out, 0, sizeof *out);
            return st;
        }
    }
    png_reader rd = {data, n, 0, {0}};
    png_bytep *volatile rows = NULL;
    ps_status volatile code = PS_EFORMAT;
    memset(out, 0, sizeof *out);
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &rd, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return ps_errf(err, PS_ENOMEM, "png: no memory for the decoder");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(rows);
        img_free(out);
        if (code != PS_EFORMAT) return code;
        return ps_errf(err, PS_EFORMAT, "png: %s", rd.msg);
    }
    png_set_read_fn(png, &rd, on_read);
    png_set_user_limits(png, 0x7fffffff, 0x7fffffff); /* our own limits below, with a better status */
    png_read_info(png, info);
    png_uint_32 w, h;
    int depth, color_type, interlace;
    png_get_IHDR(png, info, &w, &h, &depth, &color_type, &interlace, NULL, NULL);
    if ((code = check_limits(w, h, &lim, err)) != PS_OK) png_longjmp(png, 1);
    img_mode mode = png_mode(png, depth, color_type);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if ((code = img_alloc(out, (int)w, (int)h, mode, err)) != PS_OK) png_longjmp(png, 1);
    code = PS_EFORMAT;
    size_t stride = (size_t)w * (size_t)out->channels;
    if (png_get_rowbytes(png, info) != stride) {
        snprintf(rd.msg, sizeof rd.msg, "row of %zu bytes, expected %zu", (size_t)png_get_rowbytes(png, info), stride);
        png_longjmp(png, 1);
    }
    if (mode == IMG_MODE_P) {
        png_colorp pal;
        int n_pal = 0;
        if (!png_get_PLTE(png, info, &pal, &n_pal)) {
            snprintf(rd.msg, sizeof rd.msg, "palette image without a PLTE chunk");
            png_longjmp(png, 1);
        }
        for (int i = 0; i < n_pal && i < 256; i++) {
            out->palette[3 * i] = pal[i].red;
            out->palette[3 * i + 1] = pal[i].green;
            out->palette[3 * i + 2] = pal[i].blue;
        }
        out->n_palette = n_pal;
    }
    if (!(rows = malloc(sizeof(png_bytep) * h))) {
        code = ps_errf(err, PS_ENOMEM, "png: no memory for %u row pointers", (unsigned)h);
        png_longjmp(png, 1);
    }
    for (png_uint_32 y = 0; y < h; y++) rows[y] = out->pix + (size_t)y * stride;
    png_read_image(png, rows);
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    return PS_OK;
}
