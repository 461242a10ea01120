/* Per-op profiler of the CUDA backend (API and what the numbers mean: see
 * cuda_ext.h). Enabling saves the plain table and puts wrappers in its place;
 * each wrapper records a start mark (after an optional spin pad), calls the
 * saved entry, records an end mark and adds its host time to a total kept
 * per key: an op, or for linear the weight type, path and shape. The marks
 * wait in a ring and are read lazily. Disabling puts the plain entries back,
 * so a backend that is not profiling runs exactly the code it ran before.
 *
 * Deliberately not: timing inside an op (the GEMM path's dequantise and
 * cuBLAS call are one pair), per-kernel times (that is Nsight's job), use
 * from several threads (the backend is single-threaded already). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "cuda_profile.cuh"

#define PROF_MAX_KEYS 64
#define PROF_RING_DEFAULT 4096
#define PROF_RING_MAX 65536
#define PROF_PAD_MAX_US 1000

enum {
    PROF_UPLOAD = 0, PROF_DOWNLOAD, PROF_SYNC, PROF_EMBED, PROF_LINEAR, PROF_ADD_BIAS,
    PROF_RMSNORM, PROF_LAYERNORM, PROF_ROPE, PROF_KV_STORE, PROF_ATTENTION,
    PROF_ATTENTION_DENSE, PROF_SILU_MUL, PROF_ACTIVATE, PROF_ADD, PROF_GATHER_ROWS,
    PROF_LORA_BGMV, PROF_ADD_RMSNORM, PROF_ROPE_STORE, PROF_N_OPS
};

static const char *const prof_op_names[PROF_N_OPS] = {
    "upload", "download", "sync", "embed", "linear", "add_bias", "rmsnorm", "layernorm",
    "rope", "kv_store", "attention", "attention_dense", "silu_mul", "activate", "add",
    "gather_rows", "lora_bgmv", "add_rmsnorm", "rope_store"};

/* What one total is kept for. Fields other than op are 0 except for linear.
 * No padding bytes (four ints, two int64), so keys compare with memcmp. */
typedef struct {
    int op;    /* PROF_*, -1 = the catch-all row when the key table is full */
    int wkind; /* ps_weight_kind */
    int dtype; /* dense weight dtype */
    int path;  /* PS_CUDA_LINEAR_GEMV / _GEMM, -1 = no input columns (a fill) */
    int64_t out, in;
} prof_id;

typedef struct {
    int key; /* row the pair belongs to; -1 while open or when its call failed */
    cudaEvent_t a, b;
} prof_slot;

struct cuda_prof {
    bool on;
    bool from_env;     /* turned on by PS_CUDA_PROFILE: log the totals at destroy */
    ps_backend plain;  /* the table as it was before wrapping */
    int pad_us;
    long long pad_cycles;
    prof_slot *ring;   /* cap slots; pending ones are ring[head .. head + count) mod cap */
    int cap, head, count;
    int64_t waits;     /* reads that found the device still busy */
    int op_key[PROF_N_OPS]; /* row of each non-linear op, -1 until first seen */
    int n_keys;
    prof_id ids[PROF_MAX_KEYS];
    ps_cuda_profile_row rows[PROF_MAX_KEYS];
};

/* One call between prof_begin and prof_end. */
typedef struct {
    int slot; /* -1: no device marks (sync, or a dead backend) */
    int key;
    double t0;
} prof_call;

static double prof_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

/* Holds the stream for `cycles` SM clocks (one thread), so the launches of
 * the op behind it are queued before the device reaches its start mark. */
__global__ void prof_pad_kernel(long long cycles) {
    long long t0 = clock64();
    while (clock64() - t0 < cycles) {
    }
}

/* ---- keys ---- */

static void prof_keys_clear(cuda_prof *pr) {
    pr->n_keys = 0;
    pr->waits = 0;
    memset(pr->ids, 0, sizeof pr->ids);
    memset(pr->rows, 0, sizeof pr->rows);
    for (int i = 0; i < PROF_N_OPS; i++) pr->op_key[i] = -1;
}

static const char *prof_weight_name(const prof_id *id) {
    return id->wkind == PS_WEIGHT_NF4 ? "nf4" : ps_dtype_name((ps_dtype)id->dtype);
}

/* Row of `id`, created on first sight. The last row catches every key past
 * the table's size, so a run with many shapes loses detail, never counts. */
static int prof_key(cuda_prof *pr, const prof_id *id) {
    for (int k = 0; k < pr->n_keys; k++)
        if (!memcmp(&pr->ids[k], id, sizeof *id)) return k;
    int k = pr->n_keys;
    if (k == PROF_MAX_KEYS) return k - 1;
    pr->n_keys++;
    ps_cuda_profile_row *r = &pr->rows[k];
    if (k == PROF_MAX_KEYS - 1) {
        pr->ids[k].op = -1;
        snprintf(r->name, sizeof r->name, "(other keys)");
    } else if (id->op == PROF_LINEAR) {
        pr->ids[k] = *id;
        const char *path = id->path < 0 ? "fill" : id->path == PS_CUDA_LINEAR_GEMV ? "gemv" : "gemm";
        snprintf(r->name, sizeof r->name, "linear %s %s %lldx%lld", prof_weight_name(id), path,
                 (long long)id->out, (long long)id->in);
    } else {
        pr->ids[k] = *id;
        snprintf(r->name, sizeof r->name, "%s", prof_op_names[id->op]);
    }
    return k;
}

static int prof_op_key(cuda_prof *pr, int op) {
    if (pr->op_key[op] < 0) {
        prof_id id;
        memset(&id, 0, sizeof id);
        id.op = op;
        pr->op_key[op] = prof_key(pr, &id);
    }
    return pr->op_key[op];
}

/* Linear calls are keyed by what decides their kernels: weight type, the path
 * cuda_linear will take for these rows, and the shape. */
static int prof_linear_key(cuda_impl *p, const ps_tensor *y, const ps_weight *w) {
    prof_id id;
    memset(&id, 0, sizeof id);
    id.op = PROF_LINEAR;
    id.wkind = w->kind;
    id.dtype = w->kind == PS_WEIGHT_DENSE ? w->dense.dtype : 0;
    id.out = ps_weight_out(w);
    id.in = ps_weight_in(w);
    id.path = id.in == 0 ? -1 : cuda_linear_path(p, cuda_rows(y));
    return prof_key(p->prof, &id);
}

/* ---- the ring of event pairs ---- */

/* Reads the n oldest pending pairs into their rows. The first one still
 * running makes it wait (counted once per read). */
static ps_status prof_read(cuda_impl *p, int n, ps_err *err) {
    cuda_prof *pr = p->prof;
    bool waited = false;
    for (int i = 0; i < n && pr->count > 0; i++) {
        prof_slot *s = &pr->ring[pr->head];
        if (s->key >= 0) {
            cudaError_t e = cudaEventQuery(s->b);
            if (e == cudaErrorNotReady) {
                /* not an error: keep it from reaching a later launch check */
                if (cudaPeekAtLastError() == cudaErrorNotReady) (void)cudaGetLastError();
                waited = true;
                CU_TRY(p, cudaEventSynchronize(s->b));
            } else if (e != cudaSuccess) {
                return cuda_fail(p, e, "cudaEventQuery", __FILE__, __LINE__, err);
            }
            float ms = 0.0f;
            CU_TRY(p, cudaEventElapsedTime(&ms, s->a, s->b));
            pr->rows[s->key].device_ms += ms;
        }
        pr->head = (pr->head + 1) % pr->cap;
        pr->count--;
    }
    if (waited) pr->waits++;
    return PS_OK;
}

/* Reads everything pending; after a sticky error just drops it. */
static ps_status prof_drain(cuda_impl *p, ps_err *err) {
    cuda_prof *pr = p->prof;
    if (!pr || !pr->ring) return PS_OK;
    if (p->dead) {
        pr->head = pr->count = 0;
        return PS_OK;
    }
    return prof_read(p, pr->count, err);
}

static void prof_ring_free(cuda_impl *p) {
    cuda_prof *pr = p->prof;
    for (int i = 0; pr->ring && !p->dead && i < pr->cap; i++) {
        if (pr->ring[i].a) (void)cudaEventDestroy(pr->ring[i].a);
        if (pr->ring[i].b) (void)cudaEventDestroy(pr->ring[i].b);
    }
    free(pr->ring);
    pr->ring = NULL;
    pr->cap = pr->head = pr->count = 0;
}

static ps_status prof_ring_init(cuda_impl *p, int cap, ps_err *err) {
    cuda_prof *pr = p->prof;
    pr->ring = (prof_slot *)calloc((size_t)cap, sizeof(prof_slot));
    if (!pr->ring) return ps_errf(err, PS_ENOMEM, "cuda profile: cannot allocate %d event slots", cap);
    pr->cap = cap;
    pr->head = pr->count = 0;
    for (int i = 0; i < cap; i++) {
        pr->ring[i].key = -1;
        cudaError_t e = cudaEventCreate(&pr->ring[i].a);
        if (e == cudaSuccess) e = cudaEventCreate(&pr->ring[i].b);
        if (e != cudaSuccess) {
            ps_status s = cuda_fail(p, e, "cudaEventCreate", __FILE__, __LINE__, err);
            prof_ring_free(p);
            return s;
        }
    }
    return PS_OK;
}

/* ---- one wrapped call ---- */

static ps_status prof_begin(cuda_impl *p, int key, bool device, prof_call *c, ps_err *err) {
    cuda_prof *pr = p->prof;
    c->key = key;
    c->slot = -1;
    if (device && !p->dead) {
        PS_TRY(cuda_enter(p, err)); /* the marks belong to the backend's device */
        if (pr->count == pr->cap) PS_TRY(prof_read(p, pr->cap / 2, err));
        int slot = (pr->head + pr->count) % pr->cap;
        pr->ring[slot].key = -1; /* reserved; counted by prof_end once its call succeeded */
        pr->count++;
        if (pr->pad_cycles > 0) {
            prof_pad_kernel<<<1, 1, 0, p->stream>>>(pr->pad_cycles);
            CU_LAUNCH_CHECK(p);
        }
        CU_TRY(p, cudaEventRecord(pr->ring[slot].a, p->stream));
        c->slot = slot;
    }
    c->t0 = prof_now_ms();
    return PS_OK;
}

/* Counts a call that succeeded; a failed one returns its status untouched. */
static ps_status prof_end(cuda_impl *p, const prof_call *c, ps_status s, int64_t bytes, ps_err *err) {
    double t1 = prof_now_ms();
    if (s != PS_OK) return s;
    cuda_prof *pr = p->prof;
    ps_cuda_profile_row *r = &pr->rows[c->key];
    r->calls++;
    r->bytes += bytes;
    r->host_ms += t1 - c->t0;
    if (c->slot >= 0) {
        CU_TRY(p, cudaEventRecord(pr->ring[c->slot].b, p->stream));
        pr->ring[c->slot].key = c->key;
    }
    return PS_OK;
}

#define PROF_OP(be, op, c, err) PS_TRY(prof_begin(cuda_of(be), prof_op_key(cuda_of(be)->prof, op), true, c, err))
#define PROF_PLAIN(be) (cuda_of(be)->prof->plain)

static ps_status pw_upload(ps_backend *be, void *dst, const void *src, size_t n, ps_err *err) {
    prof_call c;
    PROF_OP(be, PROF_UPLOAD, &c, err);
    return prof_end(cuda_of(be), &c, PROF_PLAIN(be).upload(be, dst, src, n, err), (int64_t)n, err);
}

static ps_status pw_download(ps_backend *be, void *dst, const void *src, size_t n, ps_err *err) {
    prof_call c;
    PROF_OP(be, PROF_DOWNLOAD, &c, err);
    return prof_end(cuda_of(be), &c, PROF_PLAIN(be).download(be, dst, src, n, err), (int64_t)n, err);
}

static ps_status pw_sync(ps_backend *be, ps_err *err) {
    cuda_impl *p = cuda_of(be);
    prof_call c;
    PS_TRY(prof_begin(p, prof_op_key(p->prof, PROF_SYNC), false, &c, err));
    return prof_end(p, &c, PROF_PLAIN(be).sync(be, err), 0, err);
}

static ps_status pw_embed(ps_backend *be, ps_tensor *out, const ps_tensor *table, const ps_tensor *ids,
                          ps_err *err) {
    prof_call c;
    PROF_OP(be, PROF_EMBED, &c, err);
    return prof_end(cuda_of(be), &c, PROF_PLAIN(be).embed(be, out, table, ids, err), 0, err);
}

static ps_status pw_linear(ps_backend *be, ps_tensor *y, const ps_tensor *x, const ps_weight *w,
                           ps_err *err) {
    cuda_impl *p = cuda_of(be);
    prof_call c;
    PS_TRY(prof_begin(p, prof_linear_key(p, y, w), true, &c, err));
    return prof_end(p, &c, PROF_PLAIN(be).linear(be, y, x, w, err), 0, err);
}

static ps_status pw_add_bias(ps_backend *be, ps_tensor *y, const ps_tensor *bias, ps_err *err) {
    prof_call c;
    PROF_OP(be, PROF_ADD_BIAS, &c, err);
    return prof_end(cuda_of(be), &c, PROF_PLAIN(be).add_bias(be, y, bias, err), 0, err);
}

static ps_status pw_rmsnorm(ps_backend *be, ps_tensor *out, const ps_tensor *x, const ps_tensor *w,
                            float eps, ps_err *err) {
    prof_call c;
    PROF_OP(be, PROF_RMSNORM, &c, err);
    return prof_end(cuda_of(be), &c, PROF_PLAIN(be).rmsnorm(be, out, x, w, eps, err), 0, err);
}

static ps_status pw_add_rmsnorm(ps_backend *be, ps_tensor *out, ps_tensor *x_out, const ps_tensor *x,
                                const ps_tensor *y, const ps_tensor *w, float eps, ps_err *err) {
    prof_call c;
    PROF_OP(be, PROF_ADD_RMSNORM, &c, err);
    return prof_end(cuda_of(be), &c, PROF_PLAIN(be).add_rmsnorm(be, out, x_out, x, y, w, eps, err), 0, err);
}

static ps_status pw_rope_store(ps_backend *be, ps_tensor *q, ps_tensor *k, const ps_tensor *v,
                               const ps_tensor *pos, float theta, ps_kv_layer *kv, const ps_tensor *slots,
                               ps_err *err) {
    prof_call c;
    PROF_OP(be, PROF_ROPE_STORE, &c, err);
    return prof_end(cuda_of(be), &c, PROF_PLAIN(be).rope_store(be, q, k, v, pos, theta, kv, slots, err), 0, err);
}

static ps_status pw_layernorm(ps_backend *be, ps_tensor *out, const ps_tensor *x, const ps_tensor *w,
                              const ps_tensor *b, float eps, ps_err *err) {
    prof_call c;
    PROF_OP(be, PROF_LAYERNORM, &c, err);
    return prof_end(cuda_of(be), &c, PROF_PLAIN(be).layernorm(be, out, x, w, b, eps, err), 0, err);
}

static ps_status pw_rope(ps_backend *be, ps_tensor *x, const ps_tensor *pos, float theta, ps_err *err) {
    prof_call c;
    PROF_OP(be, PROF_ROPE, &c, err);
    return prof_end(cuda_of(be), &c, PROF_PLAIN(be).rope(be, x, pos, theta, err), 0, err);
}

static ps_status pw_kv_store(ps_backend *be, ps_kv_layer *kv, const ps_tensor *k, const ps_tensor *v,
                             const ps_tensor *slots, ps_err *err) {
    prof_call c;
    PROF_OP(be, PROF_KV_STORE, &c, err);
    return prof_end(cuda_of(be), &c, PROF_PLAIN(be).kv_store(be, kv, k, v, slots, err), 0, err);
}

static ps_status pw_attention(ps_backend *be, ps_tensor *out, const ps_tensor *q, const ps_kv_layer *kv,
                              const ps_attn_meta *meta, float scale, ps_err *err) {
    prof_call c;
    PROF_OP(be, PROF_ATTENTION, &c, err);
    return prof_end(cuda_of(be), &c, PROF_PLAIN(be).attention(be, out, q, kv, meta, scale, err), 0, err);
}

static ps_status pw_attention_dense(ps_backend *be, ps_tensor *out, const ps_tensor *q, const ps_tensor *k,
                                    const ps_tensor *v, bool causal, float scale, ps_err *err) {
    prof_call c;
    PROF_OP(be, PROF_ATTENTION_DENSE, &c, err);
    return prof_end(cuda_of(be), &c, PROF_PLAIN(be).attention_dense(be, out, q, k, v, causal, scale, err),
                    0, err);
}

static ps_status pw_silu_mul(ps_backend *be, ps_tensor *out, const ps_tensor *gate, const ps_tensor *up,
                             ps_err *err) {
    prof_call c;
    PROF_OP(be, PROF_SILU_MUL, &c, err);
    return prof_end(cuda_of(be), &c, PROF_PLAIN(be).silu_mul(be, out, gate, up, err), 0, err);
}

static ps_status pw_activate(ps_backend *be, ps_tensor *x, int act, ps_err *err) {
    prof_call c;
    PROF_OP(be, PROF_ACTIVATE, &c, err);
    return prof_end(cuda_of(be), &c, PROF_PLAIN(be).activate(be, x, act, err), 0, err);
}

static ps_status pw_add(ps_backend *be, ps_tensor *x, const ps_tensor *y, ps_err *err) {
    prof_call c;
    PROF_OP(be, PROF_ADD, &c, err);
    return prof_end(cuda_of(be), &c, PROF_PLAIN(be).add(be, x, y, err), 0, err);
}

static ps_status pw_gather_rows(ps_backend *be, ps_tensor *out, const ps_tensor *x, const ps_tensor *rows,
                                ps_err *err) {
    prof_call c;
    PROF_OP(be, PROF_GATHER_ROWS, &c, err);
    return prof_end(cuda_of(be), &c, PROF_PLAIN(be).gather_rows(be, out, x, rows, err), 0, err);
}

static ps_status pw_lora_bgmv(ps_backend *be, ps_tensor *y, const ps_tensor *x, const ps_lora_batch *lb,
                              ps_err *err) {
    prof_call c;
    PROF_OP(be, PROF_LORA_BGMV, &c, err);
    return prof_end(cuda_of(be), &c, PROF_PLAIN(be).lora_bgmv(be, y, x, lb, err), 0, err);
}

/* Every non-NULL entry but alloc, free and destroy (not per step) gets its
 * wrapper; a NULL entry stays NULL so op_* still answers PS_ENOTSUP. */
static void prof_wrap(ps_backend *be, const ps_backend *plain) {
#define PROF_W(f) be->f = plain->f ? pw_##f : NULL
    PROF_W(upload); PROF_W(download); PROF_W(sync); PROF_W(embed); PROF_W(linear);
    PROF_W(add_bias); PROF_W(rmsnorm); PROF_W(layernorm); PROF_W(rope); PROF_W(kv_store);
    PROF_W(attention); PROF_W(attention_dense); PROF_W(silu_mul); PROF_W(activate); PROF_W(add);
    PROF_W(gather_rows); PROF_W(lora_bgmv); PROF_W(add_rmsnorm); PROF_W(rope_store);
#undef PROF_W
    be->linear_n = NULL; /* op_linear_n then makes one profiled linear call per weight */
    be->add_rmsnorm_linear_n = NULL; /* and the fused norm + projections (+ silu) call by call */
    be->add_rmsnorm_swiglu = NULL;
    be->lora_bgmv_n = NULL; /* one profiled lora_bgmv per projection */
}

static void prof_unwrap(ps_backend *be, const ps_backend *plain) {
#define PROF_U(f) be->f = plain->f
    PROF_U(upload); PROF_U(download); PROF_U(sync); PROF_U(embed); PROF_U(linear);
    PROF_U(add_bias); PROF_U(rmsnorm); PROF_U(layernorm); PROF_U(rope); PROF_U(kv_store);
    PROF_U(attention); PROF_U(attention_dense); PROF_U(silu_mul); PROF_U(activate); PROF_U(add);
    PROF_U(gather_rows); PROF_U(lora_bgmv); PROF_U(add_rmsnorm); PROF_U(rope_store);
    PROF_U(linear_n); PROF_U(add_rmsnorm_linear_n); PROF_U(add_rmsnorm_swiglu); PROF_U(lora_bgmv_n);
#undef PROF_U
}

/* ---- on / off ---- */

static ps_status prof_on(cuda_impl *p, const ps_cuda_profile_opts *o, ps_err *err) {
    ps_cuda_profile_opts d = {0, 0};
    if (!o) o = &d;
    int cap = o->ring ? o->ring : PROF_RING_DEFAULT;
    if (o->pad_us < 0 || o->pad_us > PROF_PAD_MAX_US || cap < 2 || cap > PROF_RING_MAX)
        return ps_errf(err, PS_EINVAL, "cuda profile: pad_us %d (0..%d), ring %d (0 or 2..%d)", o->pad_us,
                       PROF_PAD_MAX_US, o->ring, PROF_RING_MAX);
    PS_TRY(cuda_enter(p, err));
    int khz = 0;
    if (o->pad_us > 0) CU_TRY(p, cudaDeviceGetAttribute(&khz, cudaDevAttrClockRate, p->device));
    if (!p->prof) {
        p->prof = (cuda_prof *)calloc(1, sizeof *p->prof);
        if (!p->prof) return ps_errf(err, PS_ENOMEM, "cuda profile: cannot allocate its state");
        prof_keys_clear(p->prof);
    }
    cuda_prof *pr = p->prof;
    PS_TRY(prof_drain(p, err)); /* already on: keep the totals, new ring and pad */
    prof_ring_free(p);
    ps_status s = prof_ring_init(p, cap, err);
    if (s != PS_OK) { /* wrappers without a ring must not run */
        if (pr->on) prof_unwrap(&p->be, &pr->plain);
        pr->on = false;
        return s;
    }
    pr->pad_us = o->pad_us;
    pr->pad_cycles = (long long)o->pad_us * khz / 1000;
    if (!pr->on) {
        pr->plain = p->be;
        prof_wrap(&p->be, &pr->plain);
        pr->on = true;
    }
    return PS_OK;
}

static ps_status prof_off(cuda_impl *p, ps_err *err) {
    cuda_prof *pr = p->prof;
    if (!pr || !pr->on) return PS_OK;
    ps_status s = prof_drain(p, err);
    prof_unwrap(&p->be, &pr->plain);
    pr->on = false;
    prof_ring_free(p);
    return s;
}

ps_status cuda_prof_from_env(cuda_impl *p, ps_err *err) {
    const char *s = getenv("PS_CUDA_PROFILE");
    if (!s || !*s || !strcmp(s, "0")) return PS_OK;
    ps_cuda_profile_opts o = {0, 0};
    const char *pad = getenv("PS_CUDA_PROFILE_PAD_US");
    if (pad && *pad) o.pad_us = atoi(pad);
    if (o.pad_us < 0 || o.pad_us > PROF_PAD_MAX_US) {
        PS_LOG_WARN("cuda", "PS_CUDA_PROFILE_PAD_US=%s is outside 0..%d; using 0", pad, PROF_PAD_MAX_US);
        o.pad_us = 0;
    }
    PS_TRY(prof_on(p, &o, err));
    p->prof->from_env = true;
    PS_LOG_INFO("cuda", "per-op profiler on (PS_CUDA_PROFILE), pad %d us; totals at exit", o.pad_us);
    return PS_OK;
}

static ps_status prof_report(cuda_impl *p, FILE *f, int steps, double wall_ms, ps_err *err);

void cuda_prof_free(cuda_impl *p) {
    cuda_prof *pr = p->prof;
    if (!pr) return;
    ps_err err;
    if (pr->from_env && pr->on && !p->dead && prof_report(p, stderr, 0, 0.0, &err) != PS_OK)
        PS_LOG_WARN("cuda", "profile report failed: %s", err.msg);
    prof_off(p, &err);
    free(pr);
    p->prof = NULL;
}

/* ---- extension API (cuda_ext.h) ---- */

extern "C" ps_status ps_cuda_profile_enable(ps_backend *be, bool on, const ps_cuda_profile_opts *opts,
                                            ps_err *err) {
    cuda_impl *p = cuda_ext_impl(be, err);
    if (!p) return PS_EINVAL;
    return on ? prof_on(p, opts, err) : prof_off(p, err);
}

extern "C" ps_status ps_cuda_profile_reset(ps_backend *be, ps_err *err) {
    cuda_impl *p = cuda_ext_impl(be, err);
    if (!p) return PS_EINVAL;
    if (!p->prof) return PS_OK;
    PS_TRY(prof_drain(p, err));
    prof_keys_clear(p->prof);
    return PS_OK;
}

extern "C" ps_status ps_cuda_profile_rows(ps_backend *be, ps_cuda_profile_row *rows, int max, int *n,
                                          int64_t *waits, ps_err *err) {
    cuda_impl *p = cuda_ext_impl(be, err);
    *n = 0;
    if (waits) *waits = 0;
    if (!p) return PS_EINVAL;
    if (!p->prof) return PS_OK;
    PS_TRY(prof_drain(p, err));
    cuda_prof *pr = p->prof;
    for (int k = 0; k < pr->n_keys && k < max; k++) rows[k] = pr->rows[k];
    *n = pr->n_keys;
    if (waits) *waits = pr->waits;
    return PS_OK;
}

static int prof_cmp_device(const void *a, const void *b) {
    const ps_cuda_profile_row *x = (const ps_cuda_profile_row *)a, *y = (const ps_cuda_profile_row *)b;
    if (x->device_ms != y->device_ms) return x->device_ms < y->device_ms ? 1 : -1;
    return x->host_ms < y->host_ms ? 1 : x->host_ms > y->host_ms ? -1 : 0;
}

/* steps < 1: totals of the whole run (per-step figures unknown). */
static ps_status prof_report(cuda_impl *p, FILE *f, int steps, double wall_ms, ps_err *err) {
    ps_cuda_profile_row rows[PROF_MAX_KEYS];
    int n = 0;
    int64_t waits = 0;
    PS_TRY(ps_cuda_profile_rows(&p->be, rows, PROF_MAX_KEYS, &n, &waits, err));
    qsort(rows, (size_t)n, sizeof rows[0], prof_cmp_device);
    double div = steps >= 1 ? steps : 1, calls = 0, dev = 0, host = 0;
    for (int k = 0; k < n; k++) calls += rows[k].calls, dev += rows[k].device_ms, host += rows[k].host_ms;
    double ref = wall_ms > 0 ? wall_ms : dev / div; /* ms per step the % column is of */
    fprintf(f, "cuda profile: %s, pad %d us, gemv %s, reads that waited %lld\n",
            steps >= 1 ? "per-step averages" : "totals", p->prof ? p->prof->pad_us : 0,
            ps_cuda_gemv_name(p->tune.gemv_kernel), (long long)waits);
    fprintf(f, "%-32s %10s %14s %7s %12s\n", "op", steps >= 1 ? "calls/step" : "calls",
            steps >= 1 ? "device us/step" : "device us", wall_ms > 0 ? "% wall" : "% ops",
            steps >= 1 ? "host us/step" : "host us");
    for (int k = 0; k < n; k++)
        fprintf(f, "%-32s %10.1f %14.1f %7.1f %12.1f%s\n", rows[k].name, rows[k].calls / div,
                rows[k].device_ms * 1e3 / div, ref > 0 ? 100 * rows[k].device_ms / div / ref : 0.0,
                rows[k].host_ms * 1e3 / div,
                !strcmp(rows[k].name, "download") || !strcmp(rows[k].name, "sync") ? " (incl. wait)" : "");
    fprintf(f, "%-32s %10.1f %14.1f %7.1f %12.1f\n", "all ops", calls / div, dev * 1e3 / div,
            ref > 0 ? 100 * dev / div / ref : 0.0, host * 1e3 / div);
    if (wall_ms > 0) {
        fprintf(f, "%-32s %10s %14.1f %7.1f\n", "wall", "", wall_ms * 1e3, 100.0);
        fprintf(f, "%-32s %10s %14.1f %7.1f\n", "device idle (wall - all ops)", "", (wall_ms - dev / div) * 1e3,
                100 * (wall_ms - dev / div) / wall_ms);
    }
    return PS_OK;
}

extern "C" ps_status ps_cuda_profile_report(ps_backend *be, FILE *f, int steps, double wall_ms_per_step,
                                            ps_err *err) {
    cuda_impl *p = cuda_ext_impl(be, err);
    if (!p) return PS_EINVAL;
    return prof_report(p, f, steps, wall_ms_per_step, err);
}

bool cuda_prof_on(const cuda_impl *p) { return p->prof && p->prof->on; }
