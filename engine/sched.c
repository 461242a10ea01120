/* The engine thread: continuous batching in the style of vLLM.
 *
 * Each iteration runs four named steps:
 *   sched_admit        waiting requests take free slots while KV pages allow
 *   sched_build_batch  one llama_batch: a decode token per running sequence,
 *                      then prefill chunks of admitted prompts (oldest first)
 *                      up to max_batch_tokens; long prompts span several steps
 *   sched_run_step     llama_forward over the batch
 *   sched_emit_tokens  sample, detokenise, stop checks, events (sched_emit.c)
 * New requests join between steps; finished or cancelled ones leave and give
 * their pages back at once.
 *
 * Admission policy (the simplest correct one): a request reserves every page
 * it can ever need, ceil((prompt + max_tokens - 1) / page_size) (the last
 * sampled token is never fed back), when it is admitted. A running sequence
 * therefore never runs out of KV space and nothing is ever preempted; the
 * price is that long max_tokens reserve memory they may not use. Admission is
 * FIFO: a head request that does not fit waits for pages, later ones do not
 * overtake it (no starvation of long prompts).
 *
 * Adapters: each token carries its request's adapter (the step lists the
 * distinct ones; llama_forward mixes them in one batch). A prefix-tuning
 * request gets its P prefix entries written at admission (llama_store_prefix)
 * and its prompt runs from KV entry P; a prompt-tuning request's first
 * n_virtual entries are virtual tokens fed before its prompt. In both cases
 * the RoPE position equals the KV index, as PEFT's positions do.
 *
 * Does not: preempt or swap sequences, share prefix pages, or reorder by
 * priority. */
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "engine_debug.h"
#include "engine_internal.h"
#include "stream.h"

static int sched_pages_needed(const sched_req *r) {
    int kv = r->n_extra + r->n_prompt + (r->max_tokens > 0 ? r->max_tokens - 1 : 0);
    return (kv + ENGINE_PAGE_SIZE - 1) / ENGINE_PAGE_SIZE;
}

static void sched_publish_stats(engine *e) {
    pthread_mutex_lock(&e->mu);
    e->stat_running = e->n_running;
    e->stat_kv_free = e->kv.n_free;
    e->stat_generated += e->stat_step_generated;
    e->stat_prompt += e->stat_step_prompt;
    pthread_mutex_unlock(&e->mu);
    e->stat_step_generated = 0;
    e->stat_step_prompt = 0;
}

void sched_seq_release(engine *e, int slot) {
    sched_seq *s = &e->seqs[slot];
    int32_t *row = e->block_tables + (size_t)slot * e->max_pages;
    for (int p = 0; p < s->n_pages; p++) {
        kv_cache_release_page(&e->kv, row[p]);
        row[p] = 0; /* unused entries stay valid page ids */
    }
    sched_req_free(s->req);
    memset(s, 0, sizeof *s);
    for (int i = 0; i < e->n_running; i++) {
        if (e->order[i] == slot) {
            memmove(e->order + i, e->order + i + 1, (size_t)(e->n_running - i - 1) * sizeof *e->order);
            e->n_running--;
            break;
        }
    }
    sched_publish_stats(e);
}

static int sched_seq_start(engine *e, sched_req *r) {
    int slot = 0;
    while (e->seqs[slot].state != SEQ_FREE) slot++;
    sched_seq *s = &e->seqs[slot];
    int32_t *row = e->block_tables + (size_t)slot * e->max_pages;
    s->n_pages = sched_pages_needed(r);
    for (int p = 0; p < s->n_pages; p++) {
        row[p] = kv_cache_alloc_page(&e->kv);
        PS_ASSERT(row[p] >= 0); /* sched_admit checked n_free */
    }
    s->state = SEQ_PREFILL;
    s->req = r;
    sampler_rng_seed(&s->rng, r->seed);
    tok_decoder_init(&s->dec, false); /* continuation of the prompt: keep the leading space */
    e->order[e->n_running++] = slot;
    PS_LOG_DEBUG("engine", "req=%llu admitted slot=%d prompt=%d max_tokens=%d pages=%d adapter=%s",
                 (unsigned long long)r->id, slot, r->n_prompt, r->max_tokens, s->n_pages,
                 r->adapter ? r->adapter->name : "-");
    return slot;
}

/* Prefix tuning: the adapter's P entries go into the sequence's cache first. */
static void sched_store_prefix(engine *e, int slot) {
    sched_seq *s = &e->seqs[slot];
    const adapter *a = s->req->adapter;
    if (!a || a->kind != ADAPTER_PREFIX) return;
    ps_err err = {0};
    if (llama_store_prefix(e->model, &e->kv, e->block_tables + (size_t)slot * e->max_pages, s->n_pages, a, &err)) {
        sched_fail(e, slot, &err);
        return;
    }
    s->n_ctx = a->n_prefix;
}

/* Waiting requests whose client went away are dropped without running. */
static void sched_purge_waiting(engine *e) {
    int kept = 0;
    for (int i = 0; i < e->n_waiting; i++) {
        sched_req *r = e->waiting[(e->wait_head + i) % e->max_queue];
        if (stream_cancelled(r->stream))
            sched_req_free(r);
        else
            e->waiting[(e->wait_head + kept++) % e->max_queue] = r;
    }
    e->n_waiting = kept;
}

static void sched_admit(engine *e) {
    pthread_mutex_lock(&e->mu);
    sched_purge_waiting(e);
    while (e->n_waiting > 0 && e->n_running < e->max_seqs) {
        sched_req *r = e->waiting[e->wait_head];
        if (sched_pages_needed(r) > e->kv.n_free) break; /* FIFO: wait for pages */
        e->wait_head = (e->wait_head + 1) % e->max_queue;
        e->n_waiting--;
        int slot = sched_seq_start(e, r);
        pthread_mutex_unlock(&e->mu); /* the prefix upload runs unlocked */
        sched_store_prefix(e, slot);
        pthread_mutex_lock(&e->mu);
    }
    pthread_mutex_unlock(&e->mu);
}

/* Running sequences whose client freed the stream leave before the step. */
static void sched_drop_cancelled(engine *e) {
    for (int slot = 0; slot < e->max_seqs; slot++) {
        sched_seq *s = &e->seqs[slot];
        if (s->state != SEQ_FREE && stream_cancelled(s->req->stream)) {
            PS_LOG_DEBUG("engine", "req=%llu cancelled after %d tokens",
                         (unsigned long long)s->req->id, s->n_generated);
            sched_seq_release(e, slot);
        }
    }
}

/* The step's index of a (pinned) adapter, added on first use; -1 for none. */
static int32_t sched_step_adapter(engine *e, const adapter *a) {
    if (!a) return -1;
    for (int i = 0; i < e->n_step_adapters; i++)
        if (e->step_adapters[i] == a) return i;
    e->step_adapters[e->n_step_adapters] = a;
    return e->n_step_adapters++;
}

static void sched_add_token(engine *e, int slot, int32_t id, int kv_pos) {
    int t = e->n_tokens++;
    e->b_ids[t] = id;
    e->b_pos[t] = kv_pos; /* prefix / virtual entries included: RoPE position = KV index (PEFT) */
    e->b_seq[t] = slot;
    e->b_kv_pos[t] = kv_pos;
    e->b_adapter[t] = sched_step_adapter(e, e->seqs[slot].req->adapter);
    e->b_virtual[t] = -1;
}

static void sched_add_out(engine *e, int slot) {
    e->out_rows[e->n_out] = e->n_tokens - 1;
    e->out_slot[e->n_out] = slot;
    e->n_out++;
}

static int sched_build_batch(engine *e) {
    e->n_tokens = 0;
    e->n_out = 0;
    e->n_step_adapters = 0;
    for (int i = 0; i < e->n_running; i++) e->seqs[e->order[i]].batch_n = 0;
    for (int i = 0; i < e->n_running; i++) { /* decode tokens first: they always fit */
        int slot = e->order[i];
        sched_seq *s = &e->seqs[slot];
        if (s->state != SEQ_DECODE) continue;
        sched_add_token(e, slot, s->next_token, s->n_ctx);
        sched_add_out(e, slot);
        s->batch_n = 1;
    }
    for (int i = 0; i < e->n_running && e->n_tokens < e->max_batch_tokens; i++) {
        int slot = e->order[i];
        sched_seq *s = &e->seqs[slot];
        if (s->state != SEQ_PREFILL) continue;
        const sched_req *r = s->req;
        int take = r->n_extra + r->n_prompt - s->n_ctx;
        if (take > e->max_batch_tokens - e->n_tokens) take = e->max_batch_tokens - e->n_tokens;
        for (int k = 0; k < take; k++) {
            int i = s->n_ctx + k - r->n_extra; /* prompt index; < 0: a prompt-tuning virtual token */
            sched_add_token(e, slot, i < 0 ? 0 : r->prompt[i], s->n_ctx + k);
            if (i < 0) e->b_virtual[e->n_tokens - 1] = s->n_ctx + k;
        }
        s->batch_n = take;
        if (s->n_ctx + take == r->n_extra + r->n_prompt && r->max_tokens > 0) sched_add_out(e, slot);
    }
    return e->n_tokens;
}

static ps_status sched_run_step(engine *e) {
    llama_batch b = {
        .n_tokens = e->n_tokens,
        .ids = e->b_ids,
        .pos = e->b_pos,
        .tok_seq = e->b_seq,
        .tok_kv_pos = e->b_kv_pos,
        .n_seqs = e->max_seqs, /* rows = slots; tok_seq names the slot */
        .max_pages = e->max_pages,
        .block_tables = e->block_tables,
        .n_out = e->n_out,
        .out_rows = e->out_rows,
        .n_adapters = e->n_step_adapters,
        .adapters = e->step_adapters,
        .tok_adapter = e->b_adapter,
        .tok_virtual = e->b_virtual,
    };
    ps_err err = {0};
    pthread_mutex_lock(&e->mu);
    ps_status st = e->debug_fault;
    e->debug_fault = PS_OK;
    pthread_mutex_unlock(&e->mu);
    if (st)
        ps_errf(&err, st, "injected fault (engine_debug_fail_next_step)");
    else
        st = llama_forward(e->model, &e->kv, &b, e->logits, &err);
    if (st == PS_EDEVICE) {
        PS_LOG_ERROR("engine", "device error, engine now unhealthy: %s", err.msg);
        pthread_mutex_lock(&e->mu);
        e->healthy = false;
        e->device_err = err;
        pthread_mutex_unlock(&e->mu);
        sched_fail_all(e, &err);
        return st;
    }
    if (st) { /* a bad batch is our bug, but only its sequences pay for it */
        PS_LOG_ERROR("engine", "forward step of %d tokens failed: %s", e->n_tokens, err.msg);
        for (int slot = 0; slot < e->max_seqs; slot++)
            if (e->seqs[slot].state != SEQ_FREE && e->seqs[slot].batch_n > 0) sched_fail(e, slot, &err);
        return st;
    }
    for (int i = 0; i < e->n_running; i++) {
        sched_seq *s = &e->seqs[e->order[i]];
        s->n_ctx += s->batch_n;
    }
    PS_LOG_DEBUG("engine", "step tokens=%d seqs=%d out=%d", e->n_tokens, e->n_running, e->n_out);
    return PS_OK;
}

void sched_fail_all(engine *e, const ps_err *err) {
    for (int slot = 0; e->seqs && slot < e->max_seqs; slot++)
        if (e->seqs[slot].state != SEQ_FREE) sched_fail(e, slot, err);
    engine_event ev = {.kind = ENGINE_EV_ERROR, .err = *err};
    pthread_mutex_lock(&e->mu);
    while (e->n_waiting > 0) {
        sched_req *r = e->waiting[e->wait_head];
        e->wait_head = (e->wait_head + 1) % e->max_queue;
        e->n_waiting--;
        ev.prompt_tokens = r->n_prompt;
        stream_push(r->stream, &ev);
        sched_req_free(r);
    }
    pthread_mutex_unlock(&e->mu);
}

/* Sleeps until there is work (or a stop); returns false on stop. */
static bool sched_wait_work(engine *e) {
    pthread_mutex_lock(&e->mu);
    for (;;) {
        if (e->stopping) break;
        bool spent = e->debug_budget == 0;
        if (spent != e->debug_paused) {
            e->debug_paused = spent;
            pthread_cond_broadcast(&e->debug_cv);
        }
        if (!spent && (e->n_waiting > 0 || e->n_running > 0)) break;
        pthread_cond_wait(&e->cv, &e->mu);
    }
    if (e->debug_budget > 0) e->debug_budget--;
    bool go = !e->stopping;
    pthread_mutex_unlock(&e->mu);
    return go;
}

void *sched_thread_main(void *arg) {
    engine *e = arg;
    while (sched_wait_work(e)) {
        sched_drop_cancelled(e);
        sched_admit(e);
        if (sched_build_batch(e) > 0 && sched_run_step(e) == PS_OK) sched_emit_tokens(e);
        sched_publish_stats(e);
    }
    return NULL;
}

void engine_debug_step_budget(engine *e, int steps) {
    pthread_mutex_lock(&e->mu);
    e->debug_budget = steps;
    if (steps != 0) e->debug_paused = false; /* a waiter must see the next pause, not this one */
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

void engine_debug_fail_next_step(engine *e, ps_status code) {
    pthread_mutex_lock(&e->mu);
    e->debug_fault = code;
    pthread_mutex_unlock(&e->mu);
}

void engine_debug_wait_paused(engine *e) {
    pthread_mutex_lock(&e->mu);
    while (!e->debug_paused && !e->stopping) pthread_cond_wait(&e->debug_cv, &e->mu);
    pthread_mutex_unlock(&e->mu);
}
