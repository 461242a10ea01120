/* f16 / bf16 <-> f32 conversions shared by the C and CUDA code.
 * Round-to-nearest-even on the way down, exact on the way up. */
#ifndef PS_MATH_HALF_H
#define PS_MATH_HALF_H

#include <stdint.h>
#include <string.h>

#include "base/hd.h"

PS_HD static inline float ps_bits_to_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
PS_HD static inline uint32_t ps_f32_to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

PS_HD static inline float ps_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 0) {
        if (mant == 0) return ps_bits_to_f32(sign);
        /* subnormal: value = mant * 2^-24 */
        float f = (float)mant * 5.9604644775390625e-8f;
        return sign ? -f : f;
    }
    if (exp == 31) return ps_bits_to_f32(sign | 0x7f800000u | (mant << 13));
    return ps_bits_to_f32(sign | ((exp + 112) << 23) | (mant << 13));
}

PS_HD static inline uint16_t ps_f32_to_f16(float f) {
    uint32_t x = ps_f32_to_bits(f);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* overflow -> inf */
    if (ax < 0x38800000u) { /* subnormal or zero in f16 */
        float a = ps_bits_to_f32(ax) * 16777216.0f; /* * 2^24: exact */
        uint32_t m = (uint32_t)a;
        float rem = a - (float)m;
        if (rem > 0.5f || (rem == 0.5f && (m & 1))) m++;
        return (uint16_t)(sign | m);
    }
    uint32_t r = ax + 0xfff + ((ax >> 13) & 1) - 0x38000000u; /* rebias 127->15, RNE */
    return (uint16_t)(sign | (r >> 13));
}

PS_HD static inline float ps_bf16_to_f32(uint16_t b) { return ps_bits_to_f32((uint32_t)b << 16); }

PS_HD static inline uint16_t ps_f32_to_bf16(float f) {
    uint32_t x = ps_f32_to_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

#endif
