/* Running one validated generation request against the engine: prompt
 * tokens, the context check, the generation slot, then either collecting
 * every event (non-streaming) or streaming chunks as SSE.
 *
 * The endpoint files (openai_completions.c, openai_chat.c) own the JSON
 * shapes; this file owns the engine loop, usage, the request id, metrics
 * and the one log line per finished request.
 *
 *   gen_job job;
 *   int st = gen_prepare_or_reply(&job, rq, &req, "cmpl");
 *   if (!st) st = req.stream ? gen_stream(&job, &shape) : my_collect_and_reply(&job);
 *   gen_finish(&job);                          // counts, log facts, frees
 */
#ifndef PS_SERVER_GENERATE_H
#define PS_SERVER_GENERATE_H

#include <civetweb.h>
#include <jansson.h>
#include <stdbool.h>

#include "api_error.h"
#include "engine.h"
#include "http.h"
#include "oai_request.h"
#include "server.h"

/* One generated token as reported to the client. */
typedef struct {
    int32_t token;
    float logprob;
    int n_top;
    int32_t top_ids[ENGINE_MAX_TOP_LOGPROBS];
    float top_lp[ENGINE_MAX_TOP_LOGPROBS];
    int text_offset; /* byte offset of this token's text in the choice's text */
} gen_piece;

typedef struct gen_job {
    server *srv;
    http_req *rq;
    struct mg_connection *conn;
    const oai_gen_request *req;
    char id[48];
    long long created;
    int32_t *prompt_ids; /* owned */
    int n_prompt;
    engine_request ereq;
    double t0_ms, t_first_ms;
    bool has_slot;
    /* output: the whole choice (non-stream) or what is pending (stream) */
    char *text;
    size_t text_len, text_cap;
    gen_piece *pieces;
    int n_pieces, cap_pieces;
    size_t text_sent;          /* bytes of text already streamed (offsets) */
    const char *finish_reason; /* "stop" | "length" | NULL while running */
    int prompt_tokens, completion_tokens;
    int n_generated;            /* token events seen (usage when cut short) */
    bool client_gone, failed;
    bool prompt_ids_sent;       /* return_token_ids: prompt ids go out once */
} gen_job;

/* The chunk shapes of one endpoint, for gen_stream. Each returns a choice
 * object (new reference) or NULL for "nothing to send". */
typedef struct {
    const char *object; /* "text_completion" | "chat.completion.chunk" */
    json_t *(*first)(gen_job *job);  /* before any token (chat: the role delta) */
    json_t *(*delta)(gen_job *job);  /* pending text and pieces (job->text, job->pieces) */
    json_t *(*final)(gen_job *job);  /* finish_reason */
} gen_stream_shape;

/* Request id, prompt ids (chat: rendered template; text: BOS + tokens; ids
 * as given), context check, default max_tokens, engine_request. Returns 0
 * or the status of the error it replied. */
int gen_prepare_or_reply(gen_job *job, http_req *rq, const oai_gen_request *req, const char *id_prefix);

/* Non-streaming: runs to the end, filling text, pieces, finish_reason and
 * usage. false with e set on failure (nothing sent). */
bool gen_collect(gen_job *job, api_error *e);

/* Streaming: submits (an error there is a normal HTTP error reply), then
 * sends SSE chunks until done, [DONE] last. Returns the HTTP status. */
int gen_stream(gen_job *job, const gen_stream_shape *shape);

/* {"prompt_tokens","completion_tokens","total_tokens"} (new reference). */
json_t *gen_usage_json(const gen_job *job);

/* {id, object, created, model, choices: [choice]} (choice stolen; NULL ->
 * empty choices). */
json_t *gen_envelope(const gen_job *job, const char *object, json_t *choice);

/* The prompt ids as a JSON array (return_token_ids). */
json_t *gen_ids_json(const int32_t *ids, int n);
/* The ids of pieces[0..n). */
json_t *gen_piece_ids_json(const gen_piece *p, int n);

/* One generation endpoint: how it parses its body, names its ids, streams
 * and builds its non-streaming choice (gen_endpoint.c). */
typedef struct {
    const char *id_prefix; /* "cmpl" | "chatcmpl" */
    bool (*parse)(const json_t *body, const oai_ctx *ctx, oai_gen_request *r, api_error *e);
    const gen_stream_shape *shape;
    const char *object;               /* non-streaming object: "text_completion" | "chat.completion" */
    json_t *(*choice)(gen_job *job);  /* non-streaming choice from the collected job (new reference) */
} gen_endpoint;

/* The whole request: body, parse, prepare, stream or collect, reply, finish.
 * Returns the HTTP status it answered. */
int gen_handle(http_req *rq, const gen_endpoint *ep);

/* Counts metrics, writes the log facts into job->rq->detail (http.c logs
 * the line), frees the job. Call once after gen_prepare_or_reply, whatever
 * it returned. */
void gen_finish(gen_job *job);

#endif
