/* CPU emulation of the CUDA subset kernels/cuda uses, for running the CUDA
 * backend's kernels and host code on a machine without a GPU (see
 * tests/gpu/emu/run_emu.sh). Every CUDA thread is a fiber; the threads of one
 * block run cooperatively and switch at __syncthreads and warp shuffles, so
 * barriers, shuffles and shared memory behave as on the device. Blocks run
 * one after another. Stream capture records launches, async copies/sets and
 * cuBLAS calls for graph replay, and fails (as CUDA does) on synchronising or
 * allocating calls made while capturing. Not emulated: fast-math precision, timing, memory
 * model races between blocks, launch limits beyond block size. x86-64 only. */
#pragma once
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <stdlib.h>
#include <math.h>
#include <time.h>
#include <algorithm>
#include <functional>
using std::min; using std::max;

#define __global__
#define __device__
#define __host__
#define __constant__
#define __shared__ static
#define __forceinline__ inline
#define __launch_bounds__(...)

struct emu_uint3 { unsigned x, y, z; };
struct dim3 { unsigned x, y, z; dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {} };
struct __attribute__((aligned(16))) uint4 { unsigned x, y, z, w; };
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
static inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { uint4 r = {a, b, c, d}; return r; }
static inline float4 make_float4(float a, float b, float c, float d) { float4 r = {a, b, c, d}; return r; }
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
/* SM clock counter: nanoseconds of the host's monotonic clock (a 1 GHz clock,
 * see cudaDeviceGetAttribute(cudaDevAttrClockRate)) */
static inline long long clock64(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

struct emu_fiber;
extern thread_local emu_fiber *emu_cur;
emu_uint3 &emu_tid(void);
extern emu_uint3 emu_bid, emu_bdim, emu_gdim;
extern void *emu_dyn_smem;
#define threadIdx (emu_tid())
#define blockIdx (emu_bid)
#define blockDim (emu_bdim)
#define gridDim (emu_gdim)

void __syncthreads(void);
uint64_t emu_shfl(uint64_t v, int src_lane_or_mask, bool xor_mode);
template <typename T> T __shfl_xor_sync(unsigned, T v, int m) {
    uint64_t u = 0; memcpy(&u, &v, sizeof(T)); u = emu_shfl(u, m, true); T r; memcpy(&r, &u, sizeof(T)); return r;
}
template <typename T> T __shfl_sync(unsigned, T v, int src) {
    uint64_t u = 0; memcpy(&u, &v, sizeof(T)); u = emu_shfl(u, src, false); T r; memcpy(&r, &u, sizeof(T)); return r;
}
static inline int atomicCAS(int *a, int cmp, int val) { int old = *a; if (old == cmp) *a = val; return old; }
/* Atomics and fences: a fiber runs until it reaches a barrier or shuffle and
 * blocks run one after another, so every access is already atomic and
 * sequentially consistent. The cross-block ordering these exist for on the
 * device cannot be exercised here; EMU_BLOCK_ORDER (emu_runtime.cpp) at least
 * changes which block of a grid comes last. */
static inline int atomicAdd(int *a, int v) { int old = *a; *a = old + v; return old; }
static inline void __threadfence(void) {}
template <typename T> static inline T __ldg(const T *p) { return *p; }
/* byte i of the result: byte (s >> 4i) & 7 of the 8 bytes y:x (x the low four);
 * the sign-replicating mode (selector bit 3) is not emulated: refused */
static inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    unsigned long long v = ((unsigned long long)y << 32) | x;
    unsigned r = 0;
    for (int i = 0; i < 4; i++) {
        unsigned sel = (s >> (4 * i)) & 15u;
        if (sel & 8u) abort();
        r |= (unsigned)((v >> (8 * sel)) & 0xffu) << (8 * i);
    }
    return r;
}
template <typename T> static inline T __ldcs(const T *p) { return *p; }
template <typename T> static inline T __ldcg(const T *p) { return *p; }

void emu_launch(dim3 grid, dim3 block, size_t smem, const std::function<void()> &body);
/* A launch with its arguments taken by value now: runs at once, or, while the
 * stream is being captured, is recorded and runs at each graph launch. */
template <typename K, typename... A>
void emu_launch_k(dim3 grid, dim3 block, size_t smem, K kern, A... args) {
    emu_launch(grid, block, smem, [=]() { kern(args...); });
}
static inline dim3 emu_dim(dim3 d) { return d; }
