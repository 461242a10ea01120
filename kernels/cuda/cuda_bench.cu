/* Benchmark helpers of cuda_ext.h: a device read-bandwidth probe (the
 * denominator of every "% of bandwidth" the benchmark prints) and a fast
 * device-side random byte fill for benchmark weights. Not used by inference. */
#include <stdlib.h>

#include "cuda_common.cuh"

/* Reads n16 16-byte words, 4 independent loads in flight per thread; the sum
 * is stored only if it equals a value it practically never has, so the loads
 * cannot be removed and nothing is written. */
__global__ void bw_read_kernel(const uint4 *__restrict__ src, int64_t n16, unsigned *sink) {
    unsigned acc = 0;
    int64_t stride = (int64_t)gridDim.x * blockDim.x;
    int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
    for (; i + 3 * stride < n16; i += 4 * stride) {
        uint4 a = __ldcs(src + i), b = __ldcs(src + i + stride);
        uint4 c = __ldcs(src + i + 2 * stride), d = __ldcs(src + i + 3 * stride);
        acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^ d.w;
    }
    for (; i < n16; i += stride) {
        uint4 a = __ldcs(src + i);
        acc ^= a.x ^ a.y ^ a.z ^ a.w;
    }
    if (acc == 0x9e3779b9u) sink[0] = acc;
}

__global__ void fill_bytes_kernel(uint8_t *dst, size_t n, uint64_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        uint64_t z = seed + (uint64_t)i * 0x9E3779B97F4A7C15ull; /* splitmix64 of the index */
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        dst[i] = (uint8_t)(z ^ (z >> 31));
    }
}

static int bw_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static ps_status bw_measure(cuda_impl *p, const uint4 *buf, int64_t n16, unsigned *sink, int reps,
                            double *times, ps_err *err) {
    cudaEvent_t a, b;
    CU_TRY(p, cudaEventCreate(&a));
    cudaError_t e = cudaEventCreate(&b);
    unsigned grid = (unsigned)p->sm_count * 8;
    for (int r = -1; r < reps && e == cudaSuccess; r++) { /* r = -1: warm-up */
        e = cudaEventRecord(a, p->stream);
        if (e == cudaSuccess) bw_read_kernel<<<grid, 256, 0, p->stream>>>(buf, n16, sink);
        if (e == cudaSuccess) e = cudaGetLastError();
        if (e == cudaSuccess) e = cudaEventRecord(b, p->stream);
        if (e == cudaSuccess) e = cudaEventSynchronize(b);
        float ms = 0.0f;
        if (e == cudaSuccess) e = cudaEventElapsedTime(&ms, a, b);
        if (r >= 0) times[r] = ms;
    }
    (void)cudaEventDestroy(a);
    (void)cudaEventDestroy(b);
    if (e != cudaSuccess) return cuda_fail(p, e, "bandwidth kernel", __FILE__, __LINE__, err);
    return PS_OK;
}

extern "C" ps_status ps_cuda_read_bandwidth(ps_backend *be, size_t bytes, int reps, double *gbps,
                                            ps_err *err) {
    if (!be || be->dev != PS_DEV_CUDA) return ps_errf(err, PS_EINVAL, "read_bandwidth: not a cuda backend");
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    if (reps < 1 || reps > 1000 || bytes < 16)
        return ps_errf(err, PS_EINVAL, "read_bandwidth: reps %d, bytes %zu", reps, bytes);
    bytes &= ~(size_t)15;
    void *buf = NULL, *sink = NULL;
    double *times = (double *)malloc(sizeof(double) * (size_t)reps);
    if (!times) return ps_errf(err, PS_ENOMEM, "read_bandwidth: host alloc");
    ps_status s = PS_OK;
    cudaError_t e = cudaMalloc(&buf, bytes);
    if (e == cudaSuccess) e = cudaMalloc(&sink, 16);
    if (e != cudaSuccess) s = cuda_fail(p, e, "cudaMalloc(bandwidth buffer)", __FILE__, __LINE__, err);
    if (s == PS_OK) {
        fill_bytes_kernel<<<cuda_ew_blocks(p, (int64_t)bytes), CUDA_EW_THREADS, 0, p->stream>>>(
            (uint8_t *)buf, bytes, 7); /* real data, not zeros */
        e = cudaGetLastError();
        if (e != cudaSuccess) s = cuda_fail(p, e, "fill kernel", __FILE__, __LINE__, err);
    }
    if (s == PS_OK) s = bw_measure(p, (const uint4 *)buf, (int64_t)(bytes / 16), (unsigned *)sink, reps, times, err);
    if (s == PS_OK) {
        qsort(times, (size_t)reps, sizeof(double), bw_cmp);
        double ms = times[reps / 2];
        *gbps = ms > 0 ? (double)bytes / (ms * 1e-3) / 1e9 : 0.0;
    }
    if (buf) (void)cudaFree(buf);
    if (sink) (void)cudaFree(sink);
    free(times);
    return s;
}

/* us per kernel of `iters` back-to-back read kernels over `copies` buffers of
 * `bytes` each, rotated (copies * bytes above the L2 size: every read from
 * DRAM; 1-2 copies of a small buffer: from L2). The fixed cost of a launch
 * shows as the difference from bytes / bandwidth at small sizes. */
extern "C" ps_status ps_cuda_read_probe(ps_backend *be, size_t bytes, int copies, int iters, double *us,
                                        ps_err *err) {
    if (!be || be->dev != PS_DEV_CUDA) return ps_errf(err, PS_EINVAL, "read_probe: not a cuda backend");
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    if (iters < 1 || copies < 1 || bytes < 16) return ps_errf(err, PS_EINVAL, "read_probe: bad arguments");
    bytes &= ~(size_t)255;
    void *buf = NULL, *sink = NULL;
    cudaEvent_t a = NULL, b = NULL;
    cudaError_t e = cudaMalloc(&buf, bytes * (size_t)copies);
    if (e == cudaSuccess) e = cudaMalloc(&sink, 16);
    if (e == cudaSuccess) e = cudaEventCreate(&a);
    if (e == cudaSuccess) e = cudaEventCreate(&b);
    if (e == cudaSuccess) {
        fill_bytes_kernel<<<cuda_ew_blocks(p, (int64_t)(bytes * (size_t)copies)), CUDA_EW_THREADS, 0, p->stream>>>(
            (uint8_t *)buf, bytes * (size_t)copies, 11);
        e = cudaGetLastError();
    }
    unsigned grid = (unsigned)p->sm_count * 8;
    for (int pass = 0; pass < 2 && e == cudaSuccess; pass++) { /* pass 0: warm-up */
        e = cudaEventRecord(a, p->stream);
        for (int i = 0; i < iters && e == cudaSuccess; i++) {
            const uint4 *src = (const uint4 *)((const char *)buf + bytes * (size_t)(i % copies));
            bw_read_kernel<<<grid, 256, 0, p->stream>>>(src, (int64_t)(bytes / 16), (unsigned *)sink);
            e = cudaGetLastError();
        }
        if (e == cudaSuccess) e = cudaEventRecord(b, p->stream);
        if (e == cudaSuccess) e = cudaEventSynchronize(b);
        float ms = 0.0f;
        if (e == cudaSuccess) e = cudaEventElapsedTime(&ms, a, b);
        *us = ms * 1e3 / iters;
    }
    ps_status s = e == cudaSuccess ? PS_OK : cuda_fail(p, e, "read probe", __FILE__, __LINE__, err);
    if (a) (void)cudaEventDestroy(a);
    if (b) (void)cudaEventDestroy(b);
    if (buf) (void)cudaFree(buf);
    if (sink) (void)cudaFree(sink);
    return s;
}

extern "C" ps_status ps_cuda_fill_random_bytes(ps_backend *be, void *dst, size_t n, uint64_t seed,
                                               ps_err *err) {
    if (!be || be->dev != PS_DEV_CUDA) return ps_errf(err, PS_EINVAL, "fill_random_bytes: not a cuda backend");
    cuda_impl *p = cuda_of(be);
    PS_TRY(cuda_enter(p, err));
    if (n == 0) return PS_OK;
    fill_bytes_kernel<<<cuda_ew_blocks(p, (int64_t)n), CUDA_EW_THREADS, 0, p->stream>>>(
        (uint8_t *)dst, n, seed * 0xD1B54A32D192ED03ull + 1);
    CU_LAUNCH_CHECK(p);
    return PS_OK;
}
