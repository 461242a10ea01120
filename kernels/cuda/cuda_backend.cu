/* The CUDA backend: device selection, buffers (plain cudaMalloc, no managed
 * memory), one stream + one cuBLAS handle, the error policy of
 * cuda_common.cuh and the op table. The ops themselves live in the other
 * kernels/cuda files.
 *
 * Ordering: everything runs on one stream in call order. upload is
 * asynchronous for pageable host memory (the runtime copies the source into
 * staging before returning, so the caller may reuse it at once); download and
 * sync wait for the stream and then report a bad index a kernel flagged.
 * Threads: one thread at a time per backend (the engine thread). */
#include <stdio.h>
#include <stdlib.h>

#include "cuda_profile.cuh"

/* ---- errors ---- */

static ps_status cuda_mark_dead(cuda_impl *p, ps_err *err) {
    if (!p->dead) {
        p->dead = true;
        p->dead_err = *err;
        PS_LOG_ERROR("cuda", "device unusable: %s", err->msg);
    }
    return PS_EDEVICE;
}

ps_status cuda_fail(cuda_impl *p, cudaError_t e, const char *call, const char *file, int line,
                    ps_err *err) {
    ps_err local;
    if (!err) err = &local;
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError(); /* not sticky: clear it so later calls work */
        size_t free_b = 0, total_b = 0;
        (void)cudaMemGetInfo(&free_b, &total_b);
        (void)cudaGetLastError();
        return ps_errf(err, PS_ENOMEM,
                       "cuda: out of device memory in %s at %s:%d (%s: %.0f MiB free of %.0f MiB)",
                       call, file, line, p ? p->dev_name : "?", free_b / 1048576.0,
                       total_b / 1048576.0);
    }
    ps_errf(err, PS_EDEVICE, "cuda: %s failed at %s:%d: %s (%s)", call, file, line,
            cudaGetErrorName(e), cudaGetErrorString(e));
    return p ? cuda_mark_dead(p, err) : PS_EDEVICE;
}

ps_status cublas_fail(cuda_impl *p, cublasStatus_t s, const char *call, const char *file, int line,
                      ps_err *err) {
    ps_err local;
    if (!err) err = &local;
    ps_errf(err, PS_EDEVICE, "cuda: %s failed at %s:%d: %s (%s)", call, file, line,
            cublasGetStatusName(s), cublasGetStatusString(s));
    return cuda_mark_dead(p, err);
}

ps_status cuda_enter(cuda_impl *p, ps_err *err) {
    if (p->dead) {
        if (err) *err = p->dead_err;
        return PS_EDEVICE;
    }
    if (p->device != 0) CU_TRY(p, cudaSetDevice(p->device));
    return PS_OK;
}

static ps_status cuda_flag_report(cuda_impl *p, const cuda_flag *f, ps_err *err) {
    switch (f->code) {
    case CUDA_FLAG_EMBED_ID:
        return ps_errf(err, PS_EINVAL, "embed: token id %d out of range [0, %d) at row %d (found on the device)", f->a,
                       f->b, f->c);
    case CUDA_FLAG_GATHER_ROW:
        return ps_errf(err, PS_EINVAL, "gather_rows: row %d out of range [0, %d) at output %d (found on the device)",
                       f->a, f->b, f->c);
    case CUDA_FLAG_KV_SLOT:
        return ps_errf(err, PS_EINVAL, "kv_store: slot %d out of range [0, %d) for token %d (found on the device)", f->a,
                       f->b, f->c);
    case CUDA_FLAG_ATTN_META:
        return ps_errf(err, PS_EINVAL,
                       "attention: token %d has seq %d, kv_pos %d: outside n_seqs or max_pages (found on the device)",
                       f->a, f->b, f->c);
    case CUDA_FLAG_ATTN_PAGE:
        return ps_errf(err, PS_EINVAL, "attention: page id %d out of range [0, %d) for token %d (found on the device)",
                       f->a, f->b, f->c);
    default:
        return ps_errf(err, PS_EINVAL, "cuda: unknown device flag %d", f->code);
    }
}

ps_status cuda_sync_and_check(cuda_impl *p, ps_err *err) {
    CU_TRY(p, cudaMemcpyAsync(p->h_flag, p->d_flag, sizeof(cuda_flag), cudaMemcpyDeviceToHost,
                              p->stream));
    CU_TRY(p, cudaStreamSynchronize(p->stream));
    if (p->h_flag->code == CUDA_FLAG_NONE) return PS_OK;
    cuda_flag f = *p->h_flag;
    CU_TRY(p, cudaMemsetAsync(p->d_flag, 0, sizeof(cuda_flag), p->stream));
    p->h_flag->code = CUDA_FLAG_NONE;
    ps_err local;
    return cuda_flag_report(p, &f, err ? err : &local);
}

ps_status cuda_op_done(cuda_impl *p, const char *op, ps_err *err) {
    CU_LAUNCH_CHECK(p);
    if (!p->tune.sync_each_op) return PS_OK;
    ps_status s = cuda_sync_and_check(p, err);
    if (s == PS_EDEVICE) ps_err_wrap(err, "cuda op %s", op); /* a bad index names its op already */
    return s;
}

ps_status cuda_scratch(cuda_impl *p, void **buf, size_t *have, size_t bytes, ps_err *err) {
    if (*have >= bytes) return PS_OK;
    if (*buf) {
        cuda_graphs_clear(p); /* recorded steps point into the old buffer */
        CU_TRY(p, cudaFree(*buf)); /* synchronises: no kernel still reads it */
        *buf = NULL;
        *have = 0;
    }
    size_t want = bytes + bytes / 8; /* headroom: a slightly larger layer needs no regrow */
    CU_TRY(p, cudaMalloc(buf, want));
    *have = want;
    return PS_OK;
}

/* ---- buffers ---- */

static ps_status cb_alloc(ps_backend *be, size_t n, void **out, ps_err *err) {
    cuda_impl *p = cuda_of(be);
    *out = NULL;
    PS_TRY(cuda_enter(p, err));
    cudaError_t e = cudaMalloc(out, n);
    if (e != cudaSuccess) {
        *out = NULL;
        ps_status s = cuda_fail(p, e, "cudaMalloc", __FILE__, __LINE__, err);
        if (s == PS_ENOMEM)
            ps_err_wrap(err, "cuda: cannot allocate %.1f MiB (the model, KV pages or scratch do not "
                        "fit this card: use fewer KV pages or --device cpu)", n / 1048576.0);
        return s;
    }
    return PS_OK;
}

static void cb_free(ps_backend *be, void *ptr) {
    cuda_impl *p = cuda_of(be);
    if (!ptr || p->dead) return; /* after a sticky error the context may be gone */
    cudaError_t e = cudaFree(ptr);
    if (e != cudaSuccess) {
        ps_err err;
        cuda_fail(p, e, "cudaFree", __FILE__, __LINE__, &err);
    }
}

/* Copies above this size wait for completion (weights at load time); smaller
 * ones (per-step metadata) stay asynchronous. */
#define CUDA_UPLOAD_SYNC_BYTES ((size_t)4 << 20)

static ps_status cb_upload(ps_backend *be, void *dst, const void *src, size_t n, ps_err *err) {
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    CU_TRY(p, cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, p->stream));
    if (n >= CUDA_UPLOAD_SYNC_BYTES) CU_TRY(p, cudaStreamSynchronize(p->stream));
    return PS_OK;
}

static ps_status cb_download(ps_backend *be, void *dst, const void *src, size_t n, ps_err *err) {
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    CU_TRY(p, cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, p->stream));
    return cuda_sync_and_check(p, err);
}

static ps_status cb_sync(ps_backend *be, ps_err *err) {
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    return cuda_sync_and_check(p, err);
}

/* Frees whatever exists; accepts a half-built impl (create's error path). */
static void cuda_impl_free(cuda_impl *p) {
    if (!p) return;
    cuda_prof_free(p);
    if (!p->dead) {
        if (p->stream) (void)cudaStreamSynchronize(p->stream);
        cuda_graphs_clear(p);
        if (p->scratch_w) (void)cudaFree(p->scratch_w);
        if (p->scratch_x) (void)cudaFree(p->scratch_x);
        if (p->scratch_lora) (void)cudaFree(p->scratch_lora);
        if (p->gemv_part) (void)cudaFree(p->gemv_part);
        if (p->gemv_cnt) (void)cudaFree(p->gemv_cnt);
        if (p->att_part) (void)cudaFree(p->att_part);
        if (p->att_cnt) (void)cudaFree(p->att_cnt);
        if (p->rope_tab) (void)cudaFree(p->rope_tab);
        if (p->d_flag) (void)cudaFree(p->d_flag);
        if (p->h_flag) (void)cudaFreeHost(p->h_flag);
        if (p->blas) (void)cublasDestroy(p->blas);
        if (p->blas_ws) (void)cudaFree(p->blas_ws);
        if (p->stream) (void)cudaStreamDestroy(p->stream);
    }
    free(p);
}

static void cb_destroy(ps_backend *be) { cuda_impl_free(cuda_of(be)); }

/* ---- tuning from the environment ---- */

static void cuda_tuning_from_env(ps_cuda_tuning *t) {
    t->linear_path = PS_CUDA_LINEAR_AUTO;
    /* H100, 7B layer shapes: at 32 rows dequantise + cuBLAS beat the GEMV
     * (chunks of 8 rows, each rereading W) 1.5-2.2x (55 vs 85 us at 4096 x
     * 4096, 107 vs 232 at 11008 x 4096); at 16 they were about even */
    t->gemv_max_t = 16;
    t->attn_path = PS_CUDA_ATTN_AUTO;
    t->sync_each_op = false;
    const char *s = getenv("PS_CUDA_LINEAR");
    if (s && !strcmp(s, "gemv")) t->linear_path = PS_CUDA_LINEAR_GEMV;
    if (s && !strcmp(s, "gemm")) t->linear_path = PS_CUDA_LINEAR_GEMM;
    s = getenv("PS_CUDA_GEMV_MAX_T");
    if (s && atoi(s) >= 0) t->gemv_max_t = atoi(s);
    s = getenv("PS_CUDA_ATTN");
    if (s && !strcmp(s, "decode")) t->attn_path = PS_CUDA_ATTN_DECODE;
    if (s && !strcmp(s, "prefill")) t->attn_path = PS_CUDA_ATTN_PREFILL;
    if (s && !strcmp(s, "split")) t->attn_path = PS_CUDA_ATTN_SPLIT;
    s = getenv("PS_CUDA_SYNC");
    t->sync_each_op = s && *s && strcmp(s, "0") != 0;
    s = getenv("PS_CUDA_GRAPHS"); /* on unless "0": decode 1.04-1.13x on the H100 */
    t->graphs = !(s && !strcmp(s, "0"));
    s = getenv("PS_CUDA_PDL"); /* off unless "1": not yet timed on a GPU */
    t->pdl = s && !strcmp(s, "1");
    s = getenv("PS_CUDA_FUSE"); /* on unless "0": applies to v6 only, which is opt-in */
    t->fuse = !(s && !strcmp(s, "0"));
    s = getenv("PS_CUDA_LORA");
    t->lora_path = PS_CUDA_LORA_AUTO;
    if (s && !strcmp(s, "bgmv")) t->lora_path = PS_CUDA_LORA_BGMV;
    if (s && !strcmp(s, "sgmv")) t->lora_path = PS_CUDA_LORA_SGMV;
    t->gemv_kernel = PS_CUDA_GEMV_DEFAULT;
    s = getenv("PS_CUDA_GEMV");
    if (s && *s) {
        int k = ps_cuda_gemv_find(s);
        if (k >= 0) t->gemv_kernel = k;
        else PS_LOG_WARN("cuda", "PS_CUDA_GEMV=%s is no GEMV configuration; using %s", s,
                    ps_cuda_gemv_name(PS_CUDA_GEMV_DEFAULT));
    }
}

/* ---- create ---- */

static void cuda_fill_table(ps_backend *be) {
    be->name = "cuda";
    be->dev = PS_DEV_CUDA;
    be->alloc = cb_alloc;
    be->free = cb_free;
    be->upload = cb_upload;
    be->download = cb_download;
    be->sync = cb_sync;
    be->destroy = cb_destroy;
    be->embed = cuda_embed;
    be->linear = cuda_linear;
    be->linear_n = cuda_linear_n;
    be->add_bias = cuda_add_bias;
    be->rmsnorm = cuda_rmsnorm;
    be->add_rmsnorm = cuda_add_rmsnorm;
    be->add_rmsnorm_linear_n = cuda_add_rmsnorm_linear_n;
    be->add_rmsnorm_swiglu = cuda_add_rmsnorm_swiglu;
    be->layernorm = cuda_layernorm;
    be->rope = cuda_rope;
    be->kv_store = cuda_kv_store;
    be->rope_store = cuda_rope_store;
    be->attention = cuda_attention;
    be->attention_dense = cuda_attention_dense;
    be->silu_mul = cuda_silu_mul;
    be->activate = cuda_activate;
    be->add = cuda_add;
    be->gather_rows = cuda_gather_rows;
    be->lora_bgmv = cuda_lora_bgmv;
    be->lora_bgmv_n = cuda_lora_bgmv_n;
    be->graph_launch = cuda_graph_launch;
    be->graph_begin = cuda_graph_begin;
    be->graph_end = cuda_graph_end;
}

/* Picks the device and reads its facts; refuses cards this build has no code for. */
static ps_status cuda_open_device(cuda_impl *p, int index, ps_err *err) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        return ps_errf(err, PS_EDEVICE, "cuda: no usable device: %s (%s)", cudaGetErrorName(e),
                       cudaGetErrorString(e));
    }
    if (index < 0 || index >= n)
        return ps_errf(err, PS_EDEVICE, "cuda: device %d requested, %d present", index, n);
    p->device = index;
    cudaDeviceProp prop;
    CU_TRY(p, cudaSetDevice(index));
    CU_TRY(p, cudaGetDeviceProperties(&prop, index));
    snprintf(p->dev_name, sizeof p->dev_name, "%s", prop.name);
    p->sm_count = prop.multiProcessorCount;
    p->cc_major = prop.major;
    p->cc_minor = prop.minor;
    p->total_mem = prop.totalGlobalMem;
    p->smem_optin = prop.sharedMemPerBlockOptin;
    p->l2_bytes = (size_t)prop.l2CacheSize;
    if (prop.major != 9)
        return ps_errf(err, PS_EDEVICE,
                       "cuda: %s is compute capability %d.%d; this build has kernels for sm_90 only "
                       "(rebuild with CUDA_ARCHITECTURES for this card)",
                       prop.name, prop.major, prop.minor);
    return PS_OK;
}

extern "C" ps_status ps_backend_cuda_create(int device_index, ps_backend **out, ps_err *err) {
    *out = NULL;
    cuda_impl *p = (cuda_impl *)calloc(1, sizeof *p);
    if (!p) return ps_errf(err, PS_ENOMEM, "cuda: cannot allocate the backend");
    snprintf(p->dev_name, sizeof p->dev_name, "cuda:%d", device_index);
    ps_status s = cuda_open_device(p, device_index, err);
    if (s != PS_OK) goto fail;
#define CREATE_TRY(call)                                                      \
    do {                                                                      \
        cudaError_t e_ = (call);                                              \
        if (e_ != cudaSuccess) {                                              \
            s = cuda_fail(p, e_, #call, __FILE__, __LINE__, err);             \
            goto fail;                                                        \
        }                                                                     \
    } while (0)
    CREATE_TRY(cudaStreamCreate(&p->stream));
    CREATE_TRY(cudaMalloc((void **)&p->d_flag, sizeof(cuda_flag)));
    CREATE_TRY(cudaMemset(p->d_flag, 0, sizeof(cuda_flag)));
    CREATE_TRY(cudaHostAlloc((void **)&p->h_flag, sizeof(cuda_flag), cudaHostAllocDefault));
    p->h_flag->code = CUDA_FLAG_NONE;
    CREATE_TRY(cudaMalloc(&p->blas_ws, CUDA_BLAS_WORKSPACE));
#undef CREATE_TRY
    {
        cublasStatus_t bs = cublasCreate(&p->blas);
        if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetStream(p->blas, p->stream);
        /* after SetStream, which resets the workspace to the library's own */
        if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetWorkspace(p->blas, p->blas_ws, CUDA_BLAS_WORKSPACE);
        /* pure fp32 for Sgemm (no TF32): the F32 weight path must match the CPU */
        if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetMathMode(p->blas, CUBLAS_DEFAULT_MATH);
        if (bs != CUBLAS_STATUS_SUCCESS) {
            s = cublas_fail(p, bs, "cublasCreate/SetStream/SetWorkspace/SetMathMode", __FILE__, __LINE__, err);
            goto fail;
        }
    }
    s = cuda_attention_init(p, err);
    if (s != PS_OK) goto fail;
    cuda_tuning_from_env(&p->tune);
    p->be.impl = p;
    cuda_fill_table(&p->be);
    s = cuda_prof_from_env(p, err);
    if (s != PS_OK) goto fail;
    PS_LOG_INFO("cuda", "device %d: %s, %d SMs, %.1f GiB, cc %d.%d", p->device, p->dev_name,
                p->sm_count, p->total_mem / 1073741824.0, p->cc_major, p->cc_minor);
    *out = &p->be;
    return PS_OK;
fail:
    p->dead = false; /* free what was created even after a failed call */
    cuda_impl_free(p);
    return s == PS_OK ? PS_EDEVICE : s;
}

/* ---- extras (cuda_ext.h) ---- */

cuda_impl *cuda_ext_impl(ps_backend *be, ps_err *err) {
    if (!be || be->dev != PS_DEV_CUDA || !be->name || strcmp(be->name, "cuda") != 0) {
        ps_errf(err, PS_EINVAL, "cuda extension called on the %s backend",
                be && be->name ? be->name : "(null)");
        return NULL;
    }
    return cuda_of(be);
}

extern "C" ps_status ps_cuda_get_tuning(ps_backend *be, ps_cuda_tuning *out, ps_err *err) {
    cuda_impl *p = cuda_ext_impl(be, err);
    if (!p) return PS_EINVAL;
    *out = p->tune;
    return PS_OK;
}

extern "C" ps_status ps_cuda_set_tuning(ps_backend *be, const ps_cuda_tuning *t, ps_err *err) {
    cuda_impl *p = cuda_ext_impl(be, err);
    if (!p) return PS_EINVAL;
    if (t->linear_path < PS_CUDA_LINEAR_AUTO || t->linear_path > PS_CUDA_LINEAR_GEMM ||
        t->attn_path < PS_CUDA_ATTN_AUTO || t->attn_path > PS_CUDA_ATTN_SPLIT ||
        t->gemv_max_t < 0 || t->gemv_kernel < 0 ||
        t->gemv_kernel >= ps_cuda_gemv_count() || t->lora_path < PS_CUDA_LORA_AUTO ||
        t->lora_path > PS_CUDA_LORA_SGMV)
        return ps_errf(err, PS_EINVAL,
                       "cuda tuning: linear_path %d, attn_path %d, gemv_max_t %d, gemv_kernel %d (0..%d), "
                       "lora_path %d",
                       t->linear_path, t->attn_path, t->gemv_max_t, t->gemv_kernel,
                       ps_cuda_gemv_count() - 1, t->lora_path);
    if (p->capturing) return ps_errf(err, PS_EINVAL, "cuda tuning: cannot change while recording a step graph");
    cuda_graphs_clear(p); /* recorded paths may differ from the new ones */
    p->tune = *t;
    return PS_OK;
}

extern "C" ps_status ps_cuda_get_counters(ps_backend *be, ps_cuda_counters *out, ps_err *err) {
    cuda_impl *p = cuda_ext_impl(be, err);
    if (!p) return PS_EINVAL;
    *out = p->counts;
    return PS_OK;
}

extern "C" ps_status ps_cuda_get_info(ps_backend *be, ps_cuda_info *out, ps_err *err) {
    cuda_impl *p = cuda_ext_impl(be, err);
    if (!p) return PS_EINVAL;
    PS_TRY(cuda_enter(p, err));
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", p->dev_name);
    out->device = p->device;
    out->sm_count = p->sm_count;
    out->cc_major = p->cc_major;
    out->cc_minor = p->cc_minor;
    out->l2_bytes = p->l2_bytes;
    CU_TRY(p, cudaMemGetInfo(&out->free_mem, &out->total_mem));
    return PS_OK;
}

extern "C" ps_status ps_cuda_health(ps_backend *be, ps_err *err) {
    cuda_impl *p = cuda_ext_impl(be, err);
    if (!p) return PS_EINVAL;
    if (p->dead) {
        if (err) *err = p->dead_err;
        return PS_EDEVICE;
    }
    return PS_OK;
}

struct ps_cuda_timer {
    cudaEvent_t a, b;
};

extern "C" ps_status ps_cuda_timer_start(ps_backend *be, ps_cuda_timer **t, ps_err *err) {
    cuda_impl *p = cuda_ext_impl(be, err);
    *t = NULL;
    if (!p) return PS_EINVAL;
    PS_TRY(cuda_enter(p, err));
    ps_cuda_timer *tm = (ps_cuda_timer *)calloc(1, sizeof *tm);
    if (!tm) return ps_errf(err, PS_ENOMEM, "cuda: cannot allocate a timer");
    cudaError_t e = cudaEventCreate(&tm->a);
    if (e == cudaSuccess) e = cudaEventCreate(&tm->b);
    if (e == cudaSuccess) e = cudaEventRecord(tm->a, p->stream);
    if (e != cudaSuccess) {
        free(tm);
        return cuda_fail(p, e, "cudaEventCreate/Record", __FILE__, __LINE__, err);
    }
    *t = tm;
    return PS_OK;
}

extern "C" ps_status ps_cuda_timer_stop(ps_backend *be, ps_cuda_timer *t, double *ms, ps_err *err) {
    cuda_impl *p = cuda_ext_impl(be, err);
    if (!p || !t) return PS_EINVAL;
    float f = 0.0f;
    cudaError_t e = cudaEventRecord(t->b, p->stream);
    if (e == cudaSuccess) e = cudaEventSynchronize(t->b);
    if (e == cudaSuccess) e = cudaEventElapsedTime(&f, t->a, t->b);
    (void)cudaEventDestroy(t->a);
    (void)cudaEventDestroy(t->b);
    free(t);
    if (e != cudaSuccess) return cuda_fail(p, e, "cudaEventRecord/Synchronize", __FILE__, __LINE__, err);
    *ms = f;
    return PS_OK;
}
