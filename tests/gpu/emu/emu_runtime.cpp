/* The CPU emulator's runtime (see include/emu_prelude.h): fibers with a
 * hand-written x86-64 context switch, block/warp barriers, shuffles, kernel
 * launches in stream order with programmatic dependent launch (two launch
 * contexts, one launch kept pending: see emu_launch_now), and the CUDA
 * runtime / cuBLAS calls kernels/cuda makes (device memory is host memory;
 * cuBLAS is a naive column-major GEMM with f32 accumulation, run as a
 * one-thread launch, that checks its leading dimensions like the real one). */
#include "cublas_v2.h"
#include <link.h>
#include <stdio.h>
#include <unistd.h>
#include <string>
#include <vector>

extern "C" void emu_swap(void **from_sp, void *to_sp);
asm(R"(
.text
.globl emu_swap
.type emu_swap,@function
emu_swap:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
)");

struct emu_fiber {
    void *sp;
    char *stack;
    emu_uint3 tid;
    int lane, warp;
    bool done;
};
struct warp_state { int alive, arrived; unsigned gen; uint64_t slot[32]; };

/* One launch in flight. Two are used in turn: a PDL launch can be parked
 * inside a block (threads waiting in cudaGridDependencySynchronize) while its
 * predecessor runs in the other, so each has its own fibers (stacks),
 * barriers, current block and shared memory. */
struct emu_ctx {
    int id;
    const void *kern;                 /* for messages */
    std::function<void()> body;
    dim3 grid, block;
    int nt;                           /* threads per block */
    std::vector<char> dyn;            /* dynamic shared memory */
    std::vector<emu_uint3> order;     /* the blocks, in the order they run */
    size_t next;                      /* blocks of order begun */
    bool in_block;                    /* block order[next - 1] has live threads */
    bool pdl, released, synced;       /* released: its predecessor has completed */
    std::vector<emu_fiber> fibers;
    std::vector<warp_state> warps;
    int blk_alive, blk_arrived; unsigned blk_gen;
};

thread_local emu_fiber *emu_cur;
emu_uint3 emu_bid, emu_bdim, emu_gdim;
void *emu_dyn_smem;
int emu_ctx_id;
static void *sched_sp;
static emu_ctx ctxs[2];
static emu_ctx *cx;       /* the context whose threads run now */
static emu_ctx *pending;  /* the launch not yet completed (everything before it has), or null */
static bool progressed;   /* a thread reached a barrier, the grid sync or its end during this pass */
static const size_t STACK = 256 * 1024;

emu_uint3 &emu_tid(void) { return emu_cur->tid; }

static void yield_to_sched(void) { emu_swap(&emu_cur->sp, sched_sp); }

static void fiber_main(void) {
    emu_ctx &c = *cx;
    c.body();
    emu_cur->done = true;
    progressed = true;
    c.blk_alive--;
    warp_state &w = c.warps[emu_cur->warp];
    w.alive--;
    if (c.blk_alive > 0 && c.blk_arrived == c.blk_alive) { c.blk_arrived = 0; c.blk_gen++; }
    if (w.alive > 0 && w.arrived == w.alive) { w.arrived = 0; w.gen++; }
    yield_to_sched();
    abort();
}

/* Barrier waits hold a reference to their own context: another context may
 * run while this thread is parked, and cx is theirs again when it resumes. */
void __syncthreads(void) {
    emu_ctx &c = *cx;
    unsigned g = c.blk_gen;
    progressed = true;
    if (++c.blk_arrived == c.blk_alive) { c.blk_arrived = 0; c.blk_gen++; return; }
    while (c.blk_gen == g) yield_to_sched();
}

static void warp_barrier(void) {
    warp_state &w = cx->warps[emu_cur->warp];
    unsigned g = w.gen;
    progressed = true;
    if (++w.arrived == w.alive) { w.arrived = 0; w.gen++; return; }
    while (w.gen == g) yield_to_sched();
}

uint64_t emu_shfl(uint64_t v, int m, bool xor_mode) {
    warp_state &w = cx->warps[emu_cur->warp];
    if (w.alive != 32) { fprintf(stderr, "EMU: shuffle with %d live lanes\n", w.alive); abort(); }
    w.slot[emu_cur->lane] = v;
    warp_barrier();
    int src = xor_mode ? (emu_cur->lane ^ m) : (m & 31);
    uint64_t r = w.slot[src];
    warp_barrier();
    return r;
}

/* Parks the thread until the launch's predecessor has completed; a launch
 * without PDL has it released from the start. */
void cudaGridDependencySynchronize(void) {
    emu_ctx &c = *cx;
    c.synced = progressed = true;
    while (c.pdl && !c.released) yield_to_sched();
}

static void fiber_init(emu_fiber &f) {
    if (!f.stack) f.stack = (char *)aligned_alloc(64, STACK);
    uintptr_t top = ((uintptr_t)(f.stack + STACK)) & ~(uintptr_t)15;
    void **sp = (void **)top;
    *--sp = 0;                    /* padding so the entry sees rsp%16 == 8 */
    *--sp = (void *)fiber_main;   /* ret target */
    for (int i = 0; i < 6; i++) *--sp = 0; /* rbp rbx r12 r13 r14 r15 */
    f.sp = sp;
    f.done = false;
}

static void finish_pending(void);

/* ---- stream capture (thread-local, as cudaStreamCaptureModeThreadLocal) ---- */
struct emu_graph { std::vector<std::function<void()>> ops; };
static thread_local emu_graph *g_capture;     /* non-null while capturing */
static thread_local bool g_capture_invalid;   /* a forbidden call happened */
bool emu_capture_record(const std::function<void()> &op) {
    if (!g_capture) return false;
    g_capture->ops.push_back(op);
    return true;
}
/* Synchronising or allocating while capturing: CUDA refuses and invalidates the capture. */
static bool emu_capture_forbids(const char *call) {
    if (!g_capture) return false;
    fprintf(stderr, "EMU: %s while capturing a graph\n", call);
    g_capture_invalid = true;
    return true;
}
#define FORBIDDEN_IN_CAPTURE(call) if (emu_capture_forbids(call)) return cudaErrorStreamCaptureUnsupported
cudaError_t cudaStreamBeginCapture(cudaStream_t, cudaStreamCaptureMode) {
    if (g_capture) return cudaErrorInvalidValue;
    g_capture = new emu_graph;
    g_capture_invalid = false;
    return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t *g) {
    if (!g_capture) return cudaErrorInvalidValue;
    emu_graph *c = g_capture;
    g_capture = nullptr;
    if (g_capture_invalid) { delete c; *g = nullptr; return cudaErrorStreamCaptureInvalidated; }
    *g = c;
    return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g, unsigned long long) {
    if (!g) return cudaErrorInvalidValue;
    *e = new emu_graph(*g);
    return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t) {
    if (!e || g_capture) return cudaErrorInvalidValue;
    finish_pending(); /* a graph is one stream operation: no launch of it overlaps work outside */
    for (auto &op : e->ops) op();
    finish_pending();
    return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) { delete g; return cudaSuccess; }
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e) { delete e; return cudaSuccess; }


/* The order blocks run in: grid order, or with EMU_BLOCK_ORDER=reverse the
 * opposite, or =shuffle a different permutation at every launch (fixed
 * seed sequence, so a failing run repeats). The device promises no order;
 * kernels whose blocks meet through memory (the split-K GEMV's last-block
 * reduction) must give the same bits under each. */
static std::vector<emu_uint3> block_order(dim3 grid) {
    static uint64_t launches;
    std::vector<emu_uint3> v;
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) v.push_back({bx, by, bz});
    const char *o = getenv("EMU_BLOCK_ORDER");
    if (o && !strcmp(o, "reverse")) std::reverse(v.begin(), v.end());
    if (o && !strcmp(o, "shuffle")) {
        uint64_t x = 0x9E3779B97F4A7C15ull * ++launches;
        for (size_t i = v.size(); i > 1; i--) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            std::swap(v[i - 1], v[x % i]);
        }
    }
    return v;
}

/* "kernel NAME" for messages: the symbol addr2line finds for the kernel's
 * address in this executable (an error path only) */
static int main_bias(struct dl_phdr_info *i, size_t, void *out) { *(uintptr_t *)out = i->dlpi_addr; return 1; }
static std::string kernel_name(const void *kern) {
    if (!kern) return "a cuBLAS GEMM";
    uintptr_t bias = 0;
    dl_iterate_phdr(main_bias, &bias); /* the first object is the executable */
    char exe[512] = "", cmd[700], name[512] = "?";
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) exe[n] = 0;
    snprintf(cmd, sizeof cmd, "addr2line -f -C -e '%s' %#lx 2>/dev/null", exe, (unsigned long)((uintptr_t)kern - bias));
    if (FILE *p = popen(cmd, "r")) {
        if (!fgets(name, sizeof name, p)) strcpy(name, "?");
        name[strcspn(name, "\n")] = 0;
        pclose(p);
    }
    return std::string("kernel ") + name;
}

/* Makes c's threads the ones that run: the globals kernels read are its. */
static void ctx_resume(emu_ctx &c) {
    cx = &c;
    emu_ctx_id = c.id;
    emu_gdim = {c.grid.x, c.grid.y, c.grid.z};
    emu_bdim = {c.block.x, c.block.y, c.block.z};
    emu_dyn_smem = c.dyn.data();
    emu_bid = c.order[c.next - 1];
}

static void block_begin(emu_ctx &c) {
    c.next++;
    memset(c.dyn.data(), 0xCD, c.dyn.size()); /* uninitialised shared memory */
    c.warps.assign((c.nt + 31) / 32, warp_state{0, 0, 0, {0}});
    for (int t = 0; t < c.nt; t++) {
        emu_fiber &f = c.fibers[t];
        fiber_init(f);
        f.tid = {(unsigned)(t % c.block.x), (unsigned)((t / c.block.x) % c.block.y), (unsigned)(t / (c.block.x * c.block.y))};
        f.lane = t % 32; f.warp = t / 32;
        c.warps[f.warp].alive++;
    }
    c.blk_alive = c.nt; c.blk_arrived = 0;
    c.in_block = true;
}

/* Runs c's live block (beginning the next one if none is) until it ends
 * (true) or a whole pass over its threads moves none of them (false: every
 * live thread waits, in the grid sync or at a barrier that cannot complete). */
static bool block_run(emu_ctx &c) {
    if (!c.in_block) block_begin(c);
    ctx_resume(c);
    for (;;) {
        int live = 0;
        progressed = false;
        for (int t = 0; t < c.nt; t++) {
            emu_fiber &f = c.fibers[t];
            if (f.done) continue;
            emu_cur = &f;
            emu_swap(&sched_sp, f.sp);
            if (!f.done) live++;
        }
        if (!live) { c.in_block = false; return true; }
        if (!progressed) return false;
    }
}

/* Runs the rest of c with its grid dependency met. */
static void ctx_finish(emu_ctx &c) {
    c.released = true;
    while (c.in_block || c.next < c.order.size()) {
        if (block_run(c)) continue;
        int live = 0;
        for (int t = 0; t < c.nt; t++) live += !c.fibers[t].done;
        fprintf(stderr, "EMU: deadlock in block (%u,%u,%u) of %s: its %d live threads all wait at barriers"
                " or shuffles that can never complete\n", emu_bid.x, emu_bid.y, emu_bid.z, kernel_name(c.kern).c_str(), live);
        abort();
    }
    if (c.pdl && !c.synced && !c.order.empty()) {
        fprintf(stderr, "EMU: %s was launched with programmatic stream serialization (PDL) but none of its threads"
                " called cudaGridDependencySynchronize(): on the device it may run before its predecessor has"
                " finished\n", kernel_name(c.kern).c_str());
        abort();
    }
    c.body = nullptr; /* drop the captured arguments */
}

static void finish_pending(void) {
    emu_ctx *c = pending;
    pending = nullptr;
    if (c) ctx_finish(*c);
}

/* EMU_LAUNCH=sync: every launch completes before its call returns (as the
 * emulator did before PDL), so PDL launches never run ahead and their
 * hazards go unseen. For tests that assume a call's kernels run inside its
 * host interval (test_cuda_profile's event pairs). */
static bool launch_sync(void) {
    static int on = -1;
    if (on < 0) { const char *e = getenv("EMU_LAUNCH"); on = e && !strcmp(e, "sync"); }
    return on;
}

/* Stream order with PDL. At most one launch is pending; everything before
 * it has completed. A launch without PDL completes the pending one and
 * becomes pending itself, not begun (the next launch may be PDL and run
 * ahead of it). A PDL launch first runs its blocks, in their order, until
 * one parks (all its live threads waiting in cudaGridDependencySynchronize or
 * at a barrier behind it), then lets the pending one complete, and becomes
 * the pending one: its part before the grid sync ran entirely before its
 * predecessor, the most hostile order the device allows, so a read of the
 * predecessor's output there sees stale data and a write of its input is
 * seen by it. */
static void emu_launch_now(const void *kern, bool pdl, dim3 grid, dim3 block, size_t smem, const std::function<void()> &body) {
    int nt = (int)(block.x * block.y * block.z);
    if (nt <= 0 || nt > 1024) { fprintf(stderr, "EMU: bad block size %d\n", nt); abort(); }
    emu_ctx &c = ctxs[pending == &ctxs[0]]; /* the one not pending */
    c.id = (int)(&c - ctxs);
    c.kern = kern;
    c.body = body;
    c.grid = grid; c.block = block; c.nt = nt;
    c.dyn.resize(smem + 16);
    c.order = block_order(grid);
    c.next = 0; c.in_block = false;
    c.pdl = pdl; c.released = false; c.synced = false;
    if (c.fibers.size() < (size_t)nt) c.fibers.resize(nt, emu_fiber{nullptr, nullptr, {0, 0, 0}, 0, 0, false});
    if (pdl && pending)
        while (c.next < c.order.size() && block_run(c)) {}
    finish_pending();
    pending = &c;
    if (launch_sync()) finish_pending();
}

void emu_launch(const void *kern, bool pdl, dim3 grid, dim3 block, size_t smem, const std::function<void()> &body) {
    if (emu_capture_record([=]() { emu_launch_now(kern, pdl, grid, block, smem, body); })) return;
    emu_launch_now(kern, pdl, grid, block, smem, body);
}

/* ---- runtime ---- */
static size_t g_allocated;
cudaError_t cudaGetDeviceCount(int *n) { *n = 1; return cudaSuccess; }
cudaError_t cudaSetDevice(int) { return cudaSuccess; }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int) {
    memset(p, 0, sizeof *p);
    strcpy(p->name, "CPU emulation of sm_90");
    p->multiProcessorCount = 4; p->major = 9; p->minor = 0;
    p->totalGlobalMem = (size_t)80 << 30; p->sharedMemPerBlockOptin = 232448; p->l2CacheSize = 50 << 20;
    return cudaSuccess;
}
cudaError_t cudaMalloc(void **p, size_t n) {
    FORBIDDEN_IN_CAPTURE("cudaMalloc");
    if (n > ((size_t)64 << 30)) { *p = nullptr; return cudaErrorMemoryAllocation; }
    *p = aligned_alloc(256, (n + 255) & ~(size_t)255);
    if (!*p) return cudaErrorMemoryAllocation;
    memset(*p, 0xEE, n); /* garbage, not zeros */
    g_allocated += n;
    return cudaSuccess;
}
cudaError_t cudaFree(void *p) { FORBIDDEN_IN_CAPTURE("cudaFree"); finish_pending(); free(p); return cudaSuccess; }
cudaError_t cudaHostAlloc(void **p, size_t n, unsigned) { FORBIDDEN_IN_CAPTURE("cudaHostAlloc"); *p = malloc(n); return cudaSuccess; }
cudaError_t cudaFreeHost(void *p) { finish_pending(); free(p); return cudaSuccess; }
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind, cudaStream_t) {
    auto op = [=]() { finish_pending(); memmove(d, s, n); };
    if (!emu_capture_record(op)) op();
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t) {
    auto op = [=]() { finish_pending(); memset(d, v, n); };
    if (!emu_capture_record(op)) op();
    return cudaSuccess;
}
cudaError_t cudaMemset(void *d, int v, size_t n) { FORBIDDEN_IN_CAPTURE("cudaMemset"); finish_pending(); memset(d, v, n); return cudaSuccess; }
cudaError_t cudaStreamCreate(cudaStream_t *s) { *s = (cudaStream_t)malloc(8); return cudaSuccess; }
cudaError_t cudaStreamDestroy(cudaStream_t s) { finish_pending(); free(s); return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { FORBIDDEN_IN_CAPTURE("cudaStreamSynchronize"); finish_pending(); return cudaSuccess; }
cudaError_t cudaDeviceSynchronize(void) { FORBIDDEN_IN_CAPTURE("cudaDeviceSynchronize"); finish_pending(); return cudaSuccess; }
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
cudaError_t cudaMemGetInfo(size_t *f, size_t *t) { *t = (size_t)80 << 30; *f = *t - g_allocated; return cudaSuccess; }
const char *cudaGetErrorName(cudaError_t e) { return e == cudaErrorMemoryAllocation ? "cudaErrorMemoryAllocation" : "cudaError"; }
const char *cudaGetErrorString(cudaError_t) { return "emulated error"; }
struct emu_event { long long ns; bool recorded; };
cudaError_t cudaEventCreate(cudaEvent_t *e) { *e = new emu_event{0, false}; return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
    auto mark = [=]() { finish_pending(); e->ns = clock64(); e->recorded = true; };
    if (!emu_capture_record(mark)) mark();
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { FORBIDDEN_IN_CAPTURE("cudaEventSynchronize"); finish_pending(); return cudaSuccess; }
cudaError_t cudaEventQuery(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b) {
    if (!a->recorded || !b->recorded) return cudaErrorInvalidResourceHandle;
    *ms = (float)((b->ns - a->ns) * 1e-6);
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) { delete e; return cudaSuccess; }
cudaError_t cudaPeekAtLastError(void) { return cudaSuccess; }
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int) {
    if (a != cudaDevAttrClockRate) return cudaErrorInvalidValue;
    *v = 1000000;
    return cudaSuccess;
}

/* ---- cuBLAS (column-major, naive, f32 accumulation) ---- */
cublasStatus_t cublasCreate(cublasHandle_t *h) { *h = (cublasHandle_t)malloc(8); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasDestroy(cublasHandle_t h) { free(h); return CUBLAS_STATUS_SUCCESS; }
cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) { return CUBLAS_STATUS_SUCCESS; }
/* the emulated GEMMs need no workspace; a null buffer with a size is refused as cuBLAS does */
cublasStatus_t cublasSetWorkspace(cublasHandle_t, void *ws, size_t bytes) {
    return ws || !bytes ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) { return CUBLAS_STATUS_SUCCESS; }
const char *cublasGetStatusName(cublasStatus_t) { return "CUBLAS_STATUS_X"; }
const char *cublasGetStatusString(cublasStatus_t) { return "emulated"; }
static float ld(const void *p, cudaDataType_t t, size_t i) {
    if (t == CUDA_R_32F) return ((const float *)p)[i];
    uint16_t h = ((const uint16_t *)p)[i];
    if (t == CUDA_R_16BF) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 31, m = h & 0x3ff;
    float f;
    if (e == 0) { f = m * 5.9604644775390625e-8f; return sign ? -f : f; }
    uint32_t u = sign | ((e + 112) << 23) | (m << 13); memcpy(&f, &u, 4); return f;
}
static void gemm_run(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                     const void *A, cudaDataType_t at, int lda, const void *B, cudaDataType_t bt, int ldb,
                     float beta, float *C, int ldc) {
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            float s = 0;
            for (int l = 0; l < k; l++) {
                float a = ta ? ld(A, at, (size_t)i * lda + l) : ld(A, at, (size_t)l * lda + i);
                float b = tb ? ld(B, bt, (size_t)l * ldb + j) : ld(B, bt, (size_t)j * ldb + l);
                s += a * b;
            }
            C[(size_t)j * ldc + i] = alpha * s + (beta != 0 ? beta * C[(size_t)j * ldc + i] : 0);
        }
}
/* Checked at the call; computed as a one-thread launch without PDL, so it
 * takes its place in stream order (and is recorded while capturing) like the
 * kernels cuBLAS launches: a PDL kernel after it may run ahead of it. */
static cublasStatus_t gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, float alpha,
                           const void *A, cudaDataType_t at, int lda, const void *B, cudaDataType_t bt, int ldb,
                           float beta, float *C, int ldc) {
    if (m < 0 || n < 0 || k < 0 || lda < (ta ? k : m) || ldb < (tb ? n : k) || ldc < m) return CUBLAS_STATUS_INVALID_VALUE;
    emu_launch(nullptr, false, dim3(1), dim3(1), 0, [=]() { gemm_run(ta, tb, m, n, k, alpha, A, at, lda, B, bt, ldb, beta, C, ldc); });
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSgemm(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           const float *alpha, const float *A, int lda, const float *B, int ldb,
                           const float *beta, float *C, int ldc) {
    /* host scalars: read at the call, as cuBLAS does */
    return gemm(ta, tb, m, n, k, *alpha, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb, *beta, C, ldc);
}
cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *A, cudaDataType_t at, int lda, const void *B,
                            cudaDataType_t bt, int ldb, const void *beta, void *C, cudaDataType_t ct, int ldc,
                            cublasComputeType_t, cublasGemmAlgo_t) {
    if (ct != CUDA_R_32F || at != bt) return CUBLAS_STATUS_INVALID_VALUE;
    return gemm(ta, tb, m, n, k, *(const float *)alpha, A, at, lda, B, bt, ldb, *(const float *)beta, (float *)C, ldc);
}
