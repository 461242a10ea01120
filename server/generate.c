/* One generation request against the engine, shared by both OpenAI
 * endpoints: prompt ids, context check, slot, engine loop, SSE loop, usage,
 * metrics and the request's log line. Does not know the endpoints' JSON
 * shapes beyond the envelope and usage, which OpenAI shares between them.
 *
 * Slots: a generation holds a CivetWeb worker until it ends, so at most
 * max_streams run at once and the rest get 503 at once rather than waiting
 * for a worker while /health and /metrics starve. */
#include "generate.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "http.h"
#include "reply.h"
#include "sse.h"

static bool prompt_ids(gen_job *job, api_error *e) {
    const oai_gen_request *req = job->req;
    engine *eng = job->srv->eng;
    ps_err err = {0};
    ps_status st;
    if (req->chat) {
        char *prompt = NULL;
        st = engine_chat_render(eng, NULL, req->msgs, req->n_msgs, &prompt, &err);
        if (st) return api_error_from_ps(e, &err, "messages");
        PS_LOG_DEBUG("server", "req=%s prompt=\"%s\"", job->id, prompt);
        st = engine_tokenize(eng, prompt, true, &job->prompt_ids, &job->n_prompt, &err);
        free(prompt);
    } else if (req->prompt_text) {
        PS_LOG_DEBUG("server", "req=%s prompt=\"%s\"", job->id, req->prompt_text);
        st = engine_tokenize(eng, req->prompt_text, true, &job->prompt_ids, &job->n_prompt, &err);
    } else {
        job->prompt_ids = malloc(sizeof(int32_t) * (size_t)req->n_prompt_ids);
        if (!job->prompt_ids) return api_errorf(e, SRV_ERR_INTERNAL, NULL, "out of memory copying the prompt");
        memcpy(job->prompt_ids, req->prompt_ids, sizeof(int32_t) * (size_t)req->n_prompt_ids);
        job->n_prompt = req->n_prompt_ids;
        st = PS_OK;
    }
    if (st) return api_error_from_ps(e, &err, req->chat ? "messages" : "prompt");
    if (job->n_prompt < 1) return api_errorf(e, SRV_ERR_INVALID_REQUEST, "prompt", "the prompt has no tokens");
    return true;
}

/* OpenAI's wording, with both numbers, so clients that parse it still can */
static bool context_check(gen_job *job, api_error *e) {
    /* an adapter's virtual tokens (prefix / prompt tuning) occupy the context too */
    int ctx = job->srv->ctx_len, n = job->n_prompt + job->req->adapter_extra, want = job->req->max_tokens;
    const char *param = job->req->chat ? "messages" : "prompt";
    if (ctx <= 0) return true;
    if (n >= ctx)
        return api_errorf(e, SRV_ERR_CONTEXT_LENGTH, param,
                          "this model's maximum context length is %d tokens, however the prompt has %d tokens "
                          "(no room left for the completion)",
                          ctx, n);
    if (want > 0 && (long long)n + want > ctx)
        return api_errorf(e, SRV_ERR_CONTEXT_LENGTH, "max_tokens",
                          "this model's maximum context length is %d tokens, however you requested %lld tokens "
                          "(%d in the prompt, %d for the completion); reduce the prompt or max_tokens",
                          ctx, (long long)n + want, n, want);
    return true;
}

int gen_prepare_or_reply(gen_job *job, http_req *rq, const oai_gen_request *req, const char *id_prefix) {
    server *srv = rq->srv;
    memset(job, 0, sizeof *job);
    job->srv = srv;
    job->rq = rq;
    job->conn = rq->conn;
    job->req = req;
    job->t0_ms = server_now_ms();
    job->created = (long long)time(NULL);
    server_new_id(srv, id_prefix, job->id, sizeof job->id);
    snprintf(rq->id, sizeof rq->id, "%s", job->id);
    api_error e = {0};
    if (!prompt_ids(job, &e) || !context_check(job, &e)) return reply_error(job->conn, &e);
    int room = srv->ctx_len > 0 ? srv->ctx_len - job->n_prompt - req->adapter_extra : srv->opts.default_max_tokens;
    engine_request *er = &job->ereq;
    er->prompt_ids = job->prompt_ids;
    er->n_prompt = job->n_prompt;
    er->max_tokens = req->max_tokens > 0 ? req->max_tokens
                                         : (room < srv->opts.default_max_tokens ? room : srv->opts.default_max_tokens);
    er->temperature = req->temperature;
    er->top_p = req->top_p;
    er->top_k = req->top_k;
    er->seed = req->seed;
    er->has_seed = req->has_seed;
    er->stop = req->stop;
    er->n_stop = req->n_stop;
    er->ignore_eos = req->ignore_eos;
    er->logprobs = req->logprobs;
    er->adapter = req->adapter;
    return 0;
}

static bool text_append(gen_job *job, const char *s, size_t n) {
    if (job->text_len + n + 1 > job->text_cap) {
        size_t cap = job->text_cap ? job->text_cap * 2 : 1024;
        while (cap < job->text_len + n + 1) cap *= 2;
        char *t = realloc(job->text, cap);
        if (!t) return false;
        job->text = t;
        job->text_cap = cap;
    }
    memcpy(job->text + job->text_len, s, n);
    job->text_len += n;
    job->text[job->text_len] = 0;
    return true;
}

/* A TOKEN event: a new token (a piece), or with cont more text of the
 * previous one (long pieces, text held for a stop string released at EOS),
 * which must not count as a token. */
static bool add_piece(gen_job *job, const engine_event *ev) {
    if (ev->cont) return text_append(job, ev->text, strnlen(ev->text, sizeof ev->text));
    if (job->n_pieces == job->cap_pieces) {
        int cap = job->cap_pieces ? job->cap_pieces * 2 : 64;
        gen_piece *p = realloc(job->pieces, sizeof *p * (size_t)cap);
        if (!p) return false;
        job->pieces = p;
        job->cap_pieces = cap;
    }
    gen_piece *p = &job->pieces[job->n_pieces++];
    p->token = ev->token;
    p->logprob = ev->logprob;
    p->n_top = ev->n_top < 0 ? 0 : ev->n_top > ENGINE_MAX_TOP_LOGPROBS ? ENGINE_MAX_TOP_LOGPROBS : ev->n_top;
    memcpy(p->top_ids, ev->top_ids, sizeof(int32_t) * (size_t)p->n_top);
    memcpy(p->top_lp, ev->top_logprobs, sizeof(float) * (size_t)p->n_top);
    p->text_offset = (int)(job->text_sent + job->text_len);
    job->n_generated++;
    if (job->t_first_ms == 0) job->t_first_ms = server_now_ms();
    return text_append(job, ev->text, strnlen(ev->text, sizeof ev->text));
}

static void set_done(gen_job *job, const engine_event *ev) {
    job->finish_reason = ev->finish_reason ? ev->finish_reason : "stop";
    job->prompt_tokens = ev->prompt_tokens > 0 ? ev->prompt_tokens : job->n_prompt;
    job->completion_tokens = ev->completion_tokens > 0 ? ev->completion_tokens : job->n_generated;
}

/* Slot + submit; on failure e is set and nothing is held. */
static bool start(gen_job *job, engine_stream **s, api_error *e) {
    server *srv = job->srv;
    if (atomic_load(&srv->stopping))
        return api_errorf(e, SRV_ERR_UNAVAILABLE, NULL, "the server is shutting down");
    if (!server_gen_acquire(srv)) {
        atomic_fetch_add(&srv->metrics.rejected_busy, 1);
        return api_errorf(e, SRV_ERR_BUSY, NULL,
                          "the server is busy: %d generations are running (limit %d); retry shortly",
                          atomic_load(&srv->active_gens), srv->opts.max_streams);
    }
    job->has_slot = true;
    ps_err err = {0};
    if (engine_submit(srv->eng, &job->ereq, s, &err) != PS_OK) return api_error_from_ps(e, &err, NULL);
    return true;
}

bool gen_collect(gen_job *job, api_error *e) {
    engine_stream *s = NULL;
    if (!start(job, &s, e)) return false;
    if (job->req->echo && job->req->prompt_text &&
        !text_append(job, job->req->prompt_text, strlen(job->req->prompt_text))) {
        engine_stream_free(s);
        return api_errorf(e, SRV_ERR_INTERNAL, NULL, "out of memory");
    }
    bool ok = true;
    for (;;) {
        engine_event ev;
        engine_stream_next(s, &ev);
        if (ev.kind == ENGINE_EV_DONE) {
            set_done(job, &ev);
            break;
        }
        if (ev.kind == ENGINE_EV_ERROR) {
            ok = api_error_from_ps(e, &ev.err, NULL);
            break;
        }
        if (!add_piece(job, &ev)) {
            ok = api_errorf(e, SRV_ERR_INTERNAL, NULL, "out of memory collecting the completion");
            break;
        }
        if (atomic_load(&job->srv->cancel_all)) {
            ok = api_errorf(e, SRV_ERR_UNAVAILABLE, NULL, "the server is shutting down");
            break;
        }
    }
    engine_stream_free(s);
    job->failed = !ok;
    return ok;
}

json_t *gen_usage_json(const gen_job *job) {
    return json_pack("{s:i, s:i, s:i}", "prompt_tokens", job->prompt_tokens, "completion_tokens",
                     job->completion_tokens, "total_tokens", job->prompt_tokens + job->completion_tokens);
}

json_t *gen_envelope(const gen_job *job, const char *object, json_t *choice) {
    json_t *choices = json_array();
    if (choice) json_array_append_new(choices, choice);
    json_t *o = json_pack("{s:s, s:s, s:I, s:s, s:o}", "id", job->id, "object", object, "created",
                          (json_int_t)job->created, "model", job->req->model, "choices", choices);
    if (o && job->req->stream && job->req->include_usage) json_object_set_new(o, "usage", json_null());
    return o;
}

json_t *gen_ids_json(const int32_t *ids, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_integer(ids[i]));
    return a;
}

json_t *gen_piece_ids_json(const gen_piece *p, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_integer(p[i].token));
    return a;
}

static bool send_choice(gen_job *job, sse_writer *w, const gen_stream_shape *shape, json_t *choice) {
    if (!choice) return true;
    json_t *env = gen_envelope(job, shape->object, choice);
    bool ok = env && sse_send_json(w, env);
    json_decref(env);
    return ok;
}

/* Sends what is pending (text and/or pieces) as one delta, then clears it. */
static bool flush_pending(gen_job *job, sse_writer *w, const gen_stream_shape *shape) {
    if (job->text_len == 0 && job->n_pieces == 0) return true;
    bool ok = send_choice(job, w, shape, shape->delta(job));
    job->text_sent += job->text_len;
    job->text_len = 0;
    if (job->text) job->text[0] = 0;
    job->n_pieces = 0;
    return ok;
}

static bool send_error_event(sse_writer *w, const api_error *e) {
    json_t *err = reply_error_json(e);
    bool ok = err && sse_send_json(w, err);
    json_decref(err);
    return ok && sse_send_done(w);
}

static void stream_end(gen_job *job, sse_writer *w, const gen_stream_shape *shape) {
    send_choice(job, w, shape, shape->final(job));
    if (job->req->include_usage) {
        json_t *env = gen_envelope(job, shape->object, NULL);
        if (env) json_object_set_new(env, "usage", gen_usage_json(job));
        if (env) sse_send_json(w, env);
        json_decref(env);
    }
    sse_send_done(w);
}

int gen_stream(gen_job *job, const gen_stream_shape *shape) {
    engine_stream *s = NULL;
    api_error e = {0};
    if (!start(job, &s, &e)) {
        job->failed = true;
        return reply_error(job->conn, &e);
    }
    sse_writer w;
    sse_begin(&w, job->conn);
    if (shape->first) send_choice(job, &w, shape, shape->first(job));
    while (!w.failed) {
        engine_event ev;
        engine_stream_next(s, &ev);
        if (ev.kind == ENGINE_EV_DONE) {
            set_done(job, &ev);
            if (flush_pending(job, &w, shape)) stream_end(job, &w, shape);
            break;
        }
        if (ev.kind == ENGINE_EV_ERROR) {
            api_error_from_ps(&e, &ev.err, NULL);
            job->failed = true;
            send_error_event(&w, &e);
            break;
        }
        if (!add_piece(job, &ev)) {
            api_errorf(&e, SRV_ERR_INTERNAL, NULL, "out of memory streaming the completion");
            job->failed = true;
            send_error_event(&w, &e);
            break;
        }
        /* empty text = a partial UTF-8 character: wait for the rest */
        if (job->text_len > 0) flush_pending(job, &w, shape);
        if (atomic_load(&job->srv->cancel_all)) {
            api_errorf(&e, SRV_ERR_UNAVAILABLE, NULL, "the server is shutting down");
            job->failed = true;
            send_error_event(&w, &e);
            break;
        }
    }
    job->client_gone = w.failed;
    engine_stream_free(s); /* cancels the generation when the client left early */
    return 200;
}

void gen_finish(gen_job *job) {
    server *srv = job->srv;
    server_metrics *m = &srv->metrics;
    double now = server_now_ms();
    const char *how = job->client_gone ? "client_gone" : job->failed ? "error" : job->finish_reason;
    if (job->has_slot) {
        server_gen_release(srv);
        metrics_observe_latency(m, (now - job->t0_ms) / 1e3);
        if (job->t_first_ms > 0) metrics_observe_ttft(m, (job->t_first_ms - job->t0_ms) / 1e3);
        if (job->client_gone) atomic_fetch_add(&m->client_gone, 1);
        else if (job->failed) atomic_fetch_add(&m->finish_error, 1);
        else if (how && !strcmp(how, "length")) atomic_fetch_add(&m->finish_length, 1);
        else atomic_fetch_add(&m->finish_stop, 1);
        atomic_fetch_add(&m->prompt_tokens, (uint_fast64_t)(job->prompt_tokens > 0 ? job->prompt_tokens : 0));
        atomic_fetch_add(&m->completion_tokens, (uint_fast64_t)job->completion_tokens);
    }
    if (!job->completion_tokens) job->completion_tokens = job->n_generated;
    snprintf(job->rq->detail, sizeof job->rq->detail, "stream=%d prompt=%d completion=%d finish=%s ttft_ms=%.1f",
             job->req->stream ? 1 : 0, job->n_prompt, job->completion_tokens, how ? how : "-",
             job->t_first_ms > 0 ? job->t_first_ms - job->t0_ms : 0.0);
    free(job->prompt_ids);
    free(job->text);
    free(job->pieces);
    memset(job, 0, sizeof *job);
}
