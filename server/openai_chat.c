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
#include "adapters_routes.h"
#include "reply.h"
#include "request.h"

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

static int reply_collected(gen_job *job) {
    api_error e = {0};
    if (!gen_collect(job, &e)) return reply_error(job->conn, &e);
    json_t *c = json_pack("{s:i, s:{s:s, s:s}, s:o, s:s}", "index", 0, "message", "role", "assistant", "content",
                          job->text ? job->text : "", "logprobs", lp_or_null(job, job->pieces, job->n_pieces),
                          "finish_reason", job->finish_reason);
    add_token_ids(job, c, job->pieces, job->n_pieces);
    json_t *o = gen_envelope(job, "chat.completion", c);
    if (!o) return reply_errorf(job->conn, SRV_ERR_INTERNAL, NULL, "out of memory building the reply");
    json_object_set_new(o, "usage", gen_usage_json(job));
    int st = reply_json(job->conn, 200, o, NULL);
    json_decref(o);
    return st;
}

int openai_chat_handle(http_req *rq) {
    server *srv = rq->srv;
    json_t *body = NULL;
    int st = request_json_or_reply(rq->conn, srv->opts.max_body, &body);
    if (st) return st;
    oai_ctx ctx = {srv->model_id, srv->vocab_size, adapters_find_for_model, srv};
    oai_gen_request req;
    api_error e = {0};
    if (!oai_chat_parse(body, &ctx, &req, &e)) {
        st = reply_error(rq->conn, &e);
    } else {
        gen_job job;
        st = gen_prepare_or_reply(&job, rq, &req, "chatcmpl");
        if (!st) st = req.stream ? gen_stream(&job, &chat_shape) : reply_collected(&job);
        gen_finish(&job);
    }
    oai_gen_request_free(&req);
    json_decref(body);
    return st;
}
