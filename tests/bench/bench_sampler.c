/* Host sampling cost per token over a 32000-token vocabulary: the engine
 * samples between device steps, so this is per-token latency on top of the
 * step. Logits are uniform random times a scale: x1 is near-flat (a top-p
 * 0.9 nucleus of ~28000 tokens, the worst case), x30 a peaked distribution
 * closer to a trained model's. Prints microseconds per draw for greedy,
 * top-p 0.9 (T 0.8) and top-k 50 + top-p 0.9, and a checksum of the drawn
 * ids (equal checksums = the same draws, e.g. before and after a change).
 *
 *   bench_sampler [--iters 200]
 * Not a ctest: it measures, it does not judge. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sampler.h"
#include "testutil.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    int iters = argc > 2 && !strcmp(argv[1], "--iters") ? atoi(argv[2]) : 200;
    const int V = 32000;
    float *lg = malloc(sizeof(float) * V);
    sampler_scratch s = {0};
    if (!lg || iters < 1 || sampler_scratch_init(&s, V, NULL) != PS_OK) return 1;
    const sampler_params cases[3] = {{0.0f, 1.0f, 0}, {0.8f, 0.9f, 0}, {0.8f, 0.9f, 50}};
    const char *names[3] = {"greedy", "top-p 0.9 T 0.8", "top-k 50 + top-p 0.9"};
    const float scales[3] = {1.0f, 10.0f, 30.0f};
    printf("| logits | %s | %s | %s | checksum |\n| --- | --- | --- | --- | --- |\n", names[0], names[1], names[2]);
    for (int si = 0; si < 3; si++) {
        tu_rand_fill(lg, V, 77);
        for (int v = 0; v < V; v++) lg[v] *= scales[si];
        double us[3];
        long sum = 0;
        for (int c = 0; c < 3; c++) {
            sampler_rng r;
            sampler_rng_seed(&r, 7);
            double a = now_s();
            for (int i = 0; i < iters; i++) sum += sampler_sample(&cases[c], &r, lg, &s);
            us[c] = (now_s() - a) / iters * 1e6;
        }
        printf("| uniform x%.0f | %.1f us | %.1f us | %.1f us | %ld |\n", scales[si], us[0], us[1], us[2], sum);
    }
    sampler_scratch_free(&s);
    free(lg);
    return 0;
}
