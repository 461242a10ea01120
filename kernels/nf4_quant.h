/* Host-side NF4 quantisation with optional double quantisation of the block
 * scales, bit-exact with bitsandbytes' quantize_4bit(blocksize=64,
 * quant_type="nf4", compress_statistics=True) (shared/fixtures/llama-tiny/
 * README.md section 6), and the matching dequantisation.
 *
 * Does not run on a device and does not read checkpoints: the model loader
 * converts its weight to float32, calls nf4_quantize, then uploads the arrays
 * behind nf4_host_view (or wraps a bnb-4bit checkpoint's arrays directly).
 *
 *   nf4_host q = {0};
 *   if (nf4_quantize(w, out, in, true, &q, &err) != PS_OK) goto fail;
 *   ps_weight lw = {.kind = PS_WEIGHT_NF4, .nf4 = nf4_host_view(&q)};
 *   ...
 *   nf4_host_free(&q);
 */
#ifndef PS_NF4_QUANT_H
#define PS_NF4_QUANT_H

#include <stdbool.h>
#include <stdint.h>

#include "ops.h"

/* An owning NF4 weight (out, in) in host memory. With double quantisation
 * absmax_q8/absmax2/offset are set and absmax is NULL; without, absmax is set
 * and absmax_q8/absmax2 are NULL. */
typedef struct {
    int64_t out, in;
    uint8_t *packed;    /* (ceil(out*in/2)) two codes per byte, first in the high nibble */
    uint8_t *absmax_q8; /* (nblocks) DQ codes of (absmax - offset) */
    float *absmax2;     /* (ceil(nblocks/256)) DQ block scales */
    float offset;       /* mean of absmax (double sum, rounded to float) */
    float *absmax;      /* (nblocks) plain block scales */
} nf4_host;

/* Number of 64-blocks and 256-blocks of a weight with n elements. */
int64_t nf4_n_blocks(int64_t n);
int64_t nf4_n_blocks2(int64_t n);

/* Quantises w (out, in) float32. Fails with PS_EINVAL on a non-positive shape
 * or a non-finite element (named by row and column), PS_ENOMEM when out of
 * memory; on failure q is left zeroed. An all-zero block gets scale 0 and
 * code 7 everywhere (bitsandbytes would compute 0 * inf = NaN there). */
ps_status nf4_quantize(const float *w, int64_t out, int64_t in, bool double_quant, nf4_host *q,
                       ps_err *err);
/* Frees q's arrays and zeroes it; accepts a zeroed or half-built struct. */
void nf4_host_free(nf4_host *q);
/* A non-owning view of q for ps_weight (dev = PS_DEV_CPU). */
ps_nf4 nf4_host_view(const nf4_host *q);

/* Scale of 64-block `block`: absmax, or the double-quantised absmax'. Host memory only. */
float nf4_block_scale(const ps_nf4 *w, int64_t block);
/* out (out*in) = w' = nf4_code[q] * scale, the bit-exact bitsandbytes recipe. Host memory only. */
void nf4_dequantize(const ps_nf4 *w, float *out);

#endif
