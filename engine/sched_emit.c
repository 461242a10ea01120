/* sched_emit_tokens: after a forward step, samples each sequence's next
 * token, turns it into text (streaming detokenisation, then the stop-string
 * window) and sends events; decides when a sequence finishes.
 *
 * Finish rules, in order: EOS (unless ignore_eos) ends with "stop" and is
 * neither sent nor counted; a completed stop string ends with "stop" (the
 * text before it is sent with the token that completed it); the max_tokens-th
 * token ends with "length". On every finish the decoder's pending bytes and
 * any text held back for a stop string are released, so no text is lost.
 *
 * Text longer than an event's buffer goes out as continuation events
 * (stream_push_text): never truncated, never a split character. */
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "engine_internal.h"
#include "stream.h"

/* The sequence leaves first (pages back, counters published), then the
 * final event goes out: a client that saw it sees the freed state in
 * engine_get_info. */
static void sched_end(engine *e, int slot, const engine_event *ev) {
    sched_req *r = e->seqs[slot].req;
    engine_stream *st = r->stream;
    r->stream = NULL; /* the engine's reference moves here */
    sched_seq_release(e, slot);
    stream_push(st, ev);
    stream_engine_release(st);
}

void sched_finish(engine *e, int slot, const char *reason) {
    sched_seq *s = &e->seqs[slot];
    sched_req *r = s->req;
    engine_event ev = {.kind = ENGINE_EV_DONE, .finish_reason = reason, .token = -1,
                       .prompt_tokens = r->n_prompt, .completion_tokens = s->n_generated};
    PS_LOG_INFO("engine", "req=%llu finished reason=%s prompt=%d tokens=%d ms=%.1f",
                (unsigned long long)r->id, reason, r->n_prompt, s->n_generated,
                1e3 * (engine_now() - r->t_submit));
    sched_end(e, slot, &ev);
}

void sched_fail(engine *e, int slot, const ps_err *err) {
    sched_seq *s = &e->seqs[slot];
    engine_event ev = {.kind = ENGINE_EV_ERROR, .token = -1, .err = *err,
                       .prompt_tokens = s->req->n_prompt, .completion_tokens = s->n_generated};
    PS_LOG_INFO("engine", "req=%llu failed: %s", (unsigned long long)s->req->id, err->msg);
    sched_end(e, slot, &ev);
}

/* Decodes id into e->piece (growing it); returns the byte count. 16 bytes
 * stay free behind the piece for a tok_decode_flush. */
static int sched_decode(engine *e, sched_seq *s, int32_t id) {
    if (id >= tok_vocab_size(e->tok)) return 0; /* embedding padding rows have no text */
    for (;;) {
        int k = tok_decode_next(e->tok, &s->dec, id, e->piece, e->piece_cap - 16);
        if (k >= 0) return k;
        char *p = e->piece_cap < (1 << 24) ? realloc(e->piece, (size_t)e->piece_cap * 2) : NULL;
        if (!p) return -1;
        e->piece = p;
        e->piece_cap *= 2;
    }
}

/* End of the text: decoder leftovers and held-back stop text. */
static ps_status sched_drain(engine *e, sched_seq *s, int k, stop_result *res, ps_err *err) {
    int f = tok_decode_flush(e->tok, &s->dec, e->piece + k, e->piece_cap - k);
    if (f > 0) k += f;
    return stop_feed(&s->req->stop, e->piece, (size_t)k, true, res, err);
}

static void sched_on_token(engine *e, int slot, const engine_event *tmpl) {
    sched_seq *s = &e->seqs[slot];
    sched_req *r = s->req;
    stop_result res;
    ps_err err = {0};
    if (tmpl->token == e->eos_id && !r->ignore_eos) {
        if (sched_drain(e, s, 0, &res, &err)) goto fail;
        if (res.n > 0) { /* held-back text: more of the previous token, EOS itself is not sent */
            engine_event ev = *tmpl;
            ev.token = s->next_token;
            ev.completion_tokens = s->n_generated;
            stream_push_text(r->stream, &ev, res.text, res.n, true);
        }
        sched_finish(e, slot, "stop");
        return;
    }
    s->n_generated++;
    e->stat_step_generated++;
    bool last = s->n_generated == r->max_tokens;
    int k = sched_decode(e, s, tmpl->token);
    if (k < 0) {
        ps_errf(&err, PS_ENOMEM, "token %d: text buffer could not grow", (int)tmpl->token);
        goto fail;
    }
    if (last ? sched_drain(e, s, k, &res, &err)
             : stop_feed(&r->stop, e->piece, (size_t)k, false, &res, &err))
        goto fail;
    engine_event ev = *tmpl;
    ev.completion_tokens = s->n_generated;
    stream_push_text(r->stream, &ev, res.text, res.n, false);
    if (res.stopped)
        sched_finish(e, slot, "stop");
    else if (last)
        sched_finish(e, slot, "length");
    else
        s->next_token = tmpl->token;
    return;
fail:
    sched_fail(e, slot, &err);
}

void sched_emit_tokens(engine *e) {
    for (int i = 0; i < e->n_out; i++) {
        int slot = e->out_slot[i];
        sched_seq *s = &e->seqs[slot];
        sched_req *r = s->req;
        const float *logits = e->logits + (size_t)i * e->V;
        if (s->state == SEQ_PREFILL) {
            s->state = SEQ_DECODE;
            e->stat_step_prompt += (uint64_t)r->n_prompt;
        }
        engine_event ev = {.kind = ENGINE_EV_TOKEN, .prompt_tokens = r->n_prompt};
        ev.token = sampler_sample(&r->sp, &s->rng, logits, &e->samp);
        if (r->logprobs >= 0) {
            ev.n_top = r->logprobs;
            ev.logprob = sampler_logprobs(logits, e->V, ev.token, ev.n_top, ev.top_ids, ev.top_logprobs);
        }
        sched_on_token(e, slot, &ev);
    }
    /* max_tokens == 0: the prompt was evaluated, nothing to sample */
    for (int slot = 0; slot < e->max_seqs; slot++) {
        sched_seq *s = &e->seqs[slot];
        if (s->state == SEQ_PREFILL && s->n_ctx == s->req->n_extra + s->req->n_prompt) {
            e->stat_step_prompt += (uint64_t)s->req->n_prompt;
            sched_finish(e, slot, "length");
        }
    }
}
