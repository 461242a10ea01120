/* Self-test of the emulator's programmatic dependent launch (PDL, see
 * include/emu_prelude.h): a kernel launched with the attribute after a
 * kernel A that writes a buffer must see A's values when it reads after
 * cudaGridDependencySynchronize(), must see the OLD values when it reads
 * before it (the emulator exposes that race), and must see A's values either
 * way without the attribute; the same in a captured graph (whose launch is
 * ordered with the work around it), after a cuBLAS
 * GEMM, and for copies and sets queued behind a pending launch. Several
 * blocks with barriers and shuffles on both sides of the grid sync and static
 * and dynamic shared memory kept across a parked block. Two abort checks run
 * in forked children: a PDL kernel that never calls the grid sync, and a
 * block whose threads deadlock.
 *
 * Compiled like a kernels/cuda source (launch_rewrite.py, then C++ against
 * include/); run by run_emu.sh as emu_pdl. Expected values come from the
 * arithmetic below, computed on the host. */
#include <cuda_runtime.h>
#include <cublas_v2.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <utility>

static int failures;
#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);     \
            fprintf(stderr, __VA_ARGS__);                                       \
            fputc('\n', stderr);                                                \
            failures++;                                                         \
        }                                                                       \
    } while (0)

enum { N = 1000, TPB = 256, NB = (N + TPB - 1) / TPB }; /* 4 blocks, the last one partial */
static const float OLD = -7.0f, BASE = 5.0f;            /* a[i]: OLD before A, BASE + i after */
static cudaStream_t st;

/* A: triggers its dependents at once (as producers may) and then writes */
__global__ void write_kernel(float *a, float base, int n) {
    cudaTriggerProgrammaticLaunchCompletion();
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) a[i] = base + i;
}
/* correct consumer; threads past n leave before the sync */
__global__ void read_after_kernel(float *out, const float *a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    cudaGridDependencySynchronize();
    out[i] = a[i];
}
/* broken consumer: reads its predecessor's output before the sync */
__global__ void read_before_kernel(float *out, const float *a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    float v = i < n ? a[i] : 0.0f;
    cudaGridDependencySynchronize();
    if (i < n) out[i] = v;
}
__global__ void double_kernel(float *out, const float *in, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = 2.0f * in[i];
}
/* broken successor: overwrites its predecessor's input before the sync */
__global__ void clobber_before_kernel(float *in, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) in[i] = 0.0f;
    cudaGridDependencySynchronize();
}
/* Before the sync: a per-launch table in static shared memory (through a
 * barrier, each thread reads a neighbour's entry), a warp shuffle sum of it,
 * and a value in dynamic shared memory; nothing a predecessor writes. After
 * the sync: the block's slice of a summed through shuffles and shared memory.
 * out[b] = scale * sum(a[b*TPB ..]) + 32 * scale + (scale + 1). */
__global__ void reduce_kernel(float *out, const float *a, float scale, int n) {
    __shared__ float s_tab[TPB], s_warp[TPB / 32];
    extern __shared__ float smem[];
    int t = threadIdx.x;
    s_tab[t] = scale;
    if (t == 0) smem[0] = scale + 1.0f;
    __syncthreads();
    float v = s_tab[(t + 1) % TPB];
    for (int m = 16; m; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
    cudaGridDependencySynchronize();
    int i = blockIdx.x * TPB + t;
    float x = i < n ? a[i] : 0.0f;
    for (int m = 16; m; m >>= 1) x += __shfl_xor_sync(0xffffffffu, x, m);
    if (t % 32 == 0) s_warp[t / 32] = x;
    __syncthreads();
    if (t == 0) {
        float s = 0.0f;
        for (int w = 0; w < TPB / 32; w++) s += s_warp[w];
        out[blockIdx.x] = s * s_tab[TPB - 1] + v + smem[0];
    }
}
__global__ void no_sync_kernel(float *out, const float *a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = a[i];
}
/* lane 0 waits at the block barrier, lanes 1..31 in a shuffle: never completes */
__global__ void deadlock_kernel(float *out) {
    float v = 1.0f;
    if (threadIdx.x == 0) __syncthreads();
    else v = __shfl_xor_sync(0xffffffffu, v, 1);
    out[threadIdx.x] = v;
}

/* as the backend's cuda_launch: the attribute present, numAttrs saying whether it counts */
template <typename... KArgs, typename... Args>
static void launch(bool pdl, void (*k)(KArgs...), int blocks, int threads, size_t smem, Args &&...args) {
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(blocks);
    cfg.blockDim = dim3(threads);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = st;
    cfg.attrs = attr;
    cfg.numAttrs = pdl ? 1 : 0;
    cudaError_t e = cudaLaunchKernelEx(&cfg, k, std::forward<Args>(args)...);
    CHECK(e == cudaSuccess, "cudaLaunchKernelEx: %d", (int)e);
}

static float h[N];
static void fill(float *d, float v, int n) {
    for (int i = 0; i < n; i++) h[i] = v;
    cudaMemcpyAsync(d, h, n * sizeof(float), cudaMemcpyHostToDevice, st);
}
static void get(float *hst, const float *d, int n) {
    cudaMemcpyAsync(hst, d, n * sizeof(float), cudaMemcpyDeviceToHost, st);
    cudaStreamSynchronize(st);
}
/* elements of out[lo, hi) equal to new_ ? BASE + i : OLD */
static int count_eq(const float *out, int lo, int hi, bool new_) {
    int c = 0;
    for (int i = lo; i < hi; i++) c += out[i] == (new_ ? BASE + i : OLD);
    return c;
}

/* (i)-(iii): after A, read after the sync (PDL), before it (PDL: the first
 * block, which runs ahead of A, sees OLD; the rest run after A), before it
 * without PDL, both through cudaLaunchKernelEx and a triple-chevron launch */
static void test_direct(float *a, float *out) {
    float r[N];
    fill(a, OLD, N);
    write_kernel<<<NB, TPB, 0, st>>>(a, BASE, N);
    launch(true, read_after_kernel, NB, TPB, 0, out, a, N);
    get(r, out, N);
    CHECK(count_eq(r, 0, N, true) == N, "read after the sync: %d of %d new", count_eq(r, 0, N, true), N);

    fill(a, OLD, N);
    launch(false, write_kernel, NB, TPB, 0, a, 5, N); /* int 5 converted to the float parameter */
    launch(true, read_before_kernel, NB, TPB, 0, out, a, N);
    get(r, out, N);
    CHECK(count_eq(r, 0, TPB, false) == TPB, "read before the sync, first block: %d of %d old", count_eq(r, 0, TPB, false), TPB);
    CHECK(count_eq(r, TPB, N, true) == N - TPB, "read before the sync, later blocks: %d of %d new", count_eq(r, TPB, N, true), N - TPB);

    fill(a, OLD, N);
    write_kernel<<<NB, TPB, 0, st>>>(a, BASE, N);
    launch(false, read_before_kernel, NB, TPB, 0, out, a, N);
    get(r, out, N);
    CHECK(count_eq(r, 0, N, true) == N, "no PDL, read before the sync: %d of %d new", count_eq(r, 0, N, true), N);

    fill(a, OLD, N);
    write_kernel<<<NB, TPB, 0, st>>>(a, BASE, N);
    read_before_kernel<<<NB, TPB, 0, st>>>(out, a, N);
    get(r, out, N);
    CHECK(count_eq(r, 0, N, true) == N, "chevron launch, read before the sync: %d of %d new", count_eq(r, 0, N, true), N);
}

/* (ii) the other half of the race: a PDL successor that writes its
 * predecessor's input before the sync changes what the predecessor reads */
static void test_clobber(float *a, float *out) {
    float r[N];
    fill(a, 3.0f, N);
    double_kernel<<<NB, TPB, 0, st>>>(out, a, N);
    launch(true, clobber_before_kernel, NB, TPB, 0, a, N);
    get(r, out, N);
    int zeros = 0, sixes = 0;
    for (int i = 0; i < N; i++) zeros += r[i] == 0.0f, sixes += r[i] == 6.0f;
    CHECK(zeros == TPB && sixes == N - TPB, "clobbered input: %d zeros (want %d), %d sixes (want %d)", zeros, TPB, sixes, N - TPB);
}

/* (iv) the same under stream capture, replayed twice */
static void test_graph(float *a, float *out, float *out2) {
    float r[N], r2[N];
    cudaGraph_t g = nullptr;
    cudaGraphExec_t ge = nullptr;
    CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal) == cudaSuccess, "begin capture");
    write_kernel<<<NB, TPB, 0, st>>>(a, BASE, N);
    launch(true, read_before_kernel, NB, TPB, 0, out, a, N);
    launch(true, read_after_kernel, NB, TPB, 0, out2, a, N);
    CHECK(cudaStreamEndCapture(st, &g) == cudaSuccess && g, "end capture");
    CHECK(cudaGraphInstantiate(&ge, g, 0) == cudaSuccess, "instantiate");
    for (int rep = 0; rep < 2; rep++) {
        fill(a, OLD, N);
        fill(out, 0.0f, N);
        fill(out2, 0.0f, N);
        CHECK(cudaGraphLaunch(ge, st) == cudaSuccess, "graph launch");
        get(r, out, N);
        get(r2, out2, N);
        CHECK(count_eq(r, 0, TPB, false) == TPB && count_eq(r, TPB, N, true) == N - TPB,
              "replay %d, read before the sync: first block %d old, later %d new", rep, count_eq(r, 0, TPB, false),
              count_eq(r, TPB, N, true));
        CHECK(count_eq(r2, 0, N, true) == N, "replay %d, read after the sync: %d of %d new", rep, count_eq(r2, 0, N, true), N);
    }
    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(g);

    /* A graph launch is ordered behind all earlier work in the stream and
     * completes before later work starts (programmatic edges exist only
     * between kernels inside a graph): a PDL kernel at either side of the
     * boundary does not run ahead. */
    cudaGraph_t gw = nullptr, gr = nullptr;
    cudaGraphExec_t gew = nullptr, ger = nullptr;
    cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal);
    write_kernel<<<NB, TPB, 0, st>>>(a, BASE, N);
    cudaStreamEndCapture(st, &gw);
    cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal);
    launch(true, read_before_kernel, NB, TPB, 0, out, a, N);
    cudaStreamEndCapture(st, &gr);
    CHECK(gw && gr && cudaGraphInstantiate(&gew, gw, 0) == cudaSuccess && cudaGraphInstantiate(&ger, gr, 0) == cudaSuccess,
          "capture of the one-kernel graphs");
    fill(a, OLD, N);
    write_kernel<<<NB, TPB, 0, st>>>(a, BASE, N);
    cudaGraphLaunch(ger, st);
    get(r, out, N);
    CHECK(count_eq(r, 0, N, true) == N, "graph after a launch: %d of %d new", count_eq(r, 0, N, true), N);
    fill(a, OLD, N);
    cudaGraphLaunch(gew, st);
    launch(true, read_before_kernel, NB, TPB, 0, out, a, N);
    get(r, out, N);
    CHECK(count_eq(r, 0, N, true) == N, "launch after a graph: %d of %d new", count_eq(r, 0, N, true), N);
    cudaGraphExecDestroy(gew);
    cudaGraphExecDestroy(ger);
    cudaGraphDestroy(gw);
    cudaGraphDestroy(gr);
}

/* (v) copies and sets queued behind a pending PDL launch see its results;
 * a PDL kernel after a cuBLAS GEMM overlaps it like any predecessor */
static void test_ordering(float *a, float *out) {
    float r[N];
    fill(a, OLD, N);
    write_kernel<<<NB, TPB, 0, st>>>(a, BASE, N);
    launch(true, read_after_kernel, NB, TPB, 0, out, a, N);
    cudaMemcpyAsync(r, out, N * sizeof(float), cudaMemcpyDeviceToHost, st); /* no sync before reading r */
    CHECK(count_eq(r, 0, N, true) == N, "copy after a pending launch: %d of %d new", count_eq(r, 0, N, true), N);

    launch(true, read_after_kernel, NB, TPB, 0, out, a, N);
    cudaMemsetAsync(out, 0, N * sizeof(float), st);
    get(r, out, N);
    int zeros = 0;
    for (int i = 0; i < N; i++) zeros += r[i] == 0.0f;
    CHECK(zeros == N, "set after a pending launch: %d of %d zero", zeros, N);

    /* C (2x2, column-major) = A * B, then a PDL kernel reads C before / after its sync */
    cublasHandle_t blas;
    cublasCreate(&blas);
    cublasSetStream(blas, st);
    float hab[8] = {1, 2, 3, 4, 5, 6, 7, 8}, want[4] = {1 * 5 + 3 * 6, 2 * 5 + 4 * 6, 1 * 7 + 3 * 8, 2 * 7 + 4 * 8};
    float one = 1.0f, zero = 0.0f, c[4];
    float *ab = out + 16, *cc = out + 32, *cb = out + 48, *ca = out + 64; /* A, B; C; C read before / after */
    cudaMemcpyAsync(ab, hab, sizeof hab, cudaMemcpyHostToDevice, st);
    fill(cc, OLD, 4);
    CHECK(cublasSgemm(blas, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, ab, 2, ab + 4, 2, &zero, cc, 2) == CUBLAS_STATUS_SUCCESS, "sgemm");
    launch(true, read_before_kernel, 1, 32, 0, cb, cc, 4);
    launch(true, read_after_kernel, 1, 32, 0, ca, cc, 4);
    get(c, cb, 4);
    for (int i = 0; i < 4; i++) CHECK(c[i] == OLD, "read of a GEMM's output before the sync: c[%d] = %g, want the old %g", i, c[i], OLD);
    get(c, ca, 4);
    for (int i = 0; i < 4; i++) CHECK(c[i] == want[i], "read of a GEMM's output after the sync: c[%d] = %g, want %g", i, c[i], want[i]);
    cublasDestroy(blas);
}

/* (vi) barriers, shuffles, static and dynamic shared memory on both sides of
 * the sync, two PDL launches of the same kernel in flight at once (the second
 * one's first block runs while the first one is parked) */
static void test_blocks(float *a, float *out) {
    float r[2 * NB];
    fill(a, OLD, N);
    write_kernel<<<NB, TPB, 0, st>>>(a, BASE, N);
    launch(true, reduce_kernel, NB, TPB, sizeof(float), out, a, 2.0f, N);
    launch(true, reduce_kernel, NB, TPB, sizeof(float), out + NB, a, 3.0f, N);
    get(r, out, 2 * NB);
    for (int k = 0; k < 2; k++) {
        float scale = k ? 3.0f : 2.0f;
        for (int b = 0; b < NB; b++) {
            double s = 0.0;
            for (int i = b * TPB; i < N && i < (b + 1) * TPB; i++) s += BASE + i;
            double want = scale * s + 32.0 * scale + scale + 1.0, got = r[k * NB + b];
            CHECK(fabs(got - want) <= 1e-6 * fabs(want), "reduce launch %d block %d: %g, want %g", k, b, got, want);
        }
    }
}

/* Runs fn in a child with stderr captured; true when the child failed and
 * its stderr holds want. */
static bool child_aborts(void (*fn)(float *, float *), float *a, float *out, const char *want) {
    int fd[2];
    if (pipe(fd)) return false;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        dup2(fd[1], 2);
        close(fd[0]);
        fn(a, out);
        _exit(0);
    }
    close(fd[1]);
    char msg[4096];
    size_t n = 0;
    ssize_t k;
    while ((k = read(fd[0], msg + n, sizeof msg - 1 - n)) > 0) n += (size_t)k;
    msg[n] = 0;
    close(fd[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    bool failed = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    printf("child (want \"%s\"): %s, stderr: %s", want, failed ? "failed" : "exited 0", n ? msg : "(none)\n");
    return failed && strstr(msg, want);
}
static void run_no_sync(float *a, float *out) {
    write_kernel<<<NB, TPB, 0, st>>>(a, BASE, N);
    launch(true, no_sync_kernel, NB, TPB, 0, out, a, N);
    cudaStreamSynchronize(st);
}
static void run_deadlock(float *, float *out) {
    deadlock_kernel<<<1, 32, 0, st>>>(out);
    cudaStreamSynchronize(st);
}

int main(void) {
    unsetenv("EMU_BLOCK_ORDER"); /* the checks above name the block that runs first: block 0 */
    float *a = nullptr, *out = nullptr, *out2 = nullptr;
    cudaStreamCreate(&st);
    cudaMalloc(&a, N * sizeof(float));
    cudaMalloc(&out, N * sizeof(float));
    cudaMalloc(&out2, N * sizeof(float));
    test_direct(a, out);
    test_clobber(a, out);
    test_graph(a, out, out2);
    test_ordering(a, out);
    test_blocks(a, out);
    cudaStreamSynchronize(st);
    CHECK(child_aborts(run_no_sync, a, out, "none of its threads called cudaGridDependencySynchronize"), "missing grid sync not caught");
    CHECK(child_aborts(run_deadlock, a, out, "EMU: deadlock"), "deadlock not caught");
    cudaFree(a);
    cudaFree(out);
    cudaFree(out2);
    cudaStreamDestroy(st);
    if (failures) { printf("emu_pdl: %d checks failed\n", failures); return 1; }
    printf("emu_pdl: all checks passed\n");
    return 0;
}
