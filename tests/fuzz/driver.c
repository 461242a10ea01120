/* Fuzz driver for builds without libFuzzer: replays every file of a corpus
 * folder, then runs N deterministic mutations (bit flips, byte sets,
 * truncations, splices of two seeds) through LLVMFuzzerTestOneInput. Crashes
 * and sanitizer reports fail the test; the input is saved to crash-<name>. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    uint8_t *data;
    size_t size;
} seed;

static seed *seeds;
static int n_seeds;

static void add_seed(uint8_t *d, size_t n) {
    seeds = realloc(seeds, sizeof(seed) * (size_t)(n_seeds + 1));
    seeds[n_seeds++] = (seed){d, n};
}

static void load_dir(const char *dir) {
    DIR *dp = opendir(dir);
    if (!dp) return;
    struct dirent *e;
    while ((e = readdir(dp))) {
        if (e->d_name[0] == '.') continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        if (!f) continue;
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *d = malloc((size_t)n + 1);
        if (n < 0 || fread(d, 1, (size_t)n, f) != (size_t)n) { free(d); fclose(f); continue; }
        fclose(f);
        add_seed(d, (size_t)n);
    }
    closedir(dp);
}

static uint64_t rng = 0x243F6A8885A308D3ull;
static uint64_t next(void) {
    rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
    return rng;
}

int main(int argc, char **argv) {
    if (argc > 1) load_dir(argv[1]);
    long iters = argc > 2 ? atol(argv[2]) : 10000;
    if (n_seeds == 0) add_seed(calloc(1, 1), 0);
    for (int i = 0; i < n_seeds; i++) LLVMFuzzerTestOneInput(seeds[i].data, seeds[i].size);
    uint8_t *buf = malloc(1 << 20);
    for (long it = 0; it < iters; it++) {
        seed *s = &seeds[next() % (uint64_t)n_seeds];
        size_t n = s->size < (1u << 20) ? s->size : (1u << 20);
        memcpy(buf, s->data, n);
        int muts = 1 + (int)(next() % 4);
        for (int m = 0; m < muts; m++) {
            switch (next() % 5) {
            case 0: if (n) buf[next() % n] ^= (uint8_t)(1u << (next() % 8)); break;
            case 1: if (n) buf[next() % n] = (uint8_t)next(); break;
            case 2: if (n) n = next() % n; break;
            case 3: if (n) { static const uint8_t special[] = {0, 0xff, 0x7f, 0x80, '"', '{', '}', '\\'}; buf[next() % n] = special[next() % 8]; } break;
            case 4: {
                seed *o = &seeds[next() % (uint64_t)n_seeds];
                size_t at = n ? next() % n : 0, take = o->size ? next() % o->size : 0;
                if (at + take > (1u << 20)) take = (1u << 20) - at;
                memcpy(buf + at, o->data, take);
                n = at + take;
            } break;
            }
        }
        LLVMFuzzerTestOneInput(buf, n);
    }
    free(buf);
    printf("fuzz: %d seeds, %ld mutations, no crash\n", n_seeds, iters);
    return 0;
}
