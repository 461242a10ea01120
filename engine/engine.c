/* The engine's lifecycle and its client-side calls: engine_init (backend,
 * model, tokenizer, chat template, KV cache, engine thread), engine_free,
 * request validation and queueing (engine_submit), info and text helpers.
 * The scheduling itself lives in sched.c and sched_emit.c, the reply channel
 * in stream.c.
 *
 * Adapters: the registry is opened here (engine_adapters.c); requests pin
 * theirs in engine_submit (sched_submit.c).
 *
 * Does not: run more than one model. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/log.h"
#include "engine_internal.h"
#include "stream.h"

double engine_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- engine_init steps ---- */

const char *engine_dtype_name(ps_dtype dt) {
    return dt == PS_DT_F16 ? "f16" : dt == PS_DT_BF16 ? "bf16" : "f32";
}

/* The KV cache dtype a --kv-dtype name asks for (NULL: the default). */
static ps_status engine_kv_dtype(const char *name, ps_dtype *dt, ps_err *err) {
    if (!name) name = ENGINE_KV_DTYPE_DEFAULT;
    if (strcmp(name, "f32") == 0) *dt = PS_DT_F32;
    else if (strcmp(name, "f16") == 0) *dt = PS_DT_F16;
    else if (strcmp(name, "bf16") == 0) *dt = PS_DT_BF16;
    else return ps_errf(err, PS_EINVAL, "kv_dtype '%s' is not one of f32, f16, bf16", name);
    return PS_OK;
}

static ps_status engine_check_opts(const engine_opts *o, llama_quant *q, ps_dtype *kv_dt, ps_err *err) {
    ps_status st = engine_kv_dtype(o->kv_dtype, kv_dt, err);
    if (st) return st;
    if (!o->quant || strcmp(o->quant, "nf4") == 0)
        *q = LLAMA_QUANT_NF4;
    else if (strcmp(o->quant, "none") == 0)
        *q = LLAMA_QUANT_NONE;
    else
        return ps_errf(err, PS_EINVAL, "quant '%s' is not one of nf4, none", o->quant);
    if (o->device && strcmp(o->device, "cpu") != 0 && strcmp(o->device, "cuda") != 0)
        return ps_errf(err, PS_EINVAL, "device '%s' is not one of cpu, cuda", o->device);
    if (o->max_seqs < 1) return ps_errf(err, PS_EINVAL, "max_seqs %d must be >= 1", o->max_seqs);
    if (o->max_batch_tokens < o->max_seqs)
        return ps_errf(err, PS_EINVAL,
                       "max_batch_tokens %d must be >= max_seqs %d (every running sequence "
                       "decodes one token per step)",
                       o->max_batch_tokens, o->max_seqs);
    if (o->max_queue < 1) return ps_errf(err, PS_EINVAL, "max_queue %d must be >= 1", o->max_queue);
    if (o->ctx_len < 0) return ps_errf(err, PS_EINVAL, "ctx_len %d must be >= 0 (0 = model max)", o->ctx_len);
    if (o->kv_pages < 0) return ps_errf(err, PS_EINVAL, "kv_pages %d must be >= 0 (0 = auto)", o->kv_pages);
    return PS_OK;
}

/* device NULL: CUDA when it works, else the CPU; "cuda" named explicitly must work. */
static ps_status engine_open_backend(engine *e, const engine_opts *o, ps_err *err) {
    if (!o->device || strcmp(o->device, "cuda") == 0) {
        ps_err cerr = {0};
        if (ps_backend_cuda_create(0, &e->be, &cerr) == PS_OK) {
            e->device_name = "cuda";
            return PS_OK;
        }
        e->be = NULL;
        if (o->device) {
            if (err) *err = cerr;
            return ps_err_wrap(err, "device cuda");
        }
        PS_LOG_INFO("engine", "cuda backend unavailable (%s); using cpu", cerr.msg);
    }
    e->device_name = "cpu";
    return ps_backend_cpu_create(o->threads, &e->be, err);
}

static void engine_set_model_id(engine *e, const engine_opts *o) {
    const char *id = o->model_id;
    char tmp[sizeof e->model_id];
    if (!id && e->demo) id = "peftserve-demo";
    if (!id) { /* folder name, trailing slashes ignored */
        snprintf(tmp, sizeof tmp, "%s", o->model_dir);
        size_t n = strlen(tmp);
        while (n > 1 && tmp[n - 1] == '/') tmp[--n] = 0;
        const char *slash = strrchr(tmp, '/');
        id = slash && slash[1] ? slash + 1 : tmp;
    }
    snprintf(e->model_id, sizeof e->model_id, "%s", id);
}

static ps_status engine_open_model(engine *e, const engine_opts *o, llama_quant q, ps_err *err) {
    double t0 = engine_now();
    ps_status st;
    if (!o->model_dir) {
        e->demo = true;
        st = demo_model_init(e->be, q, &e->model, &e->tok, err);
        if (st) return st;
    } else {
        char path[4096];
        snprintf(path, sizeof path, "%s/tokenizer.model", o->model_dir);
        if (access(path, R_OK) != 0)
            return ps_errf(err, PS_ENOTFOUND,
                           "tokenizer.model not found in '%s' (a SentencePiece tokenizer.model "
                           "is required beside config.json)",
                           o->model_dir);
        st = llama_load(o->model_dir, q, e->be, &e->model, err);
        if (st) return st;
        st = tok_load_spm(path, &e->tok, err);
        if (st) return ps_err_wrap(err, "%s", path);
    }
    e->cfg = llama_get_config(e->model);
    e->V = e->cfg->vocab;
    if (tok_vocab_size(e->tok) > e->V)
        return ps_errf(err, PS_EFORMAT,
                       "tokenizer has %d pieces but the model's vocab_size is %d (tokenizer of "
                       "another model?)",
                       tok_vocab_size(e->tok), e->V);
    e->eos_id = e->cfg->eos_id >= 0 ? e->cfg->eos_id : tok_eos(e->tok);
    e->quant_name = q == LLAMA_QUANT_NF4 ? "nf4" : "none";
    engine_set_model_id(e, o);
    PS_LOG_INFO("engine", "model loaded id=%s demo=%d weights=%lld bytes device=%s quant=%s ms=%.1f",
                e->model_id, (int)e->demo, (long long)llama_weight_bytes(e->model),
                e->device_name, e->quant_name, 1e3 * (engine_now() - t0));
    return PS_OK;
}

static ps_status engine_pick_template(engine *e, const engine_opts *o, ps_err *err) {
    if (o->chat_template) return chat_template_by_name(o->chat_template, &e->chat, err);
    if (e->demo) {
        e->chat = CHAT_TMPL_CHATML;
        return PS_OK;
    }
    ps_status st = chat_template_detect_dir(o->model_dir, &e->chat, err);
    if (st) return st;
    if (e->chat == CHAT_TMPL_NONE)
        PS_LOG_INFO("engine", "no known chat template in %s/tokenizer_config.json; chat requests "
                              "need --chat-template (%s)", o->model_dir, chat_template_names());
    return PS_OK;
}

/* Automatic KV size: every sequence at full context, but capped at
 * ENGINE_KV_AUTO_BYTES (a 7B model at 4096 tokens x 16 sequences would want
 * 64 GiB of F32 KV, 32 GiB of F16). Past the cap requests wait in the queue for pages
 * (admission reserves them) instead of the server failing to start;
 * --kv-pages sets the size explicitly. */
#define ENGINE_KV_AUTO_BYTES ((int64_t)4 << 30)
static int64_t engine_auto_kv_pages(const engine *e, const engine_opts *o) {
    const llama_config *c = e->cfg;
    int64_t page_bytes = (int64_t)c->n_layers * 2 * ENGINE_PAGE_SIZE * c->n_kv_heads *
                         c->head_dim * (int64_t)ps_dtype_size(e->kv_dtype);
    int64_t want = (int64_t)o->max_seqs * e->max_pages;
    int64_t cap = ENGINE_KV_AUTO_BYTES / page_bytes;
    if (cap < e->max_pages) cap = e->max_pages;
    if (want > cap) {
        PS_LOG_INFO("engine", "kv cache capped at %lld pages (%lld MiB) instead of %lld; "
                              "--kv-pages overrides", (long long)cap,
                    (long long)(cap * page_bytes >> 20), (long long)want);
        return cap;
    }
    return want;
}

static ps_status engine_size_cache(engine *e, const engine_opts *o, ps_err *err) {
    e->ctx_len = o->ctx_len ? o->ctx_len : e->cfg->max_pos;
    if (e->ctx_len > e->cfg->max_pos)
        return ps_errf(err, PS_EINVAL, "ctx_len %d exceeds the model's max_position_embeddings %d",
                       e->ctx_len, e->cfg->max_pos);
    e->max_pages = (e->ctx_len + ENGINE_PAGE_SIZE - 1) / ENGINE_PAGE_SIZE;
    int64_t pages = o->kv_pages ? o->kv_pages : engine_auto_kv_pages(e, o);
    if (pages < e->max_pages)
        return ps_errf(err, PS_EINVAL,
                       "kv_pages %lld too small: one sequence of ctx_len %d needs %d pages of %d "
                       "tokens",
                       (long long)pages, e->ctx_len, e->max_pages, ENGINE_PAGE_SIZE);
    if (pages > INT32_MAX) return ps_errf(err, PS_EINVAL, "kv_pages %lld too large", (long long)pages);
    ps_status st = kv_cache_init(&e->kv, e->be, e->cfg, ENGINE_PAGE_SIZE, (int)pages, e->kv_dtype, err);
    if (st) return ps_err_wrap(err, "kv cache of %lld pages", (long long)pages);
    return PS_OK;
}

/* Everything a step touches, allocated once (the decode loop never mallocs). */
static ps_status engine_alloc_step(engine *e, const engine_opts *o, ps_err *err) {
    e->max_seqs = o->max_seqs;
    e->max_batch_tokens = o->max_batch_tokens;
    e->max_queue = o->max_queue;
    size_t S = (size_t)e->max_seqs, T = (size_t)e->max_batch_tokens;
    e->waiting = calloc((size_t)e->max_queue, sizeof *e->waiting);
    e->seqs = calloc(S, sizeof *e->seqs);
    e->order = calloc(S, sizeof *e->order);
    e->block_tables = calloc(S * (size_t)e->max_pages, sizeof *e->block_tables);
    e->b_ids = calloc(T, sizeof(int32_t));
    e->b_pos = calloc(T, sizeof(int32_t));
    e->b_seq = calloc(T, sizeof(int32_t));
    e->b_kv_pos = calloc(T, sizeof(int32_t));
    e->b_adapter = calloc(T, sizeof(int32_t));
    e->b_virtual = calloc(T, sizeof(int32_t));
    e->step_adapters = calloc(S, sizeof *e->step_adapters);
    e->out_rows = calloc(S, sizeof(int32_t));
    e->out_slot = calloc(S, sizeof(int32_t));
    e->logits = calloc(S * (size_t)e->V, sizeof *e->logits);
    e->piece_cap = 1024;
    e->piece = malloc((size_t)e->piece_cap);
    if (!e->waiting || !e->seqs || !e->order || !e->block_tables || !e->b_ids || !e->b_pos ||
        !e->b_seq || !e->b_kv_pos || !e->out_rows || !e->out_slot || !e->logits || !e->piece ||
        !e->b_adapter || !e->b_virtual || !e->step_adapters)
        return ps_errf(err, PS_ENOMEM, "engine step buffers (max_seqs %d, max_batch_tokens %d): "
                                       "out of memory", e->max_seqs, e->max_batch_tokens);
    return sampler_scratch_init(&e->samp, e->V, err);
}

static ps_status engine_start(engine *e, ps_err *err) {
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    pthread_cond_init(&e->debug_cv, NULL);
    e->debug_budget = -1;
    e->mu_ready = true;
    e->healthy = true;
    e->stat_kv_free = e->kv.n_free;
    if (pthread_create(&e->thread, NULL, sched_thread_main, e) != 0)
        return ps_errf(err, PS_ENOMEM, "engine thread: pthread_create failed");
    e->thread_started = true;
    return PS_OK;
}

ps_status engine_init(engine **out, const engine_opts *opts, ps_err *err) {
    *out = NULL;
    engine_opts o = opts ? *opts : engine_opts_default();
    llama_quant q = LLAMA_QUANT_NF4;
    ps_dtype kv_dt = PS_DT_F32;
    ps_status st = engine_check_opts(&o, &q, &kv_dt, err);
    if (st) return st;
    engine *e = calloc(1, sizeof *e);
    if (!e) return ps_errf(err, PS_ENOMEM, "engine: out of memory");
    e->kv_dtype = kv_dt;
    if ((st = engine_open_backend(e, &o, err))) goto fail;
    if ((st = engine_open_model(e, &o, q, err))) goto fail;
    if ((st = engine_open_adapters(e, &o, err))) goto fail;
    if ((st = engine_pick_template(e, &o, err))) goto fail;
    if ((st = engine_size_cache(e, &o, err))) goto fail;
    if ((st = engine_alloc_step(e, &o, err))) goto fail;
    if ((st = engine_start(e, err))) goto fail;
    PS_LOG_INFO("engine", "ready ctx_len=%d max_seqs=%d max_batch_tokens=%d kv_pages=%d kv_dtype=%s chat=%s",
                e->ctx_len, e->max_seqs, e->max_batch_tokens, e->kv.n_pages, engine_dtype_name(e->kv_dtype),
                chat_template_name(e->chat));
    *out = e;
    return PS_OK;
fail:
    engine_free(e);
    return st;
}

void engine_free(engine *e) {
    if (!e) return;
    if (e->thread_started) {
        pthread_mutex_lock(&e->mu);
        e->stopping = true;
        pthread_cond_broadcast(&e->cv);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->thread, NULL);
    }
    if (e->mu_ready) {
        ps_err shut;
        ps_errf(&shut, PS_ESHUTDOWN, "engine is shutting down");
        sched_fail_all(e, &shut);
        pthread_mutex_destroy(&e->mu);
        pthread_cond_destroy(&e->cv);
        pthread_cond_destroy(&e->debug_cv);
    }
    adapter_registry_free(e->adapters); /* every request (and its pin) is gone; before the backend */
    kv_cache_free(&e->kv);
    llama_free(e->model);
    tok_free(e->tok);
    ps_backend_destroy(e->be);
    sampler_scratch_free(&e->samp);
    free(e->waiting);
    free(e->seqs);
    free(e->order);
    free(e->block_tables);
    free(e->b_ids);
    free(e->b_pos);
    free(e->b_seq);
    free(e->b_kv_pos);
    free(e->b_adapter);
    free(e->b_virtual);
    free(e->step_adapters);
    free(e->out_rows);
    free(e->out_slot);
    free(e->logits);
    free(e->piece);
    free(e);
}

/* ---- info and text ---- */

void engine_get_info(engine *e, engine_info *out) {
    memset(out, 0, sizeof *out);
    out->model_id = e->model_id;
    out->architecture = "llama";
    out->device = e->device_name;
    out->quant = e->quant_name;
    out->chat_template = chat_template_name(e->chat);
    out->demo = e->demo;
    out->ctx_len = e->ctx_len;
    out->vocab_size = e->V;
    out->n_layers = e->cfg->n_layers;
    out->hidden = e->cfg->hidden;
    out->weight_bytes = llama_weight_bytes(e->model);
    out->kv_page_size = ENGINE_PAGE_SIZE;
    out->kv_dtype = engine_dtype_name(e->kv_dtype);
    out->kv_pages_total = e->kv.n_pages;
    adapter_info *list = NULL;
    int n = adapter_registry_list(e->adapters, &list);
    for (int i = 0; i < n; i++) {
        out->adapters_total++;
        out->adapters_resident += list[i].resident;
    }
    free(list);
    out->adapter_bytes_resident = adapter_registry_resident_bytes(e->adapters);
    pthread_mutex_lock(&e->mu);
    out->healthy = e->healthy;
    out->running = e->stat_running;
    out->waiting = e->n_waiting;
    out->requests_total = e->stat_requests;
    out->tokens_generated_total = e->stat_generated;
    out->prompt_tokens_total = e->stat_prompt;
    out->kv_pages_free = e->stat_kv_free;
    pthread_mutex_unlock(&e->mu);
}

/* A control piece usable as a text marker: "<s>", "</s>" (not "" or a byte piece). */
static const char *engine_marker(const engine *e, int32_t id) {
    const char *p = id >= 0 ? tok_piece(e->tok, id) : NULL;
    size_t n = p ? strlen(p) : 0;
    if (n < 3 || p[0] != '<' || p[n - 1] != '>' || strncmp(p, "<0x", 3) == 0) return NULL;
    return p;
}

typedef struct {
    int32_t *ids;
    int n, cap;
} engine_ids;

static ps_status engine_ids_add(engine_ids *v, const int32_t *ids, int n, ps_err *err) {
    if (n == 0) return PS_OK;
    if (v->n + n > v->cap) {
        int cap = 2 * (v->n + n) + 16;
        int32_t *p = realloc(v->ids, (size_t)cap * sizeof *p);
        if (!p) return ps_errf(err, PS_ENOMEM, "tokenize: out of memory (%d ids)", cap);
        v->ids = p;
        v->cap = cap;
    }
    memcpy(v->ids + v->n, ids, (size_t)n * sizeof *ids);
    v->n += n;
    return PS_OK;
}

ps_status engine_tokenize(engine *e, const char *text, bool add_bos, int32_t **ids, int *n,
                          ps_err *err) {
    *ids = NULL;
    *n = 0;
    if (!text) return ps_errf(err, PS_EINVAL, "tokenize: text is NULL");
    int32_t mark_id[2] = {tok_bos(e->tok), tok_eos(e->tok)};
    const char *mark[2] = {engine_marker(e, mark_id[0]), engine_marker(e, mark_id[1])};
    engine_ids v = {0};
    ps_status st = PS_OK;
    if (add_bos) {
        if (mark_id[0] < 0) return ps_errf(err, PS_EINVAL, "tokenize: the tokenizer has no BOS token");
        if ((st = engine_ids_add(&v, &mark_id[0], 1, err))) goto fail;
    }
    /* next occurrence of each marker, searched again only once passed: linear in the text */
    const char *p = text, *next[2];
    for (int m = 0; m < 2; m++) next[m] = mark[m] ? strstr(p, mark[m]) : NULL;
    for (;;) {
        int which = next[0] && (!next[1] || next[0] < next[1]) ? 0 : next[1] ? 1 : -1;
        const char *hit = which >= 0 ? next[which] : NULL;
        size_t len = hit ? (size_t)(hit - p) : strlen(p);
        if (len > 0) {
            int32_t *seg;
            int ns;
            if ((st = tok_encode(e->tok, p, len, false, &seg, &ns, err))) goto fail;
            st = engine_ids_add(&v, seg, ns, err);
            free(seg);
            if (st) goto fail;
        }
        if (!hit) break;
        if ((st = engine_ids_add(&v, &mark_id[which], 1, err))) goto fail;
        p = hit + strlen(mark[which]);
        for (int m = 0; m < 2; m++)
            if (next[m] && next[m] < p) next[m] = strstr(p, mark[m]);
    }
    *ids = v.ids;
    *n = v.n;
    return PS_OK;
fail:
    free(v.ids);
    return st;
}

const char *engine_chat_templates(void) { return chat_template_names(); }

ps_status engine_chat_render(engine *e, const char *template_name, const engine_chat_msg *msgs,
                             int n, char **out, ps_err *err) {
    *out = NULL;
    chat_tmpl t = e->chat;
    if (template_name) {
        ps_status st = chat_template_by_name(template_name, &t, err);
        if (st) return st;
    }
    return chat_template_render(t, msgs, n, out, err);
}

ps_status engine_token_text(engine *e, int32_t id, char *buf, int cap, ps_err *err) {
    if (!buf || cap < 1) return ps_errf(err, PS_EINVAL, "token text: buffer of %d bytes", cap);
    if (id < 0 || id >= e->V)
        return ps_errf(err, PS_EINVAL, "token id %d out of range [0, %d)", (int)id, e->V);
    buf[0] = 0;
    if (id >= tok_vocab_size(e->tok)) return PS_OK; /* padding rows of the embedding: no text */
    tok_decoder d;
    tok_decoder_init(&d, false);
    int k = tok_decode_next(e->tok, &d, id, buf, cap - 1);
    int f = k >= 0 ? tok_decode_flush(e->tok, &d, buf + k, cap - 1 - k) : -1;
    if (k < 0 || f < 0)
        return ps_errf(err, PS_ETOOLARGE, "token %d: text does not fit a buffer of %d bytes",
                       (int)id, cap);
    buf[k + f] = 0;
    return PS_OK;
}
