/* The llama_model struct and helpers shared by the llama_*.c files (config,
 * loading, random init, forward). Not for use outside engine/models/llama*.c
 * and their tests. */
#ifndef PS_ENGINE_MODELS_LLAMA_INTERNAL_H
#define PS_ENGINE_MODELS_LLAMA_INTERNAL_H

#include "base/safetensors.h"
#include "models/llama.h"

typedef struct {
    ps_tensor attn_norm, ffn_norm;   /* (C) */
    ps_weight wq, wk, wv, wo;        /* (H*D, C) (KV*D, C) (KV*D, C) (C, H*D) */
    ps_weight wg, wu, wd;            /* (F, C) (F, C) (C, F) */
} llama_layer;

/* Per-step device scratch, grown when a bigger batch arrives (never shrunk). */
typedef struct {
    int tok_cap, out_cap, meta_cap;
    void *tok_buf, *out_buf, *meta_buf; /* device */
    int32_t *meta_host;                 /* staging for the one metadata upload */
    ps_lora_slot *lora_slots;           /* host: per-step LoRA tables (llama_adapters.c) */
    int lora_cap;                       /* entries of lora_slots */
    unsigned *lora_active;              /* host: (n_layers) projection bits */
} llama_scratch;

struct llama_model {
    llama_config cfg;
    llama_quant quant;
    ps_backend *be;
    uint64_t uid; /* unique per model in this process (addresses are reused after a free) */
    ps_tensor embed;    /* (V, C) */
    ps_tensor norm;     /* (C) */
    ps_weight lm_head;  /* (V, C) dense; aliases embed when tied */
    llama_layer *layers;
    void **bufs;        /* every device buffer the weights own */
    int n_bufs, cap_bufs;
    int64_t weight_bytes;
    llama_scratch s;
};

/* The 7 projections of a layer in a fixed order (names as in HF checkpoints). */
#define LLAMA_N_PROJ 7
extern const char *const llama_proj_names[LLAMA_N_PROJ]; /* "self_attn.q_proj", ... */
ps_weight *llama_layer_proj(llama_layer *L, int p);
/* (out, in) of projection p. */
void llama_proj_shape(const llama_config *cfg, int p, int64_t *out, int64_t *in);

/* Allocates a model shell (config copied, layers zeroed). */
ps_status llama_model_alloc(const llama_config *cfg, llama_quant q, ps_backend *be,
                            llama_model **out, ps_err *err);
/* Allocates a device buffer owned by the model (freed by llama_free). */
ps_status llama_alloc_buf(llama_model *m, size_t n, void **dev, ps_err *err);
/* Allocates a device buffer owned by the model and uploads n bytes of host data. */
ps_status llama_upload(llama_model *m, const void *host, size_t n, void **dev, ps_err *err);
/* Uploads a dense tensor (host data of dtype dt) and returns its device view. */
ps_status llama_upload_tensor(llama_model *m, ps_dtype dt, int ndim, const int64_t *shape,
                              const void *host, ps_tensor *out, ps_err *err);
/* Quantises a float32 weight (out, in) to NF4 (double quant unless q is
 * NF4_NODQ), uploads it and fills w. */
ps_status llama_quantize_upload(llama_model *m, const float *w32, int64_t out, int64_t in,
                                ps_weight *w, ps_err *err);

/* Validation of the config's numbers (shared by parse and init_random). */
ps_status llama_config_check(const llama_config *cfg, ps_err *err);

/* `tensor 'NAME': shape [..], expected [..]` unless t has exactly that shape. */
ps_status llama_check_shape(const st_tensor *t, int ndim, const int64_t *shape, ps_err *err);

/* The adapters of one step (llama_adapters.c), built by llama_adapters_begin
 * from the batch; all zero when the batch has none. */
typedef struct {
    int n;                    /* adapters in the step */
    const ps_lora_slot *slots;/* (n_layers, LLAMA_N_PROJ, n): A/B of adapter a for (l, p) */
    unsigned *active;         /* (n_layers) bit p: some adapter adapts (l, p) */
    const int32_t *tok;       /* (T) host: adapter of each token or -1 */
    ps_tensor tok_dev;        /* (T) I32 device copy of tok */
    ps_tensor rows_dev;       /* (T) I32 device: embedding row of each token */
    bool any_embed, any_lm_head;
} llama_step_adapters;

/* Extra I32 metadata entries the batch's adapters need (0 without adapters). */
int llama_adapters_meta_ints(const llama_batch *b);
/* Host checks: indices, virtual rows, adapters made for this model's shape. */
ps_status llama_adapters_check(const llama_model *m, const llama_batch *b, ps_err *err);
/* Writes the adapter metadata into h (meta_ints entries) and fills sa; dev is
 * where h lands on the device. */
ps_status llama_adapters_begin(llama_model *m, const llama_batch *b, int32_t *h, int32_t *dev,
                               llama_step_adapters *sa, ps_err *err);
/* x (T, C): replaces the rows of virtual tokens and of adapters with their own embed_tokens. */
ps_status llama_adapters_embed(llama_model *m, const llama_batch *b, const llama_step_adapters *sa,
                               ps_tensor *x, ps_err *err);
/* Whether any LoRA of the step changes projection p of layer l. */
static inline bool llama_adapters_lora_on(const llama_step_adapters *sa, int l, int p) {
    return sa->n > 0 && (sa->active[l] & (1u << p));
}
/* y += LoRA deltas of projection p of layer l for x (op_lora_bgmv). */
ps_status llama_adapters_lora(llama_model *m, const llama_step_adapters *sa, int l, int p, ps_tensor *y,
                              const ps_tensor *x, ps_err *err);
/* The same for n projections projs[i] of one x into ys[i] (q/k/v; gate/up),
 * those some LoRA changes in one op_lora_bgmv_n. */
ps_status llama_adapters_lora_n(llama_model *m, const llama_step_adapters *sa, int l, int n, const int *projs,
                                ps_tensor *const *ys, const ps_tensor *x, ps_err *err);
/* logits (R, V): recomputes the rows whose adapter has its own lm_head from ho (R, C). */
ps_status llama_adapters_lm_head(llama_model *m, const llama_batch *b, const llama_step_adapters *sa,
                                 ps_tensor *logits, const ps_tensor *ho, ps_err *err);

/* bitsandbytes 4-bit weights (llama_bnb.c): present when `<name>.quant_state.*`
 * exists; loaded as NF4 views of the stored bytes, no requantisation. */
bool llama_bnb_present(const st_set *s, const char *name);
ps_status llama_bnb_load(llama_model *m, const st_set *s, const char *name, int64_t out,
                         int64_t in, ps_weight *w, ps_err *err);

/* bitsandbytes quant_state JSON (`<m>.weight.quant_state.bitsandbytes__nf4`). */
typedef struct {
    char quant_type[16];
    int blocksize, nested_blocksize; /* nested_blocksize 0 when not nested */
    int64_t shape[2];
    float nested_offset;
    bool nested;
} llama_bnb_state;
ps_status llama_bnb_state_parse(const char *json, size_t len, llama_bnb_state *st, ps_err *err);

#endif
