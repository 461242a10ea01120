#!/usr/bin/env bash
# NF4 GEMV configuration sweep on a GPU machine, in under 2 minutes:
#   1. configure build-gpu/ exactly as tests/gpu/run.sh does (its functions,
#      incl. the .gpu-carry/ fallback) and build only ps_kernels,
#      test_cuda_linear and bench_cuda;
#   2. test_cuda_linear: every op_linear case vs the CPU oracle, the NF4 GEMV
#      in every configuration (ps_cuda_gemv_name);
#   3. PS_BENCH_GEMV_ONLY=1 bench_cuda: every configuration at T = 1, 2, 4, 8
#      on the LLaMA-7B layer shapes, one table and the best per T (no model).
# Logs in $OUT (or build-gpu/logs): sweep_build.log, sweep_test.log,
# sweep_bench.log. Exit status 0 when all three steps pass.
source "$(dirname "${BASH_SOURCE[0]}")/run.sh" --functions || exit 1
out=${OUT:-$root/build-gpu/logs}
mkdir -p "$out"
jobs=$(nproc 2>/dev/null || echo 8)
t0=$(date +%s)
log=$out/sweep_build.log
{ nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader; nvcc --version | tail -1; } >"$log" 2>&1
gpu_find_fixtures
if ! gpu_configure "$log"; then
  tail -30 "$log"
  echo "sweep: configure FAILED (see $log)"
  exit 1
fi
echo "== build" >>"$log"
if ! cmake --build build-gpu -j"$jobs" --target ps_kernels test_cuda_linear bench_cuda >>"$log" 2>&1; then
  grep -E "error|Error" "$log" | head -20
  echo "sweep: build FAILED (see $log)"
  exit 1
fi
echo "sweep: built in $(( $(date +%s) - t0 ))s"
status=0
t=$(find build-gpu -type f -name test_cuda_linear -perm -u+x | head -1)
b=$(find build-gpu -type f -name bench_cuda -perm -u+x | head -1)
timeout 120 "$t" >"$out/sweep_test.log" 2>&1
rc=$?
echo "sweep: test_cuda_linear exit $rc, $(grep -c ' ok$' "$out/sweep_test.log") cases ok," \
     "$(grep -c 'FAIL' "$out/sweep_test.log") FAIL lines ($(( $(date +%s) - t0 ))s)"
grep -m20 FAIL "$out/sweep_test.log"
[ $rc -eq 0 ] || status=1
PS_BENCH_GEMV_ONLY=1 timeout 120 "$b" >"$out/sweep_bench.log" 2>&1
rc=$?
sed -n '/^device/p; /==== NF4 GEMV sweep/,$p' "$out/sweep_bench.log"
echo "sweep: bench_cuda exit $rc ($(( $(date +%s) - t0 ))s; logs in $out)"
[ $rc -eq 0 ] || status=1
exit $status
