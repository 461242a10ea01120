/* Writes a random LLaMA as a Hugging Face folder (config.json + F16
 * safetensors, sharded with model.safetensors.index.json past --shard-mb), the
 * same weights llama_init_random makes for the same seed, so benchmarks and
 * the server can exercise the real loader on a full-size model:
 *
 *   gen_random_llama OUT_DIR [--layers 22] [--seed 1234] [--shard-mb 1024]
 *   bench_llama --model OUT_DIR
 *
 * The shape is TinyLlama-1.1B's (hidden 2048, 32 heads, 4 KV heads, ffn 5632,
 * vocab 32000); about 2.2 GB of F16 on disk for 22 layers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "models/llama_random.h"

int main(int argc, char **argv) {
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: %s OUT_DIR [--layers N] [--seed S] [--shard-mb MB]\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    int layers = 22;
    long long shard_mb = 1024;
    uint64_t seed = 1234;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--layers")) layers = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seed")) seed = strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--shard-mb")) shard_mb = atoll(argv[i + 1]);
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (layers < 1 || shard_mb < 1) {
        fprintf(stderr, "--layers and --shard-mb must be positive\n");
        return 2;
    }
    mkdir(dir, 0755); /* may exist already */
    llama_config cfg = {32000, 2048, 5632, layers, 32, 4, 64, 2048, 1e-5f, 10000.0f, false, 1, 2};
    ps_err err = {0};
    if (llama_random_write_dir(&cfg, seed, dir, shard_mb << 20, &err) != PS_OK) {
        fprintf(stderr, "gen_random_llama: %s\n", err.msg);
        return 1;
    }
    printf("wrote a random %d-layer TinyLlama-shaped model (seed %llu) to %s\n", layers,
           (unsigned long long)seed, dir);
    return 0;
}
