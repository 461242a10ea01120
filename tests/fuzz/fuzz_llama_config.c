/* Fuzz target for the two JSON parsers of the LLaMA loader: config.json
 * (llama_config_parse) and the bitsandbytes quant_state blob
 * (llama_bnb_state_parse). Any bytes must give PS_OK or a clean error; on
 * success the result must satisfy the rules the loader relies on (positive
 * dims, heads divisible by KV heads, even head_dim, bos/eos inside the
 * vocabulary; a 2-d positive quant_state shape). The input is copied to an
 * exact-size allocation so ASan sees any read past it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "models/llama_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *copy = malloc(size ? size : 1);
    if (!copy) return 0;
    if (size) memcpy(copy, data, size);
    llama_config c;
    ps_err err = {0};
    if (llama_config_parse(copy, size, &c, &err) == PS_OK) {
        if (c.vocab < 1 || c.hidden < 1 || c.ffn < 1 || c.n_layers < 1 || c.n_kv_heads < 1 ||
            c.n_heads % c.n_kv_heads || c.head_dim % 2 || c.bos_id >= c.vocab || c.eos_id >= c.vocab ||
            !(c.rms_eps > 0.0f) || !(c.rope_theta > 0.0f))
            abort();
    }
    llama_bnb_state q;
    if (llama_bnb_state_parse(copy, size, &q, &err) == PS_OK) {
        if (q.shape[0] < 1 || q.shape[1] < 1 || strlen(q.quant_type) >= sizeof q.quant_type) abort();
    }
    free(copy);
    return 0;
}
