/* POST /v1/chat/completions in OpenAI's shapes
 * (platform.openai.com/docs/api-reference/chat): `chat.completion`, and
 * `chat.completion.chunk` when streaming (a role delta first, content deltas,
 * a last chunk with finish_reason, then a usage chunk when
 * stream_options.include_usage). Messages: role system|developer|user|
 * assistant, content a string or a list of text parts (joined with "\n", as
 * vLLM does). The prompt is the engine's chat template over the messages.
 * Not supported, each a 400 naming it: image/audio/file parts (the vision
 * head comes later), tools and tool messages, response_format other than
 * text. */
#include "openai_chat.h"

#include <stdlib.h>
#include <string.h>

#include "generate.h"
#include "reply.h"

static json_t *token_entry(gen_job *job, int32_t id, float lp) {
    char buf[256];
    ps_err err;
    if (engine_token_text(job->srv->eng, id, buf, sizeof buf, &err) != PS_OK) buf[0] = 0;
    json_t *bytes = json_array();
    for (const unsigned char *b = (const unsigned char *)buf; *b; b++) json_array_append_new(bytes, json_integer(*b));
    return json_pack("{s:s, s:f, s:o}", "token", buf, "logprob", (double)lp, "bytes", bytes);
}

/* {"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]} */
static json_t *logprobs_json(gen_job *job, const gen_piece *p, int n) {
    json_t *content = json_array();
    for (int i = 0; i < n; i++) {
        json_t *ent = token_entry(job, p[i].token, p[i].logprob);
        json_t *tops = json_array();
        for (int k = 0; k < p[i].n_top; k++) json_array_append_new(tops, token_entry(job, p[i].top_ids[k], p[i].top_lp[k]));
        json_object_set_new(ent, "top_logprobs", tops);
        json_array_append_new(content, ent);
    }
    return json_pack("{s:o}", "content", content);
}

static void add_token_ids(gen_job *job, json_t *c, const gen_piece *p, int n) {
    if (!c || !job->req->return_token_ids) return;
    if (!job->prompt_ids_sent) json_object_set_new(c, "prompt_token_ids", gen_ids_json(job->prompt_ids, job->n_prompt));
    job->prompt_ids_sent = true;
    json_object_set_new(c, "token_ids", gen_piece_ids_json(p, n));
}

static json_t *lp_or_null(gen_job *job, const gen_piece *p, int n) {
    return job->req->logprobs >= 0 && n ? logprobs_json(job, p, n) : json_null();
}

static json_t *stream_first(gen_job *job) {
    json_t *c = json_pack("{s:i, s:{s:s, s:s}, s:n, s:n}", "index", 0, "delta", "role", "assistant", "content", "",
                          "logprobs", "finish_reason");
    add_token_ids(job, c, NULL, 0);
    return c;
}

static json_t *stream_delta(gen_job *job) {
    json_t *c = json_pack("{s:i, s:{s:s}, s:o, s:n}", "index", 0, "delta", "content", job->text ? job->text : "",
                          "logprobs", lp_or_null(job, job->pieces, job->n_pieces), "finish_reason");
    add_token_ids(job, c, job->pieces, job->n_pieces);
    return c;
}

static json_t *stream_final(gen_job *job) {
    return json_pack("{s:i, s:{}, s:n, s:s}", "index", 0, "delta", "logprobs", "finish_reason", job->finish_reason);
}

static const gen_stream_shape chat_shape = {"chat.completion.chunk", stream_first, stream_delta, stream_final};

/* the non-streaming choice: the whole message */
static json_t *collected_choice(gen_job *job) {
    json_t *c = json_pack("{s:i, s:{s:s, s:s}, s:o, s:s}", "index", 0, "message", "role", "assistant", "content",
                          job->text ? job->text : "", "logprobs", lp_or_null(job, job->pieces, job->n_pieces),
                          "finish_reason", job->finish_reason);
    if (c) add_token_ids(job, c, job->pieces, job->n_pieces);
    return c;
}

static const gen_endpoint chat_endpoint = {"chatcmpl", oai_chat_parse, &chat_shape, "chat.completion",
                                           collected_choice};

int openai_chat_handle(http_req *rq) { return gen_handle(rq, &chat_endpoint); }
