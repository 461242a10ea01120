#!/usr/bin/env bash
# Profiles the default NF4 GEMV on a GPU machine with Nsight Compute: builds
# bench_cuda (configure as tests/gpu/run.sh does), then lets ncu record the
# first launches of a kernel in the GEMV-only benchmark (4096x4096, T=1 come
# first). Report in $OUT/ncu.txt (speed of light, occupancy, warp stall
# reasons, memory). About a minute.   PS_PROFILE_KERNEL: kernel name regex.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/run.sh" --functions || exit 1
out=${OUT:-$root/build-gpu/logs}
mkdir -p "$out"
log=$out/profile_build.log
gpu_configure "$log" || { tail -30 "$log"; exit 1; }
cmake --build build-gpu -j"$(nproc)" --target bench_cuda >>"$log" 2>&1 || { tail -30 "$log"; exit 1; }
b=$(find build-gpu -type f -name bench_cuda -perm -u+x | head -1)
PS_BENCH_GEMV_ONLY=1 timeout 200 ncu --kernel-name "regex:${PS_PROFILE_KERNEL:-nf4_gemv_v2_kernel}" \
  --launch-count 2 --section SpeedOfLight --section Occupancy --section LaunchStats \
  --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis \
  --section ComputeWorkloadAnalysis "$b" >"$out/ncu.txt" 2>&1
echo "ncu exit $?"
grep -v "^==PROF==" "$out/ncu.txt" | sed -n '/nf4_gemv/,$p' | head -150
