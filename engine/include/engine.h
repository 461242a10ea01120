/* The engine's public face: the only header server/ includes.
 *
 * One engine thread owns the device and the model. Server workers submit
 * requests and read their events from a per-request stream (a reply channel);
 * they never see a tensor. Requests join the running batch between decode
 * steps and leave when done (continuous batching).
 *
 * Usage:
 *   engine *e; engine_opts o = engine_opts_default();  o.model_dir = "...";
 *   if (engine_init(&e, &o, &err)) ...;
 *   engine_stream *s; engine_submit(e, &req, &s, &err);
 *   engine_event ev; while (engine_stream_next(s, &ev) , ev.kind == ENGINE_EV_TOKEN) ...;
 *   engine_stream_free(s);            // cancels if still running
 *   engine_free(e);
 *
 * Threads: every function is safe to call from any thread except
 * engine_init/engine_free (owner only). A stream is used by one thread.
 */
#ifndef PS_ENGINE_H
#define PS_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "base/status.h"
#include "clip_service.h" /* CLIP zero-shot classification + embeddings (--clip DIR) */

typedef struct engine engine;
typedef struct engine_stream engine_stream;

typedef struct {
    const char *model_dir;     /* HF folder; NULL = built-in demo model */
    const char *quant;         /* "nf4" (default) | "none" */
    const char *device;        /* "cpu" | "cuda" | NULL = cuda when a GPU is present */
    const char *chat_template; /* NULL = from the model folder, else a name (engine_chat_templates) */
    const char *model_id;      /* id reported in /v1/models; NULL = folder name */
    int threads;               /* CPU threads; <= 0 = all */
    int max_seqs;              /* sequences decoded together */
    int max_batch_tokens;      /* tokens per forward step (prefill chunking) */
    int ctx_len;               /* max tokens per sequence (prompt + output); 0 = model max */
    int kv_pages;              /* 0 = enough for max_seqs * ctx_len */
    const char *kv_dtype;      /* KV cache entries: "f32" | "f16" | "bf16"; NULL = engine default */
    int max_queue;             /* waiting requests before EBUSY */
    const char *adapters_dir;  /* uploaded adapters persist here, reloaded at start; NULL = memory only */
    int adapter_budget_mb;     /* resident adapter memory (MB) before LRU eviction; 0 = unlimited */
    const char *adapter_dtype; /* LoRA weights: "auto" (NULL: as uploaded, 16-bit kept, else f32) |
                                * "f16" | "bf16" (every upload rounded to it: half the memory and
                                * the bytes a decode step reads per distinct adapter) */
} engine_opts;

engine_opts engine_opts_default(void);

ps_status engine_init(engine **out, const engine_opts *opts, ps_err *err);
void engine_free(engine *e);

typedef struct {
    const char *model_id;
    const char *architecture; /* "llama" */
    const char *device;       /* "cpu" | "cuda" */
    const char *quant;        /* "nf4" | "none" */
    const char *chat_template; /* "none" when the model has none and no flag chose one */
    bool demo;                /* true for the built-in random model */
    bool healthy;             /* false after a sticky device error */
    int ctx_len, vocab_size, n_layers, hidden;
    int64_t weight_bytes;
    /* live counters */
    int running, waiting;
    uint64_t requests_total, tokens_generated_total, prompt_tokens_total;
    int kv_page_size, kv_pages_total, kv_pages_free; /* KV cache pages (tokens per page) */
    const char *kv_dtype;                            /* "f32" | "f16" | "bf16" */
    int adapters_total, adapters_resident;           /* registered, and loaded in memory */
    int64_t adapter_bytes_resident;
} engine_info;

void engine_get_info(engine *e, engine_info *out);

/* ---- adapters ----
 * PEFT adapters (LoRA, prefix tuning, prompt tuning) served on top of the one
 * base model; a request selects one with engine_request.adapter = its name.
 * Adding validates the two PEFT files against the base (errors name the
 * offending tensor or key and leave nothing behind), persists them in
 * adapters_dir and registers the name. Removing makes the name unknown at once;
 * requests already running with it finish normally. */

#define ENGINE_ADAPTER_NAME_MAX 64

typedef struct {
    char name[ENGINE_ADAPTER_NAME_MAX + 1];
    const char *kind;          /* "lora" | "prefix_tuning" | "prompt_tuning" (static) */
    int rank;                  /* LoRA: largest r; 0 otherwise */
    char targets[96];          /* LoRA: "q_proj,v_proj"; "" otherwise */
    bool rslora;
    int num_virtual_tokens;    /* prefix / prompt tuning; 0 for LoRA */
    bool lm_head, embed_tokens;/* modules_to_save copies it carries */
    int64_t bytes;             /* memory when resident */
    const char *dtype;         /* LoRA: storage of A and B, "f32" | "f16" | "bf16" (static); NULL otherwise */
    bool resident;             /* false: evicted, reloaded from disk on next use */
    int active_requests;       /* requests using the current version */
    int64_t created;           /* unix seconds */
} engine_adapter_info;

/* Names: [A-Za-z0-9._-]{1,64}, not starting with '.', no "..". Errors: EINVAL
 * (name), EFORMAT / EINVAL / ENOTSUP / ETOOLARGE (the files, see adapters/adapter.h),
 * EEXIST (name taken and !replace), ENOMEM (adapter budget), EIO (persisting).
 * replace: hot-swap an existing adapter (running requests keep the old one).
 * info may be NULL. */
ps_status engine_adapter_add(engine *e, const char *name, const void *config_json, size_t config_len,
                             const void *safetensors, size_t st_len, bool replace,
                             engine_adapter_info *info, ps_err *err);
ps_status engine_adapter_remove(engine *e, const char *name, ps_err *err); /* ENOTFOUND */
ps_status engine_adapter_get(engine *e, const char *name, engine_adapter_info *info, ps_err *err);
/* Every adapter sorted by name; *out is malloc'd (caller frees). Returns the count, -1 on ENOMEM. */
int engine_adapter_list(engine *e, engine_adapter_info **out);

/* ---- text ---- */

/* Encodes UTF-8 text. add_bos prepends the BOS id. *ids is malloc'd (caller frees).
 * The BOS/EOS marker texts ("<s>", "</s>") inside the text become their
 * control ids, as Hugging Face tokenizers do (the llama-2 and vicuna chat
 * templates rely on it); the text between markers is encoded piece by piece. */
ps_status engine_tokenize(engine *e, const char *text, bool add_bos, int32_t **ids, int *n,
                          ps_err *err);

typedef struct {
    const char *role;    /* "system" | "user" | "assistant" */
    const char *content; /* UTF-8 */
} engine_chat_msg;

/* Renders messages with a chat template (NULL = the engine's default) into a
 * prompt string (malloc'd). Unknown template -> PS_EINVAL naming the known ones. */
ps_status engine_chat_render(engine *e, const char *template_name, const engine_chat_msg *msgs,
                             int n, char **out, ps_err *err);
/* Comma-separated names of the built-in templates. */
const char *engine_chat_templates(void);

/* ---- generation ---- */

typedef struct {
    const int32_t *prompt_ids; /* copied by engine_submit */
    int n_prompt;
    int max_tokens;            /* >= 0; 0 = evaluate the prompt only */
    float temperature;         /* 0 = greedy */
    float top_p;               /* (0, 1] */
    int top_k;                 /* 0 = off */
    uint64_t seed;
    bool has_seed;             /* false: seeded from the request id */
    const char *const *stop;   /* stop strings (copied), not included in the output */
    int n_stop;                /* 0..ENGINE_MAX_STOPS, each 1..ENGINE_MAX_STOP_BYTES bytes */
    bool ignore_eos;
    int logprobs;              /* top alternatives per token to report (0..20); -1 = none */
    const char *adapter;       /* NULL = base model, else a registered adapter's name (pinned
                                  for the request's lifetime; unknown -> ENOTFOUND) */
} engine_request;

typedef enum {
    ENGINE_EV_TOKEN = 0, /* one generated token (text may be empty: partial UTF-8) */
    ENGINE_EV_DONE,      /* finished; finish_reason set, no more events (an EOS
                          * token ends with "stop" and is neither sent nor counted) */
    ENGINE_EV_ERROR,     /* failed; err set, no more events */
} engine_event_kind;

#define ENGINE_MAX_TOP_LOGPROBS 20
#define ENGINE_MAX_STOPS 16
#define ENGINE_MAX_STOP_BYTES 256

/* A token whose text exceeds `text` arrives as one TOKEN event followed by
 * TOKEN events with cont = true that carry only more of its text (same
 * token, no logprobs); text held back for a stop string that is released at
 * the end (EOS) also comes as cont events. Count tokens on cont == false. */
typedef struct {
    engine_event_kind kind;
    int32_t token;
    bool cont;                 /* continuation: more text of the previous token */
    char text[256];            /* complete UTF-8 characters released by this token */
    float logprob;             /* of the sampled token */
    int n_top;
    int32_t top_ids[ENGINE_MAX_TOP_LOGPROBS];
    float top_logprobs[ENGINE_MAX_TOP_LOGPROBS];
    const char *finish_reason; /* "stop" | "length" (DONE only) */
    int prompt_tokens, completion_tokens; /* TOKEN: so far; DONE: totals */
    ps_err err;                /* ERROR only */
} engine_event;

/* Validates and queues a request. Errors: EINVAL (bad values), ETOOLARGE
 * (prompt + max_tokens over ctx_len), EBUSY (queue full), ENOTFOUND (adapter). */
ps_status engine_submit(engine *e, const engine_request *req, engine_stream **out, ps_err *err);

/* Blocks until the next event. After DONE or ERROR it keeps returning the same event. */
void engine_stream_next(engine_stream *s, engine_event *ev);

/* Cancels if still running and frees the stream. */
void engine_stream_free(engine_stream *s);

/* Decodes one token id to its text piece (for token-id echo / logprobs display). */
ps_status engine_token_text(engine *e, int32_t id, char *buf, int cap, ps_err *err);

#endif
