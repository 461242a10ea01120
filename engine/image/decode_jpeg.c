/* JPEG decoding with libjpeg-turbo, configured as Pillow 9.4's decoder is
 * (JpegDecode.c: library defaults, out_color_space from the mode; 4-component
 * data read as "CMYK;I", i.e. inverted here).
 *
 * Errors: libjpeg's error_exit longjmps back with its message. A premature
 * end of data (libjpeg's JWRN_JPEG_EOF warning, on which it would pad the
 * image with gray) is an error, as it is for Pillow unless
 * LOAD_TRUNCATED_IMAGES; other corrupt-data warnings are ignored as Pillow
 * ignores them. Like Pillow, decoding stops after the last scanline, so a
 * baseline file missing only its EOI marker decodes. Progressive files with
 * an absurd number of scans (a known decompression-time attack) are refused. */
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h> /* needs stdio.h / stddef.h first */
#include <jerror.h>

#include "image.h"

#define JPEG_MAX_SCANS 1000

typedef struct {
    struct jpeg_error_mgr pub;
    struct jpeg_progress_mgr progress;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX + 64];
    ps_status code;
} jpeg_ctx;

static void on_error_exit(j_common_ptr cinfo) {
    jpeg_ctx *c = (jpeg_ctx *)cinfo->err;
    char buf[JMSG_LENGTH_MAX];
    cinfo->err->format_message(cinfo, buf);
    snprintf(c->msg, sizeof c->msg, "%s", buf);
    c->code = PS_EFORMAT;
    longjmp(c->jb, 1);
}

static void on_emit_message(j_common_ptr cinfo, int level) {
    jpeg_ctx *c = (jpeg_ctx *)cinfo->err;
    if (level == -1 && cinfo->err->msg_code == JWRN_JPEG_EOF) {
        snprintf(c->msg, sizeof c->msg, "file is truncated (data ends before the image is complete)");
        c->code = PS_EFORMAT;
        longjmp(c->jb, 1);
    }
    if (level == -1) cinfo->err->num_warnings++;
}

static void on_progress(j_common_ptr cinfo) {
    jpeg_ctx *c = (jpeg_ctx *)cinfo->err;
    if (cinfo->is_decompressor && ((j_decompress_ptr)cinfo)->input_scan_number > JPEG_MAX_SCANS) {
        snprintf(c->msg, sizeof c->msg, "progressive file has more than %d scans", JPEG_MAX_SCANS);
        c->code = PS_EFORMAT;
        longjmp(c->jb, 1);
    }
}

static ps_status check_limits(int w, int h, const img_limits *lim, ps_err *err) {
    if (w > lim->max_side || h > lim->max_side || (int64_t)w * h > lim->max_pixels)
        return ps_errf(err, PS_ETOOLARGE,
                       "image is %dx%d (%lld pixels); the limit is %lld pixels and %d per side", w, h,
                       (long long)w * h, (long long)lim->max_pixels, lim->max_side);
    return PS_OK;
}

ps_status img_decode_jpeg(const void *data, size_t n, const img_limits *lim_in, img_image *out,
                          ps_err *err) {
    img_limits lim = lim_in ? *lim_in : img_limits_default();
    struct jpeg_decompress_struct cinfo;
    /* volatile: modified between setjmp and a longjmp back to it */
    jpeg_ctx ctx;
    img_image *volatile result = out;
    memset(out, 0, sizeof *out);
    memset(&ctx, 0, sizeof ctx);
    cinfo.err = jpeg_std_error(&ctx.pub);
    ctx.pub.error_exit = on_error_exit;
    ctx.pub.emit_message = on_emit_message;
    if (setjmp(ctx.jb)) {
        jpeg_destroy_decompress(&cinfo);
        img_free(result);
        if (ctx.code != PS_EFORMAT) return ctx.code;
        return ps_errf(err, PS_EFORMAT, "jpeg: %s", ctx.msg);
    }
    jpeg_create_decompress(&cinfo);
    ctx.progress.progress_monitor = on_progress;
    cinfo.progress = &ctx.progress;
    jpeg_mem_src(&cinfo, (const unsigned char *)data, (unsigned long)n);
    if (jpeg_read_header(&cinfo, TRUE) != JPEG_HEADER_OK) {
        jpeg_destroy_decompress(&cinfo);
        return ps_errf(err, PS_EFORMAT, "jpeg: the file holds tables only, no image");
    }
    img_mode mode;
    switch (cinfo.num_components) {
    case 1: mode = IMG_MODE_L; cinfo.out_color_space = JCS_GRAYSCALE; break;
    case 3: mode = IMG_MODE_RGB; cinfo.out_color_space = JCS_RGB; break;
    case 4: mode = IMG_MODE_CMYK; cinfo.out_color_space = JCS_CMYK; break;
    default: {
        int nc = cinfo.num_components;
        jpeg_destroy_decompress(&cinfo);
        return ps_errf(err, PS_EFORMAT, "jpeg: %d color components (1, 3 or 4 are supported)", nc);
    }
    }
    ps_status st = check_limits((int)cinfo.image_width, (int)cinfo.image_height, &lim, err);
    if (st == PS_OK) st = img_alloc(out, (int)cinfo.image_width, (int)cinfo.image_height, mode, err);
    if (st) {
        jpeg_destroy_decompress(&cinfo);
        img_free(out);
        return st;
    }
    jpeg_start_decompress(&cinfo);
    if ((int)cinfo.output_components != out->channels) {
        snprintf(ctx.msg, sizeof ctx.msg, "decoder gives %d components, expected %d",
                 cinfo.output_components, out->channels);
        ctx.code = PS_EFORMAT;
        longjmp(ctx.jb, 1);
    }
    size_t stride = (size_t)out->w * (size_t)out->channels;
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = out->pix + (size_t)cinfo.output_scanline * stride;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    if (mode == IMG_MODE_CMYK) /* Adobe stores inverted CMYK; Pillow reads "CMYK;I" */
        for (size_t i = 0; i < stride * (size_t)out->h; i++) out->pix[i] = (uint8_t)(255 - out->pix[i]);
    jpeg_destroy_decompress(&cinfo); /* not finish: Pillow stops at the last scanline too */
    return PS_OK;
}
