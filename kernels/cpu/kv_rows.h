/* Rows of a paged KV cache on the CPU in any cache dtype (F32, F16, BF16):
 * the attention kernels read a key or value row as floats, kv_store writes
 * one from floats. Mirrors the contract of ps_kv_layer (kernels/ops.h): the
 * store rounds to nearest-even (math/half.h), the load widens exactly, so
 * the attention math is the same f32 code whatever the cache holds. */
#ifndef PS_CPU_KV_ROWS_H
#define PS_CPU_KV_ROWS_H

#include <stdint.h>

#if defined(__AVX512F__) || defined(__F16C__)
#include <immintrin.h>
#endif

#include "math/half.h"
#include "ops.h"

/* The D floats of the row at element offset `off`: the row itself for F32
 * (no copy), else widened into buf. */
static inline const float *cpu_kv_row(const void *base, ps_dtype dt, int64_t off, int64_t D, float *buf) {
    if (dt == PS_DT_F32) return (const float *)base + off;
    const uint16_t *h = (const uint16_t *)base + off;
    int64_t d = 0;
    if (dt == PS_DT_BF16) {
        for (; d < D; d++) buf[d] = ps_bf16_to_f32(h[d]); /* a shift: the compiler vectorises it */
        return buf;
    }
#ifdef __AVX512F__
    for (; d + 16 <= D; d += 16) /* the hardware conversion is exact, as ps_f16_to_f32 */
        _mm512_storeu_ps(buf + d, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + d))));
#elif defined(__F16C__)
    for (; d + 8 <= D; d += 8)
        _mm256_storeu_ps(buf + d, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + d))));
#endif
    for (; d < D; d++) buf[d] = ps_f16_to_f32(h[d]);
    return buf;
}

/* Stores n floats at element offset `off` of a cache tensor, rounded to its dtype. */
static inline void cpu_kv_put(void *base, ps_dtype dt, int64_t off, const float *src, int64_t n) {
    if (dt == PS_DT_F32) {
        float *dst = (float *)base + off;
        for (int64_t i = 0; i < n; i++) dst[i] = src[i];
        return;
    }
    uint16_t *dst = (uint16_t *)base + off;
    if (dt == PS_DT_BF16)
        for (int64_t i = 0; i < n; i++) dst[i] = ps_f32_to_bf16(src[i]);
    else
        for (int64_t i = 0; i < n; i++) dst[i] = ps_f32_to_f16(src[i]);
}

#endif
