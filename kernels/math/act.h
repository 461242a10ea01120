/* Per-element activations and norm pieces shared by the C and CUDA backends. */
#ifndef PS_MATH_ACT_H
#define PS_MATH_ACT_H

#include <math.h>

#include "base/hd.h"

PS_HD static inline float ps_silu(float x) { return x / (1.0f + expf(-x)); }
/* CLIP's quick_gelu: x * sigmoid(1.702 x) */
PS_HD static inline float ps_quick_gelu(float x) { return x / (1.0f + expf(-1.702f * x)); }
/* exact (erf) GELU as torch.nn.functional.gelu */
PS_HD static inline float ps_gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }
PS_HD static inline float ps_relu(float x) { return x > 0.0f ? x : 0.0f; }

/* RoPE (HF rotate_half): inverse frequency of pair i of a D-wide head. Computed
 * in float as HF does (inv_freq is a float32 tensor there). */
PS_HD static inline float ps_rope_inv_freq(float theta, int i, int D) {
    return 1.0f / powf(theta, (float)(2 * i) / (float)D);
}

/* Rotates the pair (x[i], x[i + D/2]) by angle a. */
PS_HD static inline void ps_rope_rotate(float *lo, float *hi, float c, float s) {
    float a = *lo, b = *hi;
    *lo = a * c - b * s;
    *hi = b * c + a * s;
}

#endif
