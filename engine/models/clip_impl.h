/* Internal layout of a CLIP model, shared by clip_load.c (config, weights)
 * and clip.c (forward). Not for use outside engine/models/clip*.c. */
#ifndef PS_ENGINE_MODELS_CLIP_IMPL_H
#define PS_ENGINE_MODELS_CLIP_IMPL_H

#include "clip.h"

typedef struct {
    ps_tensor ln1_w, ln1_b, ln2_w, ln2_b;         /* (W) */
    ps_weight q, k, v, o;                         /* (W, W) */
    ps_tensor q_b, k_b, v_b, o_b;                 /* (W) */
    ps_weight fc1, fc2;                           /* (F, W), (W, F) */
    ps_tensor fc1_b, fc2_b;                       /* (F), (W) */
} clip_layer;

typedef struct {
    clip_tower_config cfg;
    clip_layer *layers;   /* (L) */
    ps_tensor pos;        /* text: (ctx, W) as stored; vision: (T, W) F32, class embedding folded into row 0 */
    ps_tensor tok;        /* text: token table (V, W) */
    ps_weight patch;      /* vision: conv weight viewed as (W, 3 P P) */
    ps_tensor pre_w, pre_b;     /* vision: pre_layrnorm */
    ps_tensor final_w, final_b; /* text final_layer_norm / vision post_layernorm */
    ps_weight proj;             /* (E, W) */
} clip_tower;

/* Device scratch, grown on demand (never shrunk). */
typedef struct {
    int64_t rows, batch;          /* capacities */
    float *x, *h, *q, *k, *v, *a; /* (rows, Wmax) */
    float *f;                     /* (rows, Fmax) */
    float *patches;               /* (rows, 3 P P) */
    int32_t *ids, *pos;           /* (rows) */
    int32_t *sel;                 /* (batch) pooled rows */
    float *pooled, *pooled_ln;    /* (batch, Wmax) */
    float *out;                   /* (batch, E) */
} clip_scratch;

struct clip_model {
    clip_config cfg;
    ps_backend *be;
    clip_tower text, vision;
    float logit_scale;   /* exp(logit_scale) */
    void **bufs;         /* owned device buffers of the weights */
    int n_bufs, cap_bufs;
    int64_t weight_bytes;
    clip_scratch s;
};

int clip_vision_tokens(const clip_config *c); /* (S/P)^2 + 1 */

#endif
