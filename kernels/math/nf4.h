/* NF4 (4-bit NormalFloat) and double-quantisation math shared by the C code
 * and the CUDA kernels: the two code tables, nibble access and the block-scale
 * and element formulas, each written once.
 *
 * Mirrors bitsandbytes @ 95f9af30 as documented in
 * shared/fixtures/llama-tiny/README.md section 6: blocks of 64 consecutive
 * elements of the row-major weight, FIRST element in the HIGH nibble,
 *   absmax'[b] = dq_code[absmax_q8[b]] * absmax2[b / 256] + offset
 *   w'[i]      = nf4_code[q[i]] * absmax'[i / 64]
 * with float32 rounding after every operation (never a fused multiply-add):
 * that is what makes our dequantised weights bit-identical to bitsandbytes'.
 *
 * Does not quantise whole tensors or own memory: see kernels/nf4_quant.h.
 * The literal tables were printed by tools/gen_nf4_tables.py from the
 * fixture's `nf4.code` and `dq.code`; tests/unit/test_nf4_quant.c compares
 * them bit for bit against that file. */
#ifndef PS_MATH_NF4_H
#define PS_MATH_NF4_H

#include <stdint.h>

#include "base/hd.h"

/* bitsandbytes get_4bit_type("nf4") == create_normal_map(), ascending; index 7 is 0.0 */
#define PS_NF4_CODE_VALUES { \
    -1.0f, -0.696192801f, -0.525073051f, -0.394917488f, \
    -0.284441382f, -0.18477343f, -0.0910500363f, 0.0f, \
    0.0795802996f, 0.160930201f, 0.246112302f, 0.337915242f, \
    0.440709829f, 0.562617004f, 0.722956836f, 1.0f \
}

/* bitsandbytes create_dynamic_map(signed=True), 256 values ascending, [127] == 0.0 */
#define PS_DQ_CODE_VALUES { \
    -0.992968738f, -0.978906214f, -0.96484375f, -0.950781226f, -0.936718702f, \
    -0.922656238f, -0.908593774f, -0.89453125f, -0.880468726f, -0.866406202f, \
    -0.852343738f, -0.838281214f, -0.82421875f, -0.810156226f, -0.796093702f, \
    -0.782031238f, -0.767968774f, -0.75390625f, -0.739843786f, -0.725781262f, \
    -0.711718798f, -0.697656274f, -0.68359375f, -0.669531286f, -0.655468762f, \
    -0.641406238f, -0.627343774f, -0.61328125f, -0.599218726f, -0.585156262f, \
    -0.571093798f, -0.557031274f, -0.54296875f, -0.528906226f, -0.514843762f, \
    -0.500781238f, -0.486718774f, -0.47265625f, -0.458593726f, -0.444531262f, \
    -0.430468738f, -0.416406214f, -0.40234375f, -0.388281226f, -0.374218762f, \
    -0.360156238f, -0.346093714f, -0.33203125f, -0.317968726f, -0.303906262f, \
    -0.289843738f, -0.275781274f, -0.26171875f, -0.247656256f, -0.233593762f, \
    -0.219531253f, -0.205468744f, -0.19140625f, -0.177343741f, -0.163281247f, \
    -0.149218753f, -0.135156244f, -0.12109375f, -0.107031256f, -0.0985937491f, \
    -0.0957812443f, -0.0929687545f, -0.0901562497f, -0.0873437524f, -0.0845312476f, \
    -0.0817187428f, -0.078906253f, -0.0760937482f, -0.0732812509f, -0.0704687461f, \
    -0.0676562563f, -0.0648437515f, -0.0620312467f, -0.0592187531f, -0.0564062484f, \
    -0.053593751f, -0.05078125f, -0.047968749f, -0.0451562516f, -0.0423437469f, \
    -0.0395312496f, -0.0367187522f, -0.0339062475f, -0.0310937501f, -0.0282812472f, \
    -0.0254687499f, -0.0226562507f, -0.0198437497f, -0.0170312505f, -0.0142187504f, \
    -0.0114062503f, -0.00971874967f, -0.00915624946f, -0.00859375019f, -0.00803124998f, \
    -0.00746874977f, -0.00690625003f, -0.00634374982f, -0.00578125007f, -0.00521875033f, \
    -0.00465624966f, -0.00409374991f, -0.00353124971f, -0.00296874996f, -0.00240624999f, \
    -0.00184375001f, -0.00128124992f, -0.000943750085f, -0.000831249985f, -0.00071875006f, \
    -0.000606250076f, -0.000493750034f, -0.000381250022f, -0.000268750038f, -0.000156250011f, \
    -8.87499991e-05f, -6.62500024e-05f, -4.37499984e-05f, -2.12499981e-05f, -7.7499999e-06f, \
    -3.25000019e-06f, -5.50000038e-07f, 0.0f, 5.50000038e-07f, 3.25000019e-06f, \
    7.7499999e-06f, 2.12499981e-05f, 4.37499984e-05f, 6.62500024e-05f, 8.87499991e-05f, \
    0.000156250011f, 0.000268750038f, 0.000381250022f, 0.000493750034f, 0.000606250076f, \
    0.00071875006f, 0.000831249985f, 0.000943750085f, 0.00128124992f, 0.00184375001f, \
    0.00240624999f, 0.00296874996f, 0.00353124971f, 0.00409374991f, 0.00465624966f, \
    0.00521875033f, 0.00578125007f, 0.00634374982f, 0.00690625003f, 0.00746874977f, \
    0.00803124998f, 0.00859375019f, 0.00915624946f, 0.00971874967f, 0.0114062503f, \
    0.0142187504f, 0.0170312505f, 0.0198437497f, 0.0226562507f, 0.0254687499f, \
    0.0282812472f, 0.0310937501f, 0.0339062475f, 0.0367187522f, 0.0395312496f, \
    0.0423437469f, 0.0451562516f, 0.047968749f, 0.05078125f, 0.053593751f, \
    0.0564062484f, 0.0592187531f, 0.0620312467f, 0.0648437515f, 0.0676562563f, \
    0.0704687461f, 0.0732812509f, 0.0760937482f, 0.078906253f, 0.0817187428f, \
    0.0845312476f, 0.0873437524f, 0.0901562497f, 0.0929687545f, 0.0957812443f, \
    0.0985937491f, 0.107031256f, 0.12109375f, 0.135156244f, 0.149218753f, \
    0.163281247f, 0.177343741f, 0.19140625f, 0.205468744f, 0.219531253f, \
    0.233593762f, 0.247656256f, 0.26171875f, 0.275781274f, 0.289843738f, \
    0.303906262f, 0.317968726f, 0.33203125f, 0.346093714f, 0.360156238f, \
    0.374218762f, 0.388281226f, 0.40234375f, 0.416406214f, 0.430468738f, \
    0.444531262f, 0.458593726f, 0.47265625f, 0.486718774f, 0.500781238f, \
    0.514843762f, 0.528906226f, 0.54296875f, 0.557031274f, 0.571093798f, \
    0.585156262f, 0.599218726f, 0.61328125f, 0.627343774f, 0.641406238f, \
    0.655468762f, 0.669531286f, 0.68359375f, 0.697656274f, 0.711718798f, \
    0.725781262f, 0.739843786f, 0.75390625f, 0.767968774f, 0.782031238f, \
    0.796093702f, 0.810156226f, 0.82421875f, 0.838281214f, 0.852343738f, \
    0.866406202f, 0.880468726f, 0.89453125f, 0.908593774f, 0.922656238f, \
    0.936718702f, 0.950781226f, 0.96484375f, 0.978906214f, 0.992968738f, \
    1.0f \
}

/* Host copies of the tables (kernels/math/nf4_tables.c). CUDA code builds its
 * own __constant__ arrays from the same brace lists. */
extern const float ps_nf4_code[16];
extern const float ps_dq_code[256];

#define PS_NF4_ZERO_CODE 7 /* nf4_code[7] == 0.0: the pad nibble when n is odd */

/* 4-bit code of element i of a packed array: byte i/2, high nibble first. */
PS_HD static inline uint8_t ps_nf4_code_at(const uint8_t *packed, int64_t i) {
    uint8_t b = packed[i >> 1];
    return (i & 1) ? (uint8_t)(b & 0x0f) : (uint8_t)(b >> 4);
}

/* a * b rounded to float32 and kept as a separate operation. GCC contracts
 * a * b + c into one FMA under -std=gnu11 (and nvcc does by default); the
 * empty asm makes the compiler treat the product as an opaque register value,
 * so the add that follows rounds on its own, as bitsandbytes does. */
PS_HD static inline float ps_fmul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    float p = a * b;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    __asm__("" : "+x"(p));
#elif defined(__GNUC__) && defined(__aarch64__)
    __asm__("" : "+w"(p));
#else
    volatile float v = p;
    p = v;
#endif
    return p;
#endif
}

/* Double-quantised block scale: dq_value = dq_code[absmax_q8[b]],
 * absmax2 = absmax2[b / 256]. Multiply, round, add, round. */
PS_HD static inline float ps_nf4_dq_scale(float dq_value, float absmax2, float offset) {
    return ps_fmul_rn(dq_value, absmax2) + offset;
}

/* Scale of 64-block b: the plain absmax[b] when absmax is not NULL, else the
 * double-quantised absmax'[b]. dq_code is ps_dq_code on the host (a
 * __constant__ copy on CUDA). */
PS_HD static inline float ps_nf4_block_scale(const float *absmax, const uint8_t *absmax_q8,
                                             const float *absmax2, float offset,
                                             const float *dq_code, int64_t b) {
    if (absmax) return absmax[b];
    return ps_nf4_dq_scale(dq_code[absmax_q8[b]], absmax2[b / 256], offset);
}

/* One dequantised element: nf4_code[q] * block scale (float32). */
PS_HD static inline float ps_nf4_value(float code_value, float scale) { return code_value * scale; }

/* Nearest NF4 code of a scaled value s in [-1, 1]: the number of the 15
 * midpoints mid[k] = (nf4[k] + nf4[k+1]) / 2 (float32, ascending) that s
 * exceeds, so an exact tie goes to the lower code (torch.bucketize in
 * bitsandbytes' default backend; the CUDA decision tree dQuantizeNF4 agrees).
 * Counted by a 4-step binary search; it never reads past mid[14]. */
PS_HD static inline uint8_t ps_nf4_nearest(float s, const float *mid) {
    int q = s > mid[7] ? 8 : 0;
    q += s > mid[q + 3] ? 4 : 0;
    q += s > mid[q + 1] ? 2 : 0;
    q += s > mid[q] ? 1 : 0;
    return (uint8_t)q;
}

#endif
