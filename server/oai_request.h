/* A validated generation request, shared by /v1/completions and
 * /v1/chat/completions: parse + validate the JSON into this struct without a
 * connection (oai_completions_parse / oai_chat_parse), then the handler runs
 * it (generate.c). Strings point into the request's json_t unless listed in
 * `owned`, so the json must outlive the struct.
 *
 *   oai_gen_request r; api_error e;
 *   if (!oai_chat_parse(body, &ctx, &r, &e)) { reply_error(conn, &e); ... }
 *   ... generate ...;  oai_gen_request_free(&r);
 */
#ifndef PS_SERVER_OAI_REQUEST_H
#define PS_SERVER_OAI_REQUEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "api_error.h"
#include "engine.h"

#define OAI_MAX_STOP 4

/* What validation needs to know about the served model (no engine call). */
typedef struct {
    const char *model_id;
    int vocab_size;
    /* adapters: true when `name` is one (its virtual tokens in *extra); NULL = none */
    bool (*find_adapter)(void *user, const char *name, int *extra);
    void *user;
} oai_ctx;

typedef struct {
    bool chat;
    const char *model;
    const char *adapter; /* == model when it names an adapter, else NULL (the base) */
    int adapter_extra;   /* the adapter's virtual tokens (prefix / prompt tuning) */
    /* completions: text (BOS added) or ids (used as given) */
    const char *prompt_text;
    int32_t *prompt_ids; /* malloc'd */
    int n_prompt_ids;
    /* chat */
    engine_chat_msg *msgs; /* malloc'd array; strings in the json or in owned */
    int n_msgs;
    char **owned;
    int n_owned;
    /* sampling and output */
    int max_tokens;       /* 0 = not given: the rest of the context, capped */
    float temperature, top_p;
    int top_k;
    uint64_t seed;
    bool has_seed;
    const char *stop[OAI_MAX_STOP];
    int n_stop;
    bool stream, include_usage, return_token_ids, ignore_eos, echo;
    int logprobs;         /* -1 none; else top alternatives per token (0..20) */
} oai_gen_request;

/* Parameters both endpoints share (model, sampling, stop, stream, n,
 * penalties, extensions return_token_ids and ignore_eos). Sets defaults. */
bool oai_parse_common(const json_t *body, const oai_ctx *ctx, oai_gen_request *r, api_error *e);

/* Parse + validate a /v1/completions or /v1/chat/completions body (in
 * oai_completions_req.c, oai_chat_req.c). Always pass r to
 * oai_gen_request_free afterwards, success or not. */
bool oai_completions_parse(const json_t *body, const oai_ctx *ctx, oai_gen_request *r, api_error *e);
bool oai_chat_parse(const json_t *body, const oai_ctx *ctx, oai_gen_request *r, api_error *e);

/* Frees what the struct owns; accepts a zeroed or half-filled struct. */
void oai_gen_request_free(oai_gen_request *r);

/* Keeps s (malloc'd) until oai_gen_request_free; returns s or NULL (s freed). */
char *oai_gen_request_own(oai_gen_request *r, char *s);

#endif
