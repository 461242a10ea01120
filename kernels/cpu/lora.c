/* Multi-adapter LoRA on the CPU (op_lora_bgmv, see ps_lora_batch in ops.h).
 *
 * cpu_lora_bgmv_ref is the oracle: per token, v = A x then y += scale * B v,
 * plain loops (16-bit A/B widened element by element). cpu_lora_bgmv is the
 * SGMV-style version: tokens are sorted by slot (counting sort, stable), each
 * slot's tokens are cut into chunks of at most LORA_CHUNK, and
 *   phase 1 (shrink, parallel over chunks): v[j] = A x[j] reading (and
 *            widening) each row of A once for the whole chunk;
 *   phase 2 (expand, parallel over chunks x blocks of outputs):
 *            y[j] += scale * B v[j] with B stored transposed (r, out), so each
 *            rank index is one contiguous vector axpy over the block.
 * The shrink sums in 16 lanes (lane = column mod 16) then a fixed tree, the
 * expand sums the rank index in order: a token's result depends only on its
 * own x and slot, whatever the batch around it (tested bit for bit).
 * A and B may be F32, F16 or BF16 (ps_lora_slot.dtype), widened exactly. */
#include <stdlib.h>
#include <string.h>

#include "cpu_backend.h"
#include "math/half.h"

#if defined(__F16C__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#define LORA_CHUNK 8       /* tokens sharing one pass over A / B */
#define LORA_OUT_BLOCK 64  /* outputs per expand work item (its widened Bt block
                            * of r x 64 floats stays on the worker's stack) */
#define LORA_STACK_T 2048  /* tokens handled without heap scratch */
#define LORA_STACK_V 16384 /* shrink floats handled without heap scratch */
#define LORA_KC 512        /* columns of A widened at a time (a multiple of 16) */
#define LORA_PAR_MIN_MACS (1 << 16) /* below this a call runs on one thread */

/* Element i of an F32/F16/BF16 array as float (exact widening). */
static inline float lora_ld(const void *p, ps_dtype dt, int64_t i) {
    if (dt == PS_DT_F16) return ps_f16_to_f32(((const uint16_t *)p)[i]);
    if (dt == PS_DT_BF16) return ps_bf16_to_f32(((const uint16_t *)p)[i]);
    return ((const float *)p)[i];
}

/* dst[k] = src[off + k] widened, 8 at a time where the build has AVX2 / F16C
 * (BF16: zero-extend and shift; F16: the IEEE conversion instruction, the
 * same values as ps_f16_to_f32), the scalar helpers of math/half.h otherwise. */
static void lora_widen(float *restrict dst, const void *src, ps_dtype dt, int64_t off, int64_t n) {
    const uint16_t *h = (const uint16_t *)src + off;
    if (dt == PS_DT_BF16) {
        int64_t k = 0;
#ifdef __AVX2__
        for (; k + 8 <= n; k += 8) {
            __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(h + k))), 16);
            _mm256_storeu_ps(dst + k, _mm256_castsi256_ps(w));
        }
#endif
        for (; k < n; k++) dst[k] = ps_bf16_to_f32(h[k]);
    } else if (dt == PS_DT_F16) {
        int64_t k = 0;
#ifdef __F16C__
        for (; k + 8 <= n; k += 8)
            _mm256_storeu_ps(dst + k, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + k))));
#endif
        for (; k < n; k++) dst[k] = ps_f16_to_f32(h[k]);
    } else {
        memcpy(dst, (const float *)src + off, sizeof(float) * (size_t)n);
    }
}

ps_status cpu_lora_bgmv_ref(ps_backend *be, ps_tensor *y, const ps_tensor *x,
                            const ps_lora_batch *lb, ps_err *err) {
    int64_t T = x->shape[0], in = x->shape[1], out = y->shape[1];
    const float *xd = x->data;
    float *yd = y->data;
    float v[PS_LORA_MAX_RANK];
    for (int64_t t = 0; t < T; t++) {
        int s = lb->tok_slot[t];
        if (s < 0 || !lb->slots[s].A) continue;
        const ps_lora_slot *sl = &lb->slots[s];
        for (int i = 0; i < sl->r; i++) {
            float acc = 0.0f;
            for (int64_t k = 0; k < in; k++) acc += lora_ld(sl->A, sl->dtype, i * in + k) * xd[t * in + k];
            v[i] = acc;
        }
        for (int64_t o = 0; o < out; o++) {
            float acc = 0.0f;
            for (int i = 0; i < sl->r; i++) acc += lora_ld(sl->B, sl->dtype, i * out + o) * v[i];
            yd[t * out + o] += sl->scale * acc;
        }
    }
    return PS_OK;
}

/* acc[lane] += a[k] * b[k] with lane = k mod 16 (callers start chunks at
 * multiples of 16, so the lanes do not depend on chunking); the compiler keeps
 * the 16 lanes in one vector register. */
static inline void lora_lanes(float *restrict acc, const float *restrict a, const float *restrict b, int64_t n) {
    int64_t k = 0;
    for (; k + 16 <= n; k += 16)
        for (int j = 0; j < 16; j++) acc[j] += a[k + j] * b[k + j];
    for (int j = 0; k + j < n; j++) acc[j] += a[k + j] * b[k + j];
}

/* The fixed halving tree over the 16 lanes. */
static inline float lora_tree(float *acc) {
    for (int w = 8; w > 0; w /= 2)
        for (int j = 0; j < w; j++) acc[j] += acc[j + w];
    return acc[0];
}

typedef struct {
    const ps_lora_batch *lb;
    const float *x;
    float *y;
    int64_t in, out;
    const int32_t *perm;   /* (n_used) adapted tokens, sorted by slot */
    const int32_t *chunk;  /* (n_chunks + 1) boundaries into perm */
    int n_chunks;
    float *v;              /* (n_used, r_max) shrink results in perm order */
    int r_max;
    int n_blocks;          /* output row blocks per chunk */
} lora_call;

/* v[j] = A x[j] for the tokens of each chunk: each row of A is read (and
 * widened, for 16-bit A) once per chunk, LORA_KC columns at a time. */
static void lora_shrink(void *ctx, int64_t c0, int64_t c1) {
    const lora_call *c = ctx;
    float af[LORA_KC];
    for (int64_t ch = c0; ch < c1; ch++) {
        int j0 = c->chunk[ch], j1 = c->chunk[ch + 1];
        const ps_lora_slot *sl = &c->lb->slots[c->lb->tok_slot[c->perm[j0]]];
        for (int i = 0; i < sl->r; i++) {
            float acc[LORA_CHUNK][16] = {{0}};
            for (int64_t k0 = 0; k0 < c->in; k0 += LORA_KC) {
                int64_t kc = c->in - k0 < LORA_KC ? c->in - k0 : LORA_KC, base = (int64_t)i * c->in + k0;
                const float *a = (const float *)sl->A + base;
                if (sl->dtype != PS_DT_F32) {
                    lora_widen(af, sl->A, sl->dtype, base, kc);
                    a = af;
                }
                for (int j = j0; j < j1; j++) lora_lanes(acc[j - j0], a, c->x + c->perm[j] * c->in + k0, kc);
            }
            for (int j = j0; j < j1; j++) c->v[(int64_t)j * c->r_max + i] = lora_tree(acc[j - j0]);
        }
    }
}

static inline void lora_axpy_block(float *restrict u, const float *restrict row, float vi) {
    for (int o = 0; o < LORA_OUT_BLOCK; o++) u[o] += row[o] * vi;
}

/* y[j][o0, o1) += scale * sum_i Bt[i][o] v[j][i] for the tokens of one chunk:
 * rows of Bt (r, out) are contiguous, so each rank index is one vector axpy
 * over the block; 16-bit rows are widened once per chunk into bw. Every
 * output sums i = 0..r-1 in order whatever the chunk: batch invariant. */
static void lora_expand_block(const lora_call *c, const ps_lora_slot *sl, int64_t o0, int64_t o1, int j0, int j1) {
    float bw[PS_LORA_MAX_RANK * LORA_OUT_BLOCK];
    int r = sl->r, n = (int)(o1 - o0);
    const float *bt = (const float *)sl->B + o0; /* row i at bt + i * ld */
    int64_t ld = c->out;
    if (sl->dtype != PS_DT_F32) {
        for (int i = 0; i < r; i++) lora_widen(bw + (int64_t)i * n, sl->B, sl->dtype, (int64_t)i * c->out + o0, n);
        bt = bw;
        ld = n;
    }
    for (int j = j0; j < j1; j++) {
        const float *v = c->v + (int64_t)j * c->r_max;
        float u[LORA_OUT_BLOCK] = {0};
        if (n == LORA_OUT_BLOCK) /* a fixed trip count: one vector register per 16 outputs */
            for (int i = 0; i < r; i++) lora_axpy_block(u, bt + i * ld, v[i]);
        else
            for (int i = 0; i < r; i++)
                for (int o = 0; o < n; o++) u[o] += bt[i * ld + o] * v[i];
        float *y = c->y + c->perm[j] * c->out + o0;
        for (int o = 0; o < n; o++) y[o] += sl->scale * u[o];
    }
}

static void lora_expand(void *ctx, int64_t w0, int64_t w1) {
    const lora_call *c = ctx;
    for (int64_t w = w0; w < w1; w++) {
        int64_t ch = w / c->n_blocks, o0 = (w % c->n_blocks) * LORA_OUT_BLOCK;
        int64_t o1 = o0 + LORA_OUT_BLOCK < c->out ? o0 + LORA_OUT_BLOCK : c->out;
        int j0 = c->chunk[ch], j1 = c->chunk[ch + 1];
        lora_expand_block(c, &c->lb->slots[c->lb->tok_slot[c->perm[j0]]], o0, o1, j0, j1);
    }
}

/* Counting sort of the adapted tokens by slot and the chunk boundaries.
 * Returns the number of adapted tokens; counts has n_slots + 1 entries. */
static int lora_segments(const ps_lora_batch *lb, int64_t T, int32_t *counts, int32_t *perm, int32_t *chunk,
                         int *n_chunks) {
    memset(counts, 0, sizeof *counts * (size_t)(lb->n_slots + 1));
    for (int64_t t = 0; t < T; t++) {
        int s = lb->tok_slot[t];
        if (s >= 0 && lb->slots[s].A) counts[s + 1]++;
    }
    for (int s = 0; s < lb->n_slots; s++) counts[s + 1] += counts[s];
    int n_used = counts[lb->n_slots];
    for (int64_t t = 0; t < T; t++) {
        int s = lb->tok_slot[t];
        if (s >= 0 && lb->slots[s].A) perm[counts[s]++] = (int32_t)t;
    }
    /* counts[s] is now the end of slot s; cut each slot's run into chunks */
    int n = 0, start = 0;
    for (int s = 0; s < lb->n_slots; s++) {
        for (int j = start; j < counts[s]; j += LORA_CHUNK) chunk[n++] = j;
        start = counts[s];
    }
    chunk[n] = n_used;
    *n_chunks = n;
    return n_used;
}

ps_status cpu_lora_bgmv(ps_backend *be, ps_tensor *y, const ps_tensor *x, const ps_lora_batch *lb,
                        ps_err *err) {
    int64_t T = x->shape[0];
    int r_max = 0;
    for (int s = 0; s < lb->n_slots; s++)
        if (lb->slots[s].A && lb->slots[s].r > r_max) r_max = lb->slots[s].r;
    if (r_max == 0) return PS_OK;
    /* scratch: the stack for decode-sized steps, the heap beyond (prefill) */
    int32_t st_ints[3 * LORA_STACK_T + 2];
    float st_v[LORA_STACK_V];
    bool heap = T > LORA_STACK_T || lb->n_slots > LORA_STACK_T || T * r_max > LORA_STACK_V;
    int64_t n_ints = 3 * (T > lb->n_slots ? T : lb->n_slots) + 2;
    int32_t *ints = heap ? malloc(sizeof *ints * (size_t)n_ints) : st_ints;
    float *v = heap ? malloc(sizeof *v * (size_t)(T * r_max)) : st_v;
    if (!ints || !v) {
        if (heap) free(ints), free(v);
        return ps_errf(err, PS_ENOMEM, "lora_bgmv: no scratch for %lld tokens x rank %d", (long long)T, r_max);
    }
    int32_t *counts = ints, *perm = ints + (n_ints - 2) / 3 + 1, *chunk = perm + (n_ints - 2) / 3;
    int n_chunks;
    int n_used = lora_segments(lb, T, counts, perm, chunk, &n_chunks);
    if (n_used > 0) {
        lora_call c = {lb, x->data, y->data, x->shape[1], y->shape[1], perm, chunk, n_chunks, v, r_max,
                       (int)((y->shape[1] + LORA_OUT_BLOCK - 1) / LORA_OUT_BLOCK)};
        /* only tiny calls stay on the calling thread: with the pool's spinning
         * handoff a region costs about a microsecond, and a decode step with
         * 16 distinct adapters reads as many LoRA bytes as base weights, so it
         * needs both cores' bandwidth (bench_adapters (c)/(b): 0.82 serial) */
        int64_t macs = (int64_t)n_used * r_max * (c.in + c.out);
        if (macs < LORA_PAR_MIN_MACS) {
            lora_shrink(&c, 0, n_chunks);
            lora_expand(&c, 0, (int64_t)n_chunks * c.n_blocks);
        } else {
            cpu_parallel_for(be, n_chunks, lora_shrink, &c);
            cpu_parallel_for(be, (int64_t)n_chunks * c.n_blocks, lora_expand, &c);
        }
    }
    if (heap) free(ints), free(v);
    return PS_OK;
}
