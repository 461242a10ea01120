/* Defaults for engine_opts: sized for a small CPU box; flags override them. */
#include "engine.h"

engine_opts engine_opts_default(void) {
    engine_opts o = {0};
    o.quant = "nf4";
    o.max_seqs = 16;
    o.max_batch_tokens = 512;
    o.max_queue = 256;
    return o;
}
