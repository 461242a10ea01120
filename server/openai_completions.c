/* POST /v1/completions in OpenAI's request/response shapes
 * (platform.openai.com/docs/api-reference/completions): `text_completion`
 * objects, streamed as chunks of the same object with the text delta.
 * prompt: a string (BOS added), a list of token ids (used as given, no BOS),
 * or a one-element list of either; several prompts -> 400 (n = 1 only).
 * Not supported, each a 400 naming it: suffix, best_of > 1, echo with a
 * token-id prompt or with logprobs (prompt logprobs need prompt logits the
 * engine does not return). Extensions as vLLM: return_token_ids, top_k,
 * ignore_eos. */
#include "openai_completions.h"

#include <stdlib.h>
#include <string.h>

#include "generate.h"
#include "reply.h"

static json_t *token_json(gen_job *job, int32_t id) {
    char buf[256];
    ps_err err;
    if (engine_token_text(job->srv->eng, id, buf, sizeof buf, &err) != PS_OK) buf[0] = 0;
    return json_string(buf);
}

/* {tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset} */
static json_t *logprobs_json(gen_job *job, const gen_piece *p, int n) {
    json_t *tokens = json_array(), *lps = json_array(), *tops = json_array(), *offs = json_array();
    for (int i = 0; i < n; i++) {
        json_array_append_new(tokens, token_json(job, p[i].token));
        json_array_append_new(lps, json_real(p[i].logprob));
        json_t *top = json_object();
        for (int k = 0; k < p[i].n_top; k++) {
            json_t *t = token_json(job, p[i].top_ids[k]);
            if (!json_object_get(top, json_string_value(t)))
                json_object_set_new(top, json_string_value(t), json_real(p[i].top_lp[k]));
            json_decref(t);
        }
        json_array_append_new(tops, top);
        json_array_append_new(offs, json_integer(p[i].text_offset));
    }
    return json_pack("{s:o, s:o, s:o, s:o}", "tokens", tokens, "token_logprobs", lps, "top_logprobs", tops,
                     "text_offset", offs);
}

static json_t *choice_json(gen_job *job, const char *text, const gen_piece *p, int n, const char *finish) {
    json_t *c = json_pack("{s:i, s:s, s:o, s:o}", "index", 0, "text", text ? text : "", "logprobs",
                          job->req->logprobs >= 0 && n ? logprobs_json(job, p, n) : json_null(), "finish_reason",
                          finish ? json_string(finish) : json_null());
    if (!c || !job->req->return_token_ids) return c;
    if (!job->prompt_ids_sent) json_object_set_new(c, "prompt_token_ids", gen_ids_json(job->prompt_ids, job->n_prompt));
    job->prompt_ids_sent = true;
    json_object_set_new(c, "token_ids", gen_piece_ids_json(p, n));
    return c;
}

static json_t *stream_first(gen_job *job) {
    if (!job->req->echo) return NULL;
    job->text_sent = strlen(job->req->prompt_text);
    return choice_json(job, job->req->prompt_text, NULL, 0, NULL);
}

static json_t *stream_delta(gen_job *job) { return choice_json(job, job->text, job->pieces, job->n_pieces, NULL); }

static json_t *stream_final(gen_job *job) {
    json_t *c = json_pack("{s:i, s:s, s:n, s:s}", "index", 0, "text", "", "logprobs", "finish_reason",
                          job->finish_reason);
    if (c && job->req->return_token_ids) json_object_set_new(c, "token_ids", json_array());
    return c;
}

static const gen_stream_shape completions_shape = {"text_completion", stream_first, stream_delta, stream_final};

static json_t *collected_choice(gen_job *job) {
    return choice_json(job, job->text, job->pieces, job->n_pieces, job->finish_reason);
}

static const gen_endpoint completions_endpoint = {"cmpl", oai_completions_parse, &completions_shape,
                                                  "text_completion", collected_choice};

int openai_completions_handle(http_req *rq) { return gen_handle(rq, &completions_endpoint); }
