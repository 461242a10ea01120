/* CPU emulation of the CUDA subset kernels/cuda uses, for running the CUDA
 * backend's kernels and host code on a machine without a GPU (see
 * tests/gpu/emu/run_emu.sh). Every CUDA thread is a fiber; the threads of one
 * block run cooperatively and switch at __syncthreads, warp shuffles and
 * cudaGridDependencySynchronize, so barriers, shuffles and shared memory
 * behave as on the device. Blocks run one after another. Stream capture
 * records launches, async copies/sets and cuBLAS calls for graph replay, and
 * fails (as CUDA does) on synchronising or allocating calls made while
 * capturing.
 *
 * Programmatic dependent launch (PDL: cudaLaunchKernelEx with
 * cudaLaunchAttributeProgrammaticStreamSerialization): the last launch is
 * kept pending (not begun, or parked); a PDL launch runs its blocks, in
 * order, until one parks in cudaGridDependencySynchronize() (usually its
 * first), BEFORE the pending predecessor runs at all, so a kernel that reads
 * its predecessor's output, or writes its input, before that call computes
 * wrong numbers here as it may on the device. Every other stream operation
 * (copy, set, sync, event, free, graph launch) first completes the pending
 * launch; a cuBLAS GEMM is a launch without PDL. Static __shared__
 * variables are per launch context (launch_rewrite.py turns them into
 * emu_shared), so a parked block keeps its shared memory. Aborts with an
 * "EMU:" message: a PDL kernel none of whose threads called the grid sync,
 * a block whose live threads all wait forever. EMU_LAUNCH=sync: every launch
 * completes before its call returns (no PDL overlap).
 *
 * Not emulated: fast-math precision, timing, memory model races between
 * blocks, a PDL kernel overlapping anything but its immediate predecessor,
 * several host threads driving the emulator at once, launch limits beyond
 * block size. x86-64 only. */
#pragma once
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <stdlib.h>
#include <math.h>
#include <time.h>
#include <algorithm>
#include <functional>
#include <utility>
using std::min; using std::max;

#define __global__
#define __device__
#define __host__
#define __constant__
/* launch_rewrite.py rewrites every __shared__ declaration into emu_shared; one
 * it missed fails to compile here rather than sharing storage silently */
#define __shared__ emu_shared_declaration_not_rewritten_by_launch_rewrite_py
#define __forceinline__ inline
#define __launch_bounds__(...)

struct emu_uint3 { unsigned x, y, z; };
struct dim3 { unsigned x, y, z; dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {} };
struct __attribute__((aligned(8))) uint2 { unsigned x, y; };
struct __attribute__((aligned(16))) uint4 { unsigned x, y, z, w; };
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
static inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { uint4 r = {a, b, c, d}; return r; }
static inline uint2 make_uint2(unsigned a, unsigned b) { uint2 r = {a, b}; return r; }
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
/* references, not macros: cudaLaunchConfig_t has members named gridDim and blockDim */
inline emu_uint3 &blockIdx = emu_bid;
inline emu_uint3 &blockDim = emu_bdim;
inline emu_uint3 &gridDim = emu_gdim;

/* The storage of one static __shared__ variable (Site: a lambda type unique to
 * the declaration) in the launch context running now: two launches may be
 * in flight (a PDL launch parked while its predecessor runs), each with its
 * own copy. 16-byte aligned like a static array of 16 bytes or more. */
extern int emu_ctx_id;
template <typename T, typename Site> T &emu_shared(Site) {
    struct alignas(alignof(T) > 16 ? alignof(T) : 16) box { T v; };
    static box s[2];
    return s[emu_ctx_id].v;
}

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

/* kern: the kernel (named in error messages; null for a cuBLAS GEMM); pdl:
 * launched with programmatic stream serialization */
void emu_launch(const void *kern, bool pdl, dim3 grid, dim3 block, size_t smem, const std::function<void()> &body);
/* A launch with its arguments taken by value now: runs in stream order (see
 * the top of this file), or, while the stream is being captured, is recorded
 * and runs at each graph launch. */
template <typename K, typename... A>
void emu_launch_kx(bool pdl, dim3 grid, dim3 block, size_t smem, K kern, A... args) {
    emu_launch(reinterpret_cast<const void *>(kern), pdl, grid, block, smem, [=]() { kern(args...); });
}
/* kern<<<grid, block, smem, stream>>>(args), as launch_rewrite.py writes it */
template <typename K, typename... A>
void emu_launch_k(dim3 grid, dim3 block, size_t smem, K kern, A... args) {
    emu_launch_kx(false, grid, block, smem, kern, args...);
}
static inline dim3 emu_dim(dim3 d) { return d; }
