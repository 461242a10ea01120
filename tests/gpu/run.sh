#!/usr/bin/env bash
# The one script to run on a GPU machine (see tests/gpu/README.md):
#   1. configure + build with CUDA (build-gpu/, -j$(nproc));
#   2. the CUDA kernel parity tests (ctest -L gpu: every op vs the CPU oracle);
#   3. the unit tests (core parity: llama-tiny fixtures) on the CUDA backend,
#      PS_TEST_DEVICE=cuda, in four modes: f32 linear everywhere
#      (PS_CUDA_LINEAR=gemv, the CPU tolerances apply), the same with
#      programmatic dependent launch (PS_CUDA_PDL=1; the gpu kernel tests of
#      step 2 run with it too), the same with the
#      query-tile attention kernel forced and step graphs off (PS_CUDA_GRAPHS=0),
#      and the default automatic paths
#      (bf16 cuBLAS above 16 tokens: a failure against an f32 tolerance there
#      is reported with its measured error), then the same with the bf16
#      tensor-core GEMV v6 and PDL (informational likewise);
#   4. tests/bench/bench_cuda (bandwidth, GEMV, 7B-shaped model);
#   then prints a summary table. Logs go to $OUT (or build-gpu/logs).
# Dependencies the device image may lack (jansson, civetweb, libjpeg, libpng)
# and the fixtures come from .gpu-carry/ when present (tests/gpu/prepare.sh).
# Exit status: 0 when the build, the gpu tests and the f32-mode unit tests pass.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$(pwd)

# ---- functions (tests/gpu/sweep.sh sources them: `source run.sh --functions`) ----

# Sets PEFTSERVE_FIXTURES when unset and a fixtures folder is found.
gpu_find_fixtures() {
  if [ -z "${PEFTSERVE_FIXTURES:-}" ]; then
    local d
    for d in "$root/shared/fixtures" "$root/../shared/fixtures" "$root/.gpu-carry/fixtures"; do
      if [ -d "$d/llama-tiny" ]; then export PEFTSERVE_FIXTURES="$d"; break; fi
    done
  fi
}

# gpu_configure LOG: configures build-gpu/ with CUDA (system packages first,
# then the carried ones from .gpu-carry/, exporting their library paths);
# output appended to LOG. Sets gen and keep (the generator's keep-going
# flag) for the build. Fails when the CUDA backend is not ON.
gpu_configure() {
  local log=$1
  export PATH="/usr/local/cuda/bin:$PATH"
  if command -v make >/dev/null; then gen="Unix Makefiles"; keep=(-k); else gen=Ninja; keep=(-k 0); fi
  local cfg=(-S . -B build-gpu -DPS_CUDA=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo -G "$gen")
  echo "== configure" >>"$log"
  if ! cmake "${cfg[@]}" >>"$log" 2>&1; then
    local carry="$root/.gpu-carry/root"
    if [ -d "$carry" ]; then
      echo "configure with system packages failed; using $carry"
      local lib="$carry/usr/lib/x86_64-linux-gnu"
      export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      export PKG_CONFIG_PATH="$lib/pkgconfig:$carry/usr/share/pkgconfig"
      export PKG_CONFIG_SYSROOT_DIR="$carry"
      # the carried headers must win over any the image has (its jpeglib.h is
      # libjpeg 8: with the carried libjpeg 62 every decode fails the version check)
      local extra=(-DCMAKE_PREFIX_PATH="$carry/usr" -DCIVETWEB_LIB="$lib/libcivetweb.so"
             -DCIVETWEB_INCLUDE="$carry/usr/include" -DJPEG_INCLUDE_DIR="$carry/usr/include"
             -DCMAKE_C_FLAGS="-I$carry/usr/include/x86_64-linux-gnu -I$carry/usr/include")
      command -v pkg-config >/dev/null || extra+=(-DPKG_CONFIG_EXECUTABLE="$carry/usr/bin/pkgconf")
      rm -rf build-gpu/CMakeCache.txt
      cmake "${cfg[@]}" "${extra[@]}" >>"$log" 2>&1 || true
    fi
  fi
  [ -f build-gpu/CMakeCache.txt ] && grep -q "CUDA backend ON" "$log"
}

if [ "${1:-}" = --functions ]; then return 0 2>/dev/null || exit 0; fi

out=${OUT:-$root/build-gpu/logs}
mkdir -p "$out"
jobs=$(nproc 2>/dev/null || echo 8)
t_start=$(date +%s)
summary=()
status=0
note() { summary+=("$(printf '%-34s %s' "$1" "$2")"); }
elapsed() { echo "$(( $(date +%s) - t_start ))s"; }

# at most 8 files come back from a device run: build.log (machine, configure,
# build), gpu_tests.log, unit_{f32,tile,auto}.log, bench.log (bench_cuda, then
# the GEMV sweep with PS_RUN_SWEEP=1 and bench_adapters), ncu.txt
# (PS_RUN_PROFILE=1), summary.txt
log=$out/build.log
echo "== machine" | tee "$log"
{ nvidia-smi 2>&1 | head -20; nvcc --version 2>&1 | tail -2; cmake --version | head -1; nproc; } >>"$log" 2>&1
cat "$log"
gpu=$(nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null | head -1)
note "gpu" "${gpu:-unknown (nvidia-smi failed)}"

# ---- fixtures ----
gpu_find_fixtures
note "fixtures" "${PEFTSERVE_FIXTURES:-NOT FOUND: parity tests will skip}"

# ---- configure (system packages first, then the carried ones) ----
if ! gpu_configure "$log"; then
  tail -30 "$log"
  note "configure" "FAILED (see build.log; run tests/gpu/prepare.sh and carry .gpu-carry)"
  printf '%s\n' "==== summary" "${summary[@]}" | tee "$out/summary.txt"
  exit 1
fi
note "configure" "ok, CUDA backend ON ($(elapsed))"

# ---- build (keep going: run whatever built) ----
echo "== build" >>"$log"
if cmake --build build-gpu -j"$jobs" -- "${keep[@]}" >>"$log" 2>&1; then
  note "build" "ok ($(elapsed))"
else
  grep -E "error|Error" "$log" | head -20
  note "build" "FAILED (see build.log)"
  status=1
fi

# ---- CUDA kernel parity tests ----
rm -f "$out"/gpu_tests.log "$out"/unit_*.log
run_ctest() { # name, log (appended to: several runs may share one), ctest args...
  local name=$1 log=$2 tmp=$out/ctest.tmp; shift 2
  (cd build-gpu && ctest -V --timeout 300 "$@") >"$tmp" 2>&1
  local rc=$?
  { echo "==== $name"; cat "$tmp"; } >>"$out/$log"
  local line; line=$(grep -E "tests passed|tests failed" "$tmp" | tail -1)
  local skipped; skipped=$(grep -cE "^\s+[0-9]+ - .*\(Skipped\)" "$tmp")
  note "$name" "${line:-no result} (skipped: $skipped, $(elapsed))"
  grep -E "^\s+[0-9]+ - .*\((Failed|Skipped|Not Run|Timeout|SEGFAULT|Subprocess aborted)\)" "$tmp" | sed 's/^/    /' | head -20
  rm -f "$tmp"
  return $rc
}
run_ctest "gpu kernel tests (ctest -L gpu)" gpu_tests.log -L gpu || status=1
# programmatic dependent launch (off by default until timed): every kernel
# again with the next one allowed to start while it runs
PS_CUDA_PDL=1 run_ctest "gpu kernel tests, PDL" gpu_tests.log -L gpu || status=1
if grep -q "SKIP: no CUDA backend" "$out/gpu_tests.log"; then
  note "  !" "the CUDA backend did not start: $(grep -m1 'SKIP: no CUDA' "$out/gpu_tests.log")"
  status=1
fi

# ---- unit / parity tests on the CUDA backend ----
export PS_TEST_DEVICE=cuda
PS_CUDA_LINEAR=gemv run_ctest "unit on cuda, f32 linear" unit_f32.log -L unit -j4 || status=1
PS_CUDA_LINEAR=gemv PS_CUDA_PDL=1 run_ctest "unit on cuda, f32 linear, PDL" unit_f32.log -L unit -j4 || status=1
# the SGMV LoRA kernels for every step (auto takes them for prefill chunks of
# 64+ tokens only): the LoRA op and the PEFT parity of every adapter fixture
PS_CUDA_LINEAR=gemv PS_CUDA_LORA=sgmv run_ctest "unit on cuda, f32, SGMV LoRA" unit_f32.log \
  -R "test_(lora_bgmv|adapter_parity)" || status=1
# the alternate paths in one run (8 files at most come back): the query-tile
# attention kernel everywhere, and every step run op by op (step graphs are
# on by default, so the f32 run above replays decode steps from CUDA graphs)
PS_CUDA_LINEAR=gemv PS_CUDA_ATTN=prefill PS_CUDA_GRAPHS=0 run_ctest "unit on cuda, f32, tile attn, no graphs" \
  unit_tile.log -L unit -j4 || status=1
# v6 (bf16 tensor-core GEMV) for every step, with its fused add + RMSNorm at
# decode: its bits do not depend on the batch, on graphs or on the fusion, so
# batch invariance and graph replay must hold exactly (strict, unlike the
# fixtures' f32 tolerances below)
PS_CUDA_LINEAR=gemv PS_CUDA_GEMV=v6w8r1u4 PS_CUDA_PDL=1 run_ctest "unit on cuda, v6 batch + graphs (exact)" \
  unit_tile.log -R "test_llama_(batch|graphs)" || status=1
# bf16 paths against the f32 tolerances: a failure is information, not a
# verdict. run_info: on failure, why, and that run's worst measured logit
# errors (its section of the log), go into the summary.
run_info() { # name, log, why, ctest args...
  local name=$1 log=$2 why=$3 l; shift 3
  run_ctest "$name" "$log" "$@" && return 0
  note "  (info)" "$why; worst measured errors:"
  while read -r l; do note "" "$l"; done < <(
    awk -v h="==== $name" '$0 == h {on = 1; next} /^==== / {on = 0} on' "$out/$log" |
      grep -hoE "[a-z0-9+ ().]*logits[^:]*: rel_l2 [0-9.e+-]+ >" | sed 's/^ *//' | sort -u | head -8)
}
run_info "unit on cuda, auto (bf16 > 16 tok)" unit_auto.log \
  "auto mode uses bf16 cuBLAS for steps over 16 tokens" -L unit -j4
# the bf16 tensor-core GEMV (v6) for every step of up to 16 tokens, with PDL:
# how far its bf16 rounding moves the fixtures' logits
PS_CUDA_GEMV=v6w8r1u4 PS_CUDA_PDL=1 run_info "unit on cuda, v6 GEMV + PDL (bf16)" unit_auto.log \
  "v6 (bf16 GEMV) against the f32 tolerances" -L unit -j4
unset PS_TEST_DEVICE

# ---- benchmark ----
bench=build-gpu/tests/bench/bench_cuda
if [ -x "$bench" ]; then
  timeout "${PS_BENCH_TIMEOUT:-330}" "$bench" 2>&1 | tee "$out/bench.log"
  rc=$?
  if [ $rc -ne 0 ]; then note "bench_cuda" "exit $rc (124 = timed out; partial log in bench.log)"; fi
  # PS_RUN_SWEEP=1: the kernel-level GEMV sweep too (tests/gpu/sweep.sh's table), appended
  if [ "${PS_RUN_SWEEP:-0}" = 1 ]; then
    PS_BENCH_GEMV_ONLY=1 timeout 150 "$bench" >>"$out/bench.log" 2>&1 || note "gemv sweep" "exit $? (see bench.log)"
  fi
else
  note "bench_cuda" "not built"
  status=1
fi
# ---- multi-adapter decode (batch 16: none / one LoRA / 16 distinct / mixed PEFT) ----
# on the issue's 7B shape with 16-bit adapters (as vLLM / S-LoRA keep them), r = 16
# on all 7 projections and on q/v (PEFT's default): each run also prints the
# (c)/(b) a bandwidth-bound step allows (0.754 and ~0.94: 16 distinct
# all-module adapters add a third to the bytes of a step)
adapters_bench=$(find build-gpu -type f -name bench_adapters -perm -u+x | head -1)
if [ -n "$adapters_bench" ]; then
  for mods in all qv; do
    args=(--device cuda --shape 7b --lora-dtype bf16 --modules "$mods" --rounds 3)
    [ "$mods" = all ] || args+=(--prefill 0)
    # appended to bench.log: at most 8 files come back, and ncu.txt may need the slot
    { echo; echo "==== bench_adapters ${args[*]}"; } >>"$out/bench.log"
    timeout 240 "$adapters_bench" "${args[@]}" >"$out/adapters.tmp" 2>&1
    cat "$out/adapters.tmp" >>"$out/bench.log"
    ratio=$(grep -m1 -E '^\| \(c\)/\(b\)' "$out/adapters.tmp" | awk -F'|' '{gsub(/ /, "", $3); print $3}')
    floor=$(grep -m1 -oE "bytes' time: [0-9.]+" "$out/adapters.tmp" | awk '{print $3}')
    note "multi-adapter (c)/(b), $mods" "${ratio:-n/a (see bench.log)} (16 distinct LoRA vs one, 7B, bf16; bytes allow ${floor:-?}; target 0.9)"
    if [ "$mods" = all ]; then
      # prefill 512 with one LoRA: ratio to no adapter, automatic / BGMV / SGMV forced (same bits)
      pf=$(grep -E '^\| \(b\) LoRA' "$out/adapters.tmp" | awk -F'|' '{gsub(/ /, "", $5); printf "%s%s", sep, $5; sep=" / "}')
      note "prefill 512 + LoRA vs none" "${pf:-n/a (see bench.log)} (auto / BGMV / SGMV)"
    fi
  done
  rm -f "$out/adapters.tmp"
else
  note "multi-adapter (c)/(b)" "bench_adapters not built"
fi
# ---- PS_RUN_PROFILE=1: Nsight Compute on the default batch-1 GEMV, reusing this build ----
# (tests/gpu/profile.sh does the same alone; here it saves a second build)
if [ "${PS_RUN_PROFILE:-0}" = 1 ] && command -v ncu >/dev/null && [ -x "$bench" ]; then
  PS_BENCH_GEMV_ONLY=1 timeout 200 ncu --kernel-name "regex:${PS_PROFILE_KERNEL:-nf4_gemv_v4_kernel}" \
    --launch-skip 3 --launch-count 1 --set full "$bench" >"$out/ncu.txt" 2>&1
  note "ncu (${PS_PROFILE_KERNEL:-default GEMV}, T=1)" "exit $? ($(elapsed)); report in ncu.txt"
  # the SASS of the profiled family's default instantiation (v4s1r2u4; v6w8r1u4 for v6)
  fam=${PS_PROFILE_KERNEL:-nf4_gemv_v4_kernel}
  case $fam in *v6*) inst=nf4_gemv_v6_kernelILi8ELi1ELi4E ;; *) inst=nf4_gemv_v4_kernelILi1ELi4ELi2ELi4E ;; esac
  o=$(find build-gpu -name "${inst%%_kernel*}.cu.o" | head -1)
  [ -n "$o" ] && cuobjdump -sass "$o" 2>/dev/null |
    awk -v k="$inst" '/Function :/ {on = index($0, k) > 0} on' >>"$out/ncu.txt"
fi
note "total time" "$(elapsed)"

{
  echo
  echo "==================== tests/gpu/run.sh summary ===================="
  printf '%s\n' "${summary[@]}"
  if [ -f "$out/bench.log" ]; then
    echo "---- bench_cuda ----"
    if grep -q "==== bench_cuda summary" "$out/bench.log"; then
      awk '/==== bench_cuda summary/ {on = 1; next} on && (/^$/ || /^====/ || /^[0-9:.]+ [IWE] /) {exit} on' "$out/bench.log"
    else
      tail -15 "$out/bench.log"
    fi
    if grep -q "==== best configuration per T" "$out/bench.log"; then
      echo "---- NF4 GEMV sweep: best configuration per T (full table in bench.log) ----"
      sed -n '/==== best configuration per T/,/^$/p' "$out/bench.log" | tail -n +2
    fi
    if grep -q "==== decode batch 1: where a step goes" "$out/bench.log"; then
      echo "---- decode batch 1 profile (largest first; full table in bench.log) ----"
      sed -n '/==== decode batch 1: where a step goes/,/^device idle/p' "$out/bench.log" |
        awk 'NR <= 14 || /^all ops|^device idle/'
    fi
  fi
  echo "logs: $out   exit: $status"
} | tee "$out/summary.txt"
exit $status
