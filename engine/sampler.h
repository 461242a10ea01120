/* Token sampling: greedy, temperature, top-k, top-p (nucleus) with a
 * per-request random stream, and log-probabilities for the logprobs option.
 *
 * Mirrors the order of Hugging Face's generate() warpers for the same
 * options: temperature scales the logits, top-k keeps the k largest, top-p
 * keeps the smallest prefix of the sorted distribution whose mass reaches p
 * (never fewer than one token), then one draw from the renormalised rest.
 * Does not do repetition/presence penalties or min-p.
 *
 * Usage:
 *   sampler_scratch s; sampler_scratch_init(&s, V, &err);
 *   sampler_rng r; sampler_rng_seed(&r, seed);
 *   int32_t tok = sampler_sample(&params, &r, logits, &s);
 *   sampler_scratch_free(&s);
 *
 * Threads: a scratch and an rng belong to one thread at a time; the rest is
 * pure. */
#ifndef PS_ENGINE_SAMPLER_H
#define PS_ENGINE_SAMPLER_H

#include <stdint.h>

#include "base/status.h"

/* xorshift64* (Vigna 2014); seeded through splitmix64 so seeds 0, 1, 2 ...
 * give unrelated streams and the state is never zero. */
typedef struct {
    uint64_t s;
} sampler_rng;

void sampler_rng_seed(sampler_rng *r, uint64_t seed);
uint64_t sampler_rng_next(sampler_rng *r);
/* Uniform in [0, 1) with 53 random bits. */
double sampler_rng_uniform(sampler_rng *r);

typedef struct {
    float temperature; /* 0 = greedy (argmax) */
    float top_p;       /* (0, 1]; 1 = off */
    int top_k;         /* 0 = off */
} sampler_params;

/* Per-vocabulary work arrays, allocated once (never per token). */
typedef struct {
    int V;
    float *prob;   /* (V) candidate weights, indexed by token id */
    int32_t *idx;  /* (V) candidate token ids */
    int32_t *tmp;  /* (V) and key (2V): the radix sort's buffers */
    uint32_t *key;
} sampler_scratch;

ps_status sampler_scratch_init(sampler_scratch *s, int V, ps_err *err);
void sampler_scratch_free(sampler_scratch *s); /* accepts zeroed */

/* Index of the largest logit; the lowest index wins ties. */
int32_t sampler_argmax(const float *logits, int V);

/* Picks a token from logits (V = s->V). Greedy when temperature == 0 (no
 * random draw); otherwise exactly one draw from r per call, so a request's
 * stream depends only on its own seed and its own logits. */
int32_t sampler_sample(const sampler_params *p, sampler_rng *r, const float *logits,
                       sampler_scratch *s);

/* Log-softmax of the raw logits (before temperature): returns log p(chosen)
 * and writes the n_top most likely tokens (descending, lowest id first on
 * ties) with their log-probabilities. n_top may be 0. */
float sampler_logprobs(const float *logits, int V, int32_t chosen, int n_top, int32_t *top_ids,
                       float *top_lp);

#endif
