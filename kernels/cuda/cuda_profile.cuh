/* Internal header: the per-op profiler's hooks into the CUDA backend (the
 * profiler is kernels/cuda/cuda_profile.cu; its API and what it measures are
 * in cuda_ext.h). Not for use outside kernels/cuda. */
#ifndef PS_CUDA_PROFILE_CUH
#define PS_CUDA_PROFILE_CUH

#include "cuda_common.cuh"

/* At create, after the table is filled: PS_CUDA_PROFILE=1 turns profiling on
 * (pad from PS_CUDA_PROFILE_PAD_US); the totals are then logged at destroy. */
ps_status cuda_prof_from_env(cuda_impl *p, ps_err *err);
/* At destroy: logs the totals when the environment turned profiling on, then
 * frees the profiler's events and state. Accepts p->prof == NULL. */
void cuda_prof_free(cuda_impl *p);

/* True while the profiler wraps the op table (step graphs stay off then: a
 * replay would hide the ops, and event reads cannot happen inside a capture). */
bool cuda_prof_on(const cuda_impl *p);

/* The extension API's check that `be` is a CUDA backend (cuda_backend.cu):
 * NULL with PS_EINVAL in err otherwise. */
cuda_impl *cuda_ext_impl(ps_backend *be, ps_err *err);

#endif
