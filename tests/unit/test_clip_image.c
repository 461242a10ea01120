/* CLIP image pipeline against clip-tiny/ref/preprocess.safetensors (Pillow 9.4
 * + torchvision 0.14, libjpeg-turbo 2.1.5, libpng 1.6.39):
 *   decoded pixels in Pillow's mode (decoded_native, palette) and after
 *   convert('RGB') (decoded_rgb): equal;
 *   resize geometry and crop offsets (images.json): equal;
 *   resized + cropped RGB uint8 (resized_cropped_rgb): equal;
 *   normalised pixel tensors (pixel_values): bit-exact (the README shows the
 *   reference is reproducible bit for bit with these rules; tolerance 0).
 * Plus decoder error cases: truncated and lying files, limits, other formats. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/safetensors.h"
#include "image/clip_preprocess.h"
#include "image/image.h"
#include "testutil.h"


/* Number of differing bytes; prints the first difference. */
static int64_t u8_diff(const char *what, const uint8_t *got, const uint8_t *want, size_t n) {
    int64_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i] && bad++ == 0)
            fprintf(stderr, "  %s: first difference at byte %zu: got %d want %d\n", what, i, got[i],
                    want[i]);
    return bad;
}

static const st_tensor *need(const st_set *s, const char *name, size_t nbytes) {
    const st_tensor *t = st_find(s, name);
    TU_CHECK(t && t->nbytes == nbytes, "ref tensor '%s' missing or %zu bytes (want %zu)", name,
             t ? t->nbytes : 0, nbytes);
    return t && t->nbytes == nbytes ? t : NULL;
}

static void check_decode(const st_set *ref, json_t *item, const img_image *im) {
    const char *name = json_string_value(json_object_get(item, "name"));
    const char *mode = json_string_value(json_object_get(item, "pil_mode"));
    char key[256];
    TU_CHECK(strcmp(img_mode_name(im->mode), mode) == 0, "%s: mode %s, Pillow %s", name,
             img_mode_name(im->mode), mode);
    TU_CHECK(im->w == json_integer_value(json_object_get(item, "width")) &&
                 im->h == json_integer_value(json_object_get(item, "height")),
             "%s: size %dx%d", name, im->w, im->h);
    size_t npix = (size_t)im->w * im->h;
    if (im->mode != IMG_MODE_RGB) {
        snprintf(key, sizeof key, "%s.decoded_native", name);
        const st_tensor *t = need(ref, key, npix * im->channels);
        if (t) TU_CHECK(u8_diff(key, im->pix, t->data, t->nbytes) == 0, "%s differs", key);
    }
    if (im->mode == IMG_MODE_P) {
        snprintf(key, sizeof key, "%s.palette", name);
        const st_tensor *t = st_find(ref, key);
        TU_CHECK(t && (int64_t)im->n_palette == t->shape[0], "%s: %d palette entries", key, im->n_palette);
        if (t) TU_CHECK(u8_diff(key, im->palette, t->data, t->nbytes) == 0, "%s differs", key);
    }
    img_image rgb;
    TU_CHECK(img_to_rgb(im, &rgb, NULL) == PS_OK, "%s: to rgb", name);
    snprintf(key, sizeof key, "%s.decoded_rgb", name);
    const st_tensor *t = need(ref, key, npix * 3);
    if (t) TU_CHECK(u8_diff(key, rgb.pix, t->data, t->nbytes) == 0, "%s differs", key);
    img_free(&rgb);
}

static void check_preprocess(const st_set *ref, json_t *item, int idx, const img_image *im,
                             const clip_image_cfg *cfg) {
    const char *name = json_string_value(json_object_get(item, "name"));
    int rw, rh, S = cfg->crop_w;
    json_t *rt = json_object_get(item, "resize_to");
    clip_resize_size(im->w, im->h, cfg->shortest_edge, &rw, &rh, NULL);
    TU_CHECK(rw == json_integer_value(json_array_get(rt, 0)) &&
                 rh == json_integer_value(json_array_get(rt, 1)),
             "%s: resize to %dx%d", name, rw, rh);
    TU_CHECK(clip_crop_offset(rw, S) == json_integer_value(json_object_get(item, "crop_left")) &&
                 clip_crop_offset(rh, S) == json_integer_value(json_object_get(item, "crop_top")),
             "%s: crop offsets (%d, %d)", name, clip_crop_offset(rw, S), clip_crop_offset(rh, S));
    float *px = malloc(sizeof(float) * 3 * S * S);
    uint8_t *rgb = malloc((size_t)3 * S * S);
    ps_err err = {0};
    TU_CHECK(clip_preprocess(im, cfg, px, rgb, &err) == PS_OK, "%s: %s", name, err.msg);
    const st_tensor *tr = st_find(ref, "resized_cropped_rgb"), *tp = st_find(ref, "pixel_values");
    const uint8_t *want_rgb = (const uint8_t *)tr->data + (size_t)idx * 3 * S * S;
    int64_t bad = u8_diff(name, rgb, want_rgb, (size_t)3 * S * S);
    float *want_px = malloc(sizeof(float) * 3 * S * S);
    memcpy(want_px, (const float *)tp->data + (size_t)idx * 3 * S * S, sizeof(float) * 3 * S * S);
    tu_cmp c = tu_compare(px, want_px, 3 * S * S);
    printf("  %-20s %-4s %3dx%-3d -> %dx%d  rgb diff %lld  pixel max_abs %.3g\n", name,
           img_mode_name(im->mode), im->w, im->h, rw, rh, (long long)bad, c.max_abs);
    TU_CHECK(bad == 0, "%s: %lld resized RGB bytes differ", name, (long long)bad);
    TU_CHECK(c.max_abs == 0.0, "%s: pixel_values max_abs %.3g at %lld", name, c.max_abs,
             (long long)c.max_index);
    free(want_px);
    free(px);
    free(rgb);
}

static void expect_fail(const char *what, const uint8_t *data, size_t n, const img_limits *lim,
                        ps_status want, const char *msg_part) {
    img_image im;
    ps_err err = {0};
    ps_status st = img_decode(data, n, lim, &im, &err);
    TU_CHECK(st == want && strstr(err.msg, msg_part) && im.pix == NULL,
             "%s: status %s msg '%s' (want %s, '%s')", what, ps_status_name(st), err.msg,
             ps_status_name(want), msg_part);
    if (st == PS_OK) img_free(&im);
    else printf("  %-34s -> %s: %s\n", what, ps_status_name(st), err.msg);
}

/* A PNG signature + IHDR of the given size (valid CRC) and nothing else. */
static size_t png_header_only(uint8_t *b, uint32_t w, uint32_t h) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    uint8_t ihdr[17] = {'I', 'H', 'D', 'R', w >> 24, w >> 16, w >> 8, w, h >> 24, h >> 16, h >> 8, h,
                        8, 2, 0, 0, 0};
    uint32_t crc = 0xffffffffu;
    for (int i = 0; i < 17; i++) {
        crc ^= ihdr[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1)));
    }
    crc ^= 0xffffffffu;
    memcpy(b, sig, 8);
    uint8_t len[4] = {0, 0, 0, 13}, c[4] = {crc >> 24, crc >> 16, crc >> 8, crc};
    memcpy(b + 8, len, 4);
    memcpy(b + 12, ihdr, 17);
    memcpy(b + 29, c, 4);
    return 33;
}

static void test_errors(const char *dir) {
    char path[4400];
    size_t n;
    snprintf(path, sizeof path, "%s/images/jpeg_baseline420_77x51.jpg", dir);
    uint8_t *jpg = (uint8_t *)tu_read_file(path, &n);
    expect_fail("truncated jpeg (half)", jpg, n / 2, NULL, PS_EFORMAT, "truncated");
    expect_fail("jpeg header only (200 bytes)", jpg, 200 < n ? 200 : n, NULL, PS_EFORMAT, "jpeg");
    img_limits small = {1000, 30000};
    expect_fail("jpeg over the pixel limit", jpg, n, &small, PS_ETOOLARGE, "77x51");
    free(jpg);
    snprintf(path, sizeof path, "%s/images/jpeg_progressive420_64x80.jpg", dir);
    jpg = (uint8_t *)tu_read_file(path, &n);
    expect_fail("truncated progressive jpeg", jpg, n - 40, NULL, PS_EFORMAT, "truncated");
    free(jpg);
    snprintf(path, sizeof path, "%s/images/png_rgb8_61x45.png", dir);
    uint8_t *png = (uint8_t *)tu_read_file(path, &n);
    expect_fail("truncated png", png, n / 2, NULL, PS_EFORMAT, "truncated");
    uint8_t *bad = malloc(n);
    memcpy(bad, png, n);
    bad[30] ^= 0x40; /* in the IHDR CRC */
    expect_fail("png with a corrupt IHDR", bad, n, NULL, PS_EFORMAT, "png");
    free(bad);
    free(png);
    uint8_t hdr[64];
    size_t hn = png_header_only(hdr, 100000, 100000);
    expect_fail("png header claiming 100000x100000", hdr, hn, NULL, PS_ETOOLARGE, "100000x100000");
    hn = png_header_only(hdr, 20, 20);
    expect_fail("png header without data", hdr, hn, NULL, PS_EFORMAT, "truncated");
    expect_fail("text", (const uint8_t *)"hello world", 11, NULL, PS_EFORMAT, "not a JPEG or PNG");
    expect_fail("gif", (const uint8_t *)"GIF89a\1\0\1\0", 10, NULL, PS_EFORMAT, "GIF");
    expect_fail("empty", (const uint8_t *)"", 0, NULL, PS_EFORMAT, "empty");
}

int main(void) {
    const char *root = tu_fixtures_or_skip("clip-tiny");
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/clip-tiny", root);
    st_set *ref = NULL;
    ps_err err = {0};
    TU_CHECK(st_open(tu_path("clip-tiny/ref/preprocess.safetensors"), &ref, &err) == PS_OK, "%s", err.msg);
    json_t *meta = json_load_file(tu_path("clip-tiny/ref/images.json"), 0, NULL);
    TU_CHECK(ref && meta, "reference files");
    if (!ref || !meta) return tu_finish("clip image");
    int S = (int)json_integer_value(json_object_get(meta, "image_size"));
    clip_image_cfg cfg = clip_image_cfg_openai(S);
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(meta, "images"), i, item) {
        char path[4400];
        size_t n;
        snprintf(path, sizeof path, "%s/%s", dir, json_string_value(json_object_get(item, "file")));
        uint8_t *data = (uint8_t *)tu_read_file(path, &n);
        img_image im;
        TU_CHECK(data && img_decode(data, n, NULL, &im, &err) == PS_OK, "%s: %s", path, err.msg);
        if (data && im.pix) {
            check_decode(ref, item, &im);
            check_preprocess(ref, item, (int)i, &im, &cfg);
            img_free(&im);
        }
        free(data);
    }
    TU_CHECK(i == 13, "%zu images", i);
    test_errors(dir);
    json_decref(meta);
    st_close(ref);
    return tu_finish("clip image");
}
