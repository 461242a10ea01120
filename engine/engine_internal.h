/* The engine's private state, shared by engine.c (lifecycle, submit, info,
 * text), sched.c (the engine thread and its steps) and sched_emit.c (turning
 * sampled tokens into events). Not for use outside engine/.
 *
 * Ownership: engine_submit builds a sched_req and hands it to the waiting
 * queue (under e->mu); sched_admit moves it into a sched_seq slot owned by the
 * engine thread, which frees it when the sequence leaves. */
#ifndef PS_ENGINE_INTERNAL_H
#define PS_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "adapter_registry.h"
#include "chat_template.h"
#include "engine.h"
#include "models/llama.h"
#include "sampler.h"
#include "stop.h"
#include "tokenizer.h"

#define ENGINE_PAGE_SIZE 16
/* KV cache dtype when engine_opts.kv_dtype is NULL (--kv-dtype). */
#define ENGINE_KV_DTYPE_DEFAULT "f32"

/* A validated request waiting for a slot. */
typedef struct {
    uint64_t id;
    int32_t *prompt; /* (n_prompt) owned */
    int n_prompt, max_tokens;
    sampler_params sp;
    uint64_t seed;
    bool ignore_eos;
    int logprobs;       /* -1 = none */
    stop_matcher stop;  /* owns copies of the stop strings */
    engine_stream *stream;
    double t_submit;    /* seconds, CLOCK_MONOTONIC */
    adapter *adapter;   /* pinned in engine_submit, unpinned by sched_req_free; NULL = base */
    adapter_registry *reg;
    int n_extra;        /* KV entries before the prompt: prefix P or prompt-tuning virtual tokens */
} sched_req;

typedef enum { SEQ_FREE = 0, SEQ_PREFILL, SEQ_DECODE } sched_seq_state;

/* A running sequence (engine thread only). Its pages are the first n_pages
 * entries of its row of e->block_tables, reserved in full at admission. */
typedef struct {
    sched_seq_state state;
    sched_req *req;
    int n_pages;
    int n_ctx;          /* KV entries stored (prompt tokens done + fed-back tokens) */
    int n_generated;    /* tokens sampled */
    int32_t next_token; /* DECODE: the token fed at the next step */
    int batch_n;        /* tokens of this sequence in the step being built */
    sampler_rng rng;
    tok_decoder dec;
} sched_seq;

struct engine {
    /* fixed after engine_init */
    ps_backend *be;
    llama_model *model;
    tokenizer *tok;
    const llama_config *cfg;
    kv_cache kv;
    chat_tmpl chat;
    bool demo;
    adapter_registry *adapters; /* thread-safe by itself */
    char model_id[256];
    const char *quant_name, *device_name;
    ps_dtype kv_dtype; /* of the KV cache (--kv-dtype) */
    int V, ctx_len, max_seqs, max_batch_tokens, max_queue, max_pages;
    int32_t eos_id;

    /* shared with submitters, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool mu_ready, thread_started, stopping;
    sched_req **waiting; /* ring (max_queue) */
    int wait_head, n_waiting;
    uint64_t next_id;
    bool healthy;
    ps_err device_err;   /* the sticky error when !healthy */
    int stat_running, stat_kv_free;
    uint64_t stat_requests, stat_generated, stat_prompt;
    int debug_budget;    /* steps left before pausing; < 0 = no limit (engine_debug.h) */
    bool debug_paused;
    ps_status debug_fault; /* engine_debug_fail_next_step; taken by the engine thread */
    pthread_cond_t debug_cv;
    pthread_t thread;

    /* engine thread only */
    sched_seq *seqs;     /* (max_seqs) */
    int *order;          /* (max_seqs) slots in admission order */
    int n_running;
    int32_t *block_tables; /* (max_seqs, max_pages) */
    int32_t *b_ids, *b_pos, *b_seq, *b_kv_pos; /* (max_batch_tokens) */
    int32_t *b_adapter, *b_virtual;            /* (max_batch_tokens) index into step_adapters; virtual row */
    const adapter **step_adapters;             /* (max_seqs) distinct adapters of the step */
    int n_step_adapters;
    int n_tokens;
    int32_t *out_rows, *out_slot; /* (max_seqs) */
    int n_out;
    float *logits;       /* (max_seqs, V) */
    sampler_scratch samp;
    char *piece;         /* decoder output, grown if a piece needs more */
    int piece_cap;
    uint64_t stat_step_generated, stat_step_prompt; /* published to stat_* after each step */
};

/* sched.c: the engine thread. */
void *sched_thread_main(void *arg);
/* Fails every running and waiting request with `err` (engine_free, sticky device error). */
void sched_fail_all(engine *e, const ps_err *err);
/* Leaves the running set: releases pages, the stream and the request. */
void sched_seq_release(engine *e, int slot);

/* sched_emit.c */
void sched_emit_tokens(engine *e);
/* Sends DONE (reason "stop" | "length") and releases the sequence. */
void sched_finish(engine *e, int slot, const char *reason);
/* Sends ERROR and releases the sequence. */
void sched_fail(engine *e, int slot, const ps_err *err);

/* engine.c: "f32" | "f16" | "bf16" (static strings) for the KV cache and LoRA storage */
const char *engine_dtype_name(ps_dtype dt);

/* engine_adapters.c */
ps_status engine_open_adapters(engine *e, const engine_opts *o, ps_err *err);

/* demo_model.c */
void demo_model_config(llama_config *cfg);
ps_status demo_model_init(ps_backend *be, llama_quant q, llama_model **model, tokenizer **tok,
                          ps_err *err);

double engine_now(void);
void sched_req_free(sched_req *r); /* accepts NULL */

#endif
