/* engine_submit: validates a request completely (so the engine thread only
 * sees runnable work), copies it into a sched_req and queues it; EBUSY when
 * max_queue requests already wait. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.h"
#include "stream.h"

static ps_status sched_check_sampling(const engine_request *q, ps_err *err) {
    if (q->max_tokens < 0) return ps_errf(err, PS_EINVAL, "max_tokens %d must be >= 0", q->max_tokens);
    if (!(q->temperature >= 0.0f && q->temperature <= 2.0f)) /* also rejects NaN */
        return ps_errf(err, PS_EINVAL, "temperature %g must be in [0, 2]", (double)q->temperature);
    if (!(q->top_p > 0.0f && q->top_p <= 1.0f))
        return ps_errf(err, PS_EINVAL, "top_p %g must be in (0, 1]", (double)q->top_p);
    if (q->top_k < 0) return ps_errf(err, PS_EINVAL, "top_k %d must be >= 0 (0 = off)", q->top_k);
    if (q->logprobs < -1 || q->logprobs > ENGINE_MAX_TOP_LOGPROBS)
        return ps_errf(err, PS_EINVAL, "logprobs %d must be in 0..%d (-1 = none)", q->logprobs,
                       ENGINE_MAX_TOP_LOGPROBS);
    if (q->n_stop < 0 || q->n_stop > ENGINE_MAX_STOPS)
        return ps_errf(err, PS_EINVAL, "stop: %d strings, at most %d", q->n_stop, ENGINE_MAX_STOPS);
    if (q->n_stop > 0 && !q->stop) return ps_errf(err, PS_EINVAL, "stop: %d strings but no array", q->n_stop);
    for (int i = 0; i < q->n_stop; i++) {
        size_t n = q->stop[i] ? strlen(q->stop[i]) : 0;
        if (n == 0) return ps_errf(err, PS_EINVAL, "stop[%d] is empty", i);
        if (n > ENGINE_MAX_STOP_BYTES)
            return ps_errf(err, PS_EINVAL, "stop[%d] is %zu bytes, at most %d", i, n,
                           ENGINE_MAX_STOP_BYTES);
    }
    return PS_OK;
}

static ps_status sched_check_request(const engine *e, const engine_request *q, int n_extra, ps_err *err) {
    if (!q) return ps_errf(err, PS_EINVAL, "request is NULL");
    if (q->n_prompt < 1 || !q->prompt_ids)
        return ps_errf(err, PS_EINVAL, "prompt has %d tokens, need at least 1", q->n_prompt);
    ps_status st = sched_check_sampling(q, err);
    if (st) return st;
    for (int t = 0; t < q->n_prompt; t++)
        if (q->prompt_ids[t] < 0 || q->prompt_ids[t] >= e->V)
            return ps_errf(err, PS_EINVAL, "prompt token %d: id %d out of range [0, %d)", t,
                           (int)q->prompt_ids[t], e->V);
    int64_t total = (int64_t)q->n_prompt + q->max_tokens + n_extra;
    if (total > e->ctx_len)
        return ps_errf(err, PS_ETOOLARGE,
                       "prompt of %d tokens + max_tokens %d%s = %lld exceeds the context length %d",
                       q->n_prompt, q->max_tokens, n_extra ? " + the adapter's virtual tokens" : "",
                       (long long)total, e->ctx_len);
    return PS_OK;
}

void sched_req_free(sched_req *r) {
    if (!r) return;
    if (r->stream) stream_engine_release(r->stream);
    if (r->adapter) adapter_registry_unpin(r->reg, r->adapter);
    stop_free(&r->stop);
    free(r->prompt);
    free(r);
}

static ps_status sched_req_make(const engine_request *q, sched_req **out, ps_err *err) {
    sched_req *r = calloc(1, sizeof *r);
    if (!r) return ps_errf(err, PS_ENOMEM, "request: out of memory");
    r->prompt = malloc((size_t)q->n_prompt * sizeof *r->prompt);
    if (!r->prompt) {
        free(r);
        return ps_errf(err, PS_ENOMEM, "request prompt of %d tokens: out of memory", q->n_prompt);
    }
    memcpy(r->prompt, q->prompt_ids, (size_t)q->n_prompt * sizeof *r->prompt);
    r->n_prompt = q->n_prompt;
    r->max_tokens = q->max_tokens;
    r->sp = (sampler_params){.temperature = q->temperature, .top_p = q->top_p, .top_k = q->top_k};
    r->seed = q->seed;
    r->ignore_eos = q->ignore_eos;
    r->logprobs = q->logprobs;
    r->t_submit = engine_now();
    ps_status st = stop_init(&r->stop, q->stop, q->n_stop, err);
    if (st) {
        sched_req_free(r);
        return st;
    }
    *out = r;
    return PS_OK;
}

ps_status engine_submit(engine *e, const engine_request *req, engine_stream **out, ps_err *err) {
    *out = NULL;
    adapter *ad = NULL; /* pinned for the request's lifetime: DELETE lets it finish */
    ps_status st = req && req->adapter ? adapter_registry_pin(e->adapters, req->adapter, &ad, err) : PS_OK;
    if (st) return st;
    int n_extra = !ad ? 0 : ad->kind == ADAPTER_PREFIX ? ad->n_prefix : ad->kind == ADAPTER_PROMPT ? ad->n_virtual : 0;
    sched_req *r = NULL;
    if ((st = sched_check_request(e, req, n_extra, err)) || (st = sched_req_make(req, &r, err))) {
        adapter_registry_unpin(e->adapters, ad);
        return st;
    }
    r->adapter = ad;
    r->reg = e->adapters;
    r->n_extra = n_extra;

    pthread_mutex_lock(&e->mu);
    if (e->stopping) {
        st = ps_errf(err, PS_ESHUTDOWN, "engine is shutting down");
    } else if (!e->healthy) {
        st = ps_errf(err, PS_EDEVICE, "engine unhealthy after a device error: %s", e->device_err.msg);
    } else if (e->n_waiting >= e->max_queue) {
        st = ps_errf(err, PS_EBUSY, "engine queue is full (%d requests waiting, max_queue %d); retry later",
                     e->n_waiting, e->max_queue);
    } else {
        r->id = ++e->next_id;
        if (!req->has_seed) r->seed = r->id;
        st = stream_create(r->id, &r->stream, err);
    }
    if (st == PS_OK) {
        e->waiting[(e->wait_head + e->n_waiting) % e->max_queue] = r;
        e->n_waiting++;
        e->stat_requests++;
        *out = r->stream;
        pthread_cond_signal(&e->cv);
    }
    pthread_mutex_unlock(&e->mu);
    if (st) sched_req_free(r);
    return st;
}
