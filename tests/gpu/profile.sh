#!/usr/bin/env bash
# Profiles the default NF4 GEMV on a GPU machine with Nsight Compute: builds
# bench_cuda (configure as tests/gpu/run.sh does), then lets ncu record a
# launch of a kernel in the GEMV-only benchmark (4096x4096, T=1 come first)
# with the full section set (speed of light, occupancy, scheduler, warp
# stall reasons, instruction mix, source counters: the SASS lines where warps
# stall). Report in $OUT/ncu.txt; the SASS of the kernel's T=1 instantiation
# in $OUT/sass.txt (the whole object's SASS is too large to come back). About
# two minutes on an H100.
#   PS_PROFILE_KERNEL: kernel name regex (default nf4_gemv_v4_kernel: the
#                      "auto" default at T = 1 is v4s1r2u4)
#   PS_PROFILE_SASS:   mangled-name fragment of the instantiation to dump
#                      (default nf4_gemv_v4_kernelILi1ELi4ELi2ELi4E: B=1 W=4 R=2 U=4)
#   PS_PROFILE_BENCH=decode: profile inside the model benchmark (4 layers)
#                      instead of the GEMV-only one, e.g. with
#                      PS_PROFILE_KERNEL=attn_decode_split_kernel (batch-1 decode
#                      attention) and PS_PROFILE_SASS=attn_decode_split_kernel
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/run.sh" --functions || exit 1
out=${OUT:-$root/build-gpu/logs}
mkdir -p "$out"
log=$out/profile_build.log
gpu_configure "$log" || { tail -30 "$log"; exit 1; }
cmake --build build-gpu -j"$(nproc)" --target bench_cuda >>"$log" 2>&1 || { tail -30 "$log"; exit 1; }
b=$(find build-gpu -type f -name bench_cuda -perm -u+x | head -1)
k=${PS_PROFILE_KERNEL:-nf4_gemv_v4_kernel}
case $k in attn*) src=attention ;; *) src=$(echo "$k" | sed 's/_kernel$//') ;; esac
o=$(find build-gpu -name "$src.cu.o" | head -1)
[ -n "$o" ] && cuobjdump -sass "$o" 2>/dev/null |
  awk -v f="${PS_PROFILE_SASS:-nf4_gemv_v4_kernelILi1ELi4ELi2ELi4E}" '/Function :/ {on = index($0, f) > 0} on' >"$out/sass.txt"
echo "sass: $(wc -l <"$out/sass.txt" 2>/dev/null || echo 0) lines in sass.txt"
if [ "${PS_PROFILE_BENCH:-gemv}" = decode ]; then export PS_BENCH_LAYERS=4; else export PS_BENCH_GEMV_ONLY=1; fi
timeout 300 ncu --kernel-name "regex:$k" \
  --launch-skip 3 --launch-count 1 --set full "$b" >"$out/ncu.txt" 2>&1
echo "ncu exit $?"
grep -v "^==PROF==" "$out/ncu.txt" | sed -n "/$k/,\$p" | grep -vE "^\s*$|----" | head -200
