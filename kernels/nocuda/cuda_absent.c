/* Built instead of kernels/cuda when CUDA is off: the backend reports itself absent. */
#include "ops.h"

ps_status ps_backend_cuda_create(int device_index, ps_backend **out, ps_err *err) {
    (void)device_index;
    *out = NULL;
    return ps_errf(err, PS_ENOTSUP, "this build has no CUDA backend (built with PS_CUDA=OFF or without nvcc)");
}
