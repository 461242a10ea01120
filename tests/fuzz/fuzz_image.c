/* Fuzz target: JPEG/PNG decoding and the CLIP transform on arbitrary bytes.
 * Any input must give PS_OK or a clean error, never a crash, leak or hang.
 * Limits are small so mutated headers cannot make the run slow. */
#include <stdint.h>
#include <stdlib.h>

#include "image/clip_preprocess.h"
#include "image/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    img_limits lim = {1 << 20, 4096};
    img_image im;
    ps_err err;
    if (img_decode(data, size, &lim, &im, &err) != PS_OK) return 0;
    clip_image_cfg cfg = clip_image_cfg_openai(16);
    float px[3 * 16 * 16];
    uint8_t rgb[3 * 16 * 16];
    clip_preprocess(&im, &cfg, px, rgb, &err);
    img_free(&im);
    return 0;
}
