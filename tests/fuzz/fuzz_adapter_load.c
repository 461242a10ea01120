/* Fuzz target for the PEFT adapter loader: any bytes through
 * adapter_load_mem must give PS_OK or a clean error, never a crash, leak or
 * out-of-bounds read. Input layout: 2 bytes little-endian config length L,
 * L bytes of adapter_config.json, the rest = adapter_model.safetensors. The
 * base is a tiny LLaMA shape so seeds stay small (seeds: gen_adapter_seeds.py).
 * Both parts are copied to exact-size allocations so ASan sees any overread.
 * On success the adapter's tables are walked (pointers inside its block). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "adapter.h"
#include "ops.h"

static ps_backend *be;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!be) {
        ps_err e;
        if (ps_backend_cpu_create(1, &be, &e)) abort();
    }
    if (size < 2) return 0;
    size_t L = (size_t)data[0] | (size_t)data[1] << 8;
    if (L > size - 2) L = size - 2;
    size_t S = size - 2 - L;
    char *cfg = malloc(L ? L : 1);
    uint8_t *st = malloc(S ? S : 1);
    if (!cfg || !st) abort();
    memcpy(cfg, data + 2, L);
    memcpy(st, data + 2 + L, S);
    /* hidden 8, 2 layers, 2 heads / 1 KV head of dim 4, ffn 12, vocab 10 */
    adapter_base_shape base = {2, 8, 12, 2, 1, 4, 10};
    adapter_limits lim = adapter_limits_default();
    lim.max_bytes = 1 << 20;
    adapter *a = NULL;
    ps_err err = {0};
    if (adapter_load_mem("fuzz", cfg, L, st, S, &base, &lim, be, &a, &err) == PS_OK) {
        if (!a || adapter_bytes(a) == 0) abort();
        const char *lo = a->block, *hi = lo + adapter_bytes(a);
        for (int i = 0; a->lora && i < base.n_layers * ADAPTER_MOD_COUNT; i++) {
            const adapter_lora *e = &a->lora[i];
            if (e->r && ((const char *)e->A < lo || (const char *)e->B >= hi)) abort();
        }
    } else if (a || err.msg[0] == 0) {
        abort(); /* an error must leave nothing and say why */
    }
    adapter_free(a);
    free(cfg);
    free(st);
    return 0;
}
