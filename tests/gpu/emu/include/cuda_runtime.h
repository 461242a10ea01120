#pragma once
#include "emu_prelude.h"
typedef enum { cudaSuccess = 0, cudaErrorMemoryAllocation = 2, cudaErrorInvalidValue = 1, cudaErrorNoDevice = 100,
               cudaErrorStreamCaptureUnsupported = 900, cudaErrorStreamCaptureInvalidated = 901,
               cudaErrorInvalidResourceHandle = 400, cudaErrorNotReady = 600 } cudaError_t;
typedef enum { cudaStreamCaptureModeGlobal = 0, cudaStreamCaptureModeThreadLocal = 1, cudaStreamCaptureModeRelaxed = 2 } cudaStreamCaptureMode;
typedef struct emu_graph *cudaGraph_t;
typedef struct emu_graph *cudaGraphExec_t;
typedef enum { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3 } cudaMemcpyKind;
typedef enum { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 } cudaFuncAttribute;
typedef enum { cudaDevAttrClockRate = 13 } cudaDeviceAttr;
typedef struct emu_stream *cudaStream_t;
typedef struct emu_event *cudaEvent_t;
typedef struct { char name[256]; int multiProcessorCount, major, minor; size_t totalGlobalMem, sharedMemPerBlockOptin; int l2CacheSize; } cudaDeviceProp;
#define cudaHostAllocDefault 0
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d);
cudaError_t cudaMalloc(void **p, size_t n);
template <typename T> cudaError_t cudaMalloc(T **p, size_t n) { return cudaMalloc((void **)p, n); }
cudaError_t cudaFree(void *p);
cudaError_t cudaHostAlloc(void **p, size_t n, unsigned flags);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k, cudaStream_t st);
cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t st);
cudaError_t cudaMemset(void *d, int v, size_t n);
cudaError_t cudaStreamCreate(cudaStream_t *s);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaGetLastError(void);
cudaError_t cudaMemGetInfo(size_t *f, size_t *t);
const char *cudaGetErrorName(cudaError_t e);
const char *cudaGetErrorString(cudaError_t e);
template <typename F> cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) { return cudaSuccess; }
/* Two blocks per SM of any kernel: with the 4 emulated SMs a persistent grid
 * is 8 blocks, so grid-stride tile loops run several tiles per block. */
template <typename F> cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *n, F, int, size_t) {
    *n = 2;
    return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t *e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g, unsigned long long flags);
cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t s);
cudaError_t cudaGraphDestroy(cudaGraph_t g);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e);
cudaError_t cudaDeviceSynchronize(void);
/* true while this thread captures: the call is recorded and must not run now */
bool emu_capture_record(const std::function<void()> &op);
/* Events hold the host time of their record: recording first completes every
 * launch before it, so that is when the device reaches the mark. */
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaPeekAtLastError(void);
/* cudaDevAttrClockRate: 1e6 kHz, matching clock64() counting nanoseconds */
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int device);

/* ---- programmatic dependent launch (CUDA's names and layouts, subset) ---- */
typedef enum { cudaLaunchAttributeIgnore = 0, cudaLaunchAttributeProgrammaticStreamSerialization = 6 } cudaLaunchAttributeID;
typedef union { char pad[64]; int programmaticStreamSerializationAllowed; } cudaLaunchAttributeValue;
typedef struct { cudaLaunchAttributeID id; cudaLaunchAttributeValue val; } cudaLaunchAttribute;
typedef struct {
    dim3 gridDim, blockDim;
    size_t dynamicSmemBytes;
    cudaStream_t stream;
    cudaLaunchAttribute *attrs;
    unsigned int numAttrs;
} cudaLaunchConfig_t;
/* As CUDA's template: the arguments are converted to the kernel's parameter
 * types (implicit conversions only) and taken by value at the call. A
 * launch is PDL when an attribute says programmatic stream serialization
 * with a non-zero value; attributes the emulator does not know are refused. */
template <typename... ExpTypes, typename... ActTypes>
cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t *cfg, void (*kernel)(ExpTypes...), ActTypes &&...args) {
    if (!cfg || (cfg->numAttrs && !cfg->attrs)) return cudaErrorInvalidValue;
    bool pdl = false;
    for (unsigned i = 0; i < cfg->numAttrs; i++) {
        const cudaLaunchAttribute &a = cfg->attrs[i];
        if (a.id == cudaLaunchAttributeProgrammaticStreamSerialization) pdl = a.val.programmaticStreamSerializationAllowed != 0;
        else if (a.id != cudaLaunchAttributeIgnore) return cudaErrorInvalidValue;
    }
    [&](ExpTypes... coerced) {
        emu_launch_kx(pdl, cfg->gridDim, cfg->blockDim, cfg->dynamicSmemBytes, kernel, coerced...);
    }(std::forward<ActTypes>(args)...);
    return cudaSuccess;
}
/* Device side. Waits until the launch's predecessor has completed (at once
 * in a launch without PDL). */
void cudaGridDependencySynchronize(void);
/* Lets the next PDL launch start early; promises nothing about memory. The
 * emulator already runs a PDL launch's part before its
 * cudaGridDependencySynchronize() ahead of the whole predecessor (the
 * earliest the device could), so this has nothing left to do. */
static inline void cudaTriggerProgrammaticLaunchCompletion(void) {}
