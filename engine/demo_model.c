/* The built-in demo model: a small LLaMA with random weights (fixed seed)
 * and the byte tokenizer, so the server, page and APIs run with no model
 * folder. Its text is random by construction; engine_info.demo says so.
 * Sized to decode quickly on two CPU cores while keeping every code path of
 * a real model (GQA: 8 query heads over 4 KV heads, several layers, NF4). */
#include "engine_internal.h"

#define DEMO_SEED 0x5EEDC0DEull

void demo_model_config(llama_config *cfg) {
    *cfg = (llama_config){
        .vocab = 259, /* <unk> <s> </s> + 256 bytes: tok_init_bytes */
        .hidden = 256,
        .ffn = 688,
        .n_layers = 4,
        .n_heads = 8,
        .n_kv_heads = 4,
        .head_dim = 32,
        .max_pos = 2048,
        .rms_eps = 1e-5f,
        .rope_theta = 10000.0f,
        .tie_embeddings = false,
        .bos_id = 1,
        .eos_id = 2,
    };
}

ps_status demo_model_init(ps_backend *be, llama_quant q, llama_model **model, tokenizer **tok,
                          ps_err *err) {
    llama_config cfg;
    demo_model_config(&cfg);
    ps_status st = tok_init_bytes(tok, err);
    if (st) return ps_err_wrap(err, "demo tokenizer");
    st = llama_init_random(&cfg, DEMO_SEED, q, be, model, err);
    if (st) return ps_err_wrap(err, "demo model");
    return PS_OK;
}
