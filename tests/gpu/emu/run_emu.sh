#!/usr/bin/env bash
# Runs the CUDA backend without a GPU: kernels/cuda/*.cu and *.cuh rewritten
# by launch_rewrite.py and compiled as C++ against the emulator in this folder
# (include/, emu_runtime.cpp; UBSan on for alignment and bounds), linked with
# the real C code of kernels/, engine/ and the tests. First the emulator's own
# PDL self-test (test_emu_pdl.cpp, run emu_pdl). Then runs the gpu parity
# tests, the llama unit tests with PS_TEST_DEVICE=cuda (f32 and automatic
# paths, tile attention, split attention, step graphs), the multi-adapter
# LoRA op and the adapter parity test on it, test_cuda_linear and
# test_cuda_attention again with blocks in a shuffled order (the last-block
# reductions of the split-K GEMV and of split attention must not depend on
# it), the op, linear and attention tests and llama parity / batch (with step
# graphs) again with programmatic dependent launch (PS_CUDA_PDL=1; runs named
# *-pdl) and a smoke run of bench_cuda; test_cuda_profile with EMU_LAUNCH=sync
# (each launch completes before its call returns, see emu_runtime.cpp);
# test_llama_batch and _graphs with the v6 GEMV (and its fused norm).
# Catches indexing, barrier, shuffle, alignment and host-logic mistakes, and
# kernels launched with programmatic dependent launch that touch their
# predecessor's data before cudaGridDependencySynchronize(), before a GPU
# run; says nothing about speed or fast-math precision. About 35 minutes on
# 2 cores. Output: build-emu/.
# Arguments (optional): run only the runs whose names start with one of them,
# e.g. `run_emu.sh test_cuda_linear` (both its plain and shuffled runs).
set -uo pipefail
cd "$(dirname "$0")/../../.."
R=$(pwd)
E=$R/tests/gpu/emu
B=$R/build-emu
mkdir -p "$B/gen" "$B/obj" "$B/bin"
rm -f "$B"/obj/*.o
SAN="-fsanitize=alignment,bounds,undefined -fno-sanitize-recover=all"
export PEFTSERVE_FIXTURES=${PEFTSERVE_FIXTURES:-$(cd .. && pwd)/shared/fixtures}
jobs=$(nproc)
# headers first: a .cu's #include "x.cuh" finds the rewritten copy beside it in gen/
rm -f "$B"/gen/*.cuh
for f in kernels/cuda/*.cuh; do python3 "$E/launch_rewrite.py" "$f" > "$B/gen/$(basename "$f")" || { echo "emu: rewrite of $f failed"; exit 1; }; done
{
  for f in kernels/cuda/*.cu; do
    b=$(basename "$f" .cu)
    echo "python3 $E/launch_rewrite.py $f > $B/gen/$b.cpp && g++ -std=c++17 -O2 -g -w $SAN -I$E/include -I$R/kernels -I$R/kernels/cuda -include emu_prelude.h -c $B/gen/$b.cpp -o $B/obj/cu_$b.o"
  done
  echo "g++ -std=c++17 -O2 -g -w -I$E/include -c $E/emu_runtime.cpp -o $B/obj/emu_runtime.o"
  echo "python3 $E/launch_rewrite.py $E/test_emu_pdl.cpp > $B/gen/test_emu_pdl.cpp && g++ -std=c++17 -O2 -g -w $SAN -I$E/include -include emu_prelude.h -c $B/gen/test_emu_pdl.cpp -o $B/obj/emu_test_emu_pdl.o"
  for f in kernels/*.c kernels/cpu/*.c kernels/base/*.c kernels/math/*.c engine/*.c engine/models/*.c \
           engine/image/*.c adapters/*.c \
           tests/testutil.c tests/gpu/gpu_util.c tests/gpu/test_*.c tests/unit/test_llama*.c \
           tests/unit/test_lora_bgmv.c tests/unit/test_adapter_parity.c tests/bench/bench_cuda.c; do
    [ -f "$f" ] || continue
    echo "gcc -std=gnu11 -O2 -g -march=native -DPS_HAVE_CUDA=1 -I$R/kernels -I$R/engine -I$R/engine/include -I$R/adapters -I$R/tests -I$R/tests/gpu -c $f -o $B/obj/$(echo "$f" | tr / _ | sed 's/\.c$//').o"
  done
} | xargs -P "$jobs" -I{} sh -c "{}" || { echo "emu: compile failed"; exit 1; }
lib=$(ls "$B"/obj/*.o | grep -vE "_test_|bench_cuda")
link() { g++ $SAN -o "$B/bin/$1" "$2" $lib -ljansson -ljpeg -lpng -lm -lpthread; }
for t in "$B"/obj/tests_gpu_test_*.o "$B"/obj/tests_unit_test_llama*.o "$B"/obj/tests_unit_test_lora_bgmv.o \
         "$B"/obj/tests_unit_test_adapter_parity.o "$B"/obj/tests_bench_bench_cuda.o; do
  n=$(basename "$t" .o | sed 's/^tests_gpu_//; s/^tests_unit_//; s/^tests_bench_//')
  link "$n" "$t" || { echo "emu: link of $n failed"; exit 1; }
done
g++ $SAN -o "$B/bin/emu_pdl" "$B/obj/emu_test_emu_pdl.o" "$B/obj/emu_runtime.o" || { echo "emu: link of emu_pdl failed"; exit 1; }
status=0
only=("$@") # optional: run only the runs whose name starts with one of these
run() { # name, command...
  local name=$1; shift
  if [ ${#only[@]} -gt 0 ]; then
    local o hit=0
    for o in "${only[@]}"; do [[ $name == "$o"* ]] && hit=1; done
    [ $hit = 1 ] || return 0
  fi
  "$@" >"$B/$name.log" 2>&1
  case $? in
    0) echo "ok    $name" ;;
    77) echo "skip  $name: $(grep -m1 SKIP "$B/$name.log")" ;;
    *) echo "FAIL  $name (see build-emu/$name.log)"; status=1 ;;
  esac
}
run emu_pdl "$B/bin/emu_pdl"
for t in test_cuda_ops test_cuda_linear test_cuda_attention; do run "$t" "$B/bin/$t"; done
# its emulator checks time each call's kernels inside the call: launches complete at once
run test_cuda_profile env EMU_LAUNCH=sync "$B/bin/test_cuda_profile"
run test_cuda_linear-shuffled env EMU_BLOCK_ORDER=shuffle "$B/bin/test_cuda_linear"
run test_cuda_attention-shuffled env EMU_BLOCK_ORDER=shuffle "$B/bin/test_cuda_attention"
for t in "$B"/bin/test_llama*; do
  n=$(basename "$t")
  run "$n-cuda-f32" env PS_TEST_DEVICE=cuda PS_CUDA_LINEAR=gemv "$t"
done
# the multi-adapter LoRA kernels (lora.cu) alone and in the model
run test_lora_bgmv-cuda env PS_TEST_DEVICE=cuda "$B/bin/test_lora_bgmv"
run test_adapter_parity-cuda env PS_TEST_DEVICE=cuda PS_CUDA_LINEAR=gemv "$B/bin/test_adapter_parity"
# every step's LoRA on the SGMV tiles (auto takes them only from 64 tokens)
run test_lora_bgmv-cuda-sgmv env PS_TEST_DEVICE=cuda PS_CUDA_LORA=sgmv "$B/bin/test_lora_bgmv"
run test_adapter_parity-cuda-sgmv env PS_TEST_DEVICE=cuda PS_CUDA_LINEAR=gemv PS_CUDA_LORA=sgmv \
  "$B/bin/test_adapter_parity"
run test_llama_parity-cuda-tile env PS_TEST_DEVICE=cuda PS_CUDA_LINEAR=gemv PS_CUDA_ATTN=prefill "$B/bin/test_llama_parity"
run test_llama_parity-cuda-split env PS_TEST_DEVICE=cuda PS_CUDA_LINEAR=gemv PS_CUDA_ATTN=split "$B/bin/test_llama_parity"
run test_llama_parity-cuda-v5 env PS_TEST_DEVICE=cuda PS_CUDA_LINEAR=gemv PS_CUDA_GEMV=v5w4r2u4p1 "$B/bin/test_llama_parity"
run test_llama_batch-cuda-graphs env PS_TEST_DEVICE=cuda PS_CUDA_LINEAR=gemv PS_CUDA_GRAPHS=1 "$B/bin/test_llama_batch"
# programmatic dependent launch: the first block of every kernel runs up to its
# grid sync before its predecessor (emu_runtime.cpp), so a read too early fails
run test_cuda_ops-pdl env PS_CUDA_PDL=1 "$B/bin/test_cuda_ops"
run test_cuda_linear-pdl env PS_CUDA_PDL=1 "$B/bin/test_cuda_linear"
run test_cuda_attention-pdl env PS_CUDA_PDL=1 "$B/bin/test_cuda_attention"
run test_lora_bgmv-cuda-pdl env PS_TEST_DEVICE=cuda PS_CUDA_PDL=1 "$B/bin/test_lora_bgmv"
run test_llama_parity-cuda-pdl env PS_TEST_DEVICE=cuda PS_CUDA_LINEAR=gemv PS_CUDA_PDL=1 "$B/bin/test_llama_parity"
run test_llama_batch-cuda-graphs-pdl env PS_TEST_DEVICE=cuda PS_CUDA_LINEAR=gemv PS_CUDA_GRAPHS=1 PS_CUDA_PDL=1 \
  "$B/bin/test_llama_batch"
# v6 everywhere (its fused add + RMSNorm at decode): batch invariance and graph replay, exact
run test_llama_batch-cuda-v6 env PS_TEST_DEVICE=cuda PS_CUDA_LINEAR=gemv PS_CUDA_GEMV=v6w8r1u4 "$B/bin/test_llama_batch"
run test_llama_graphs-cuda-v6p1-pdl env PS_TEST_DEVICE=cuda PS_CUDA_LINEAR=gemv PS_CUDA_GEMV=v6w8r1u4p1 PS_CUDA_PDL=1 \
  "$B/bin/test_llama_graphs"
run bench_cuda-smoke env PS_BENCH_SMOKE=1 PS_BENCH_LAYERS=2 "$B/bin/bench_cuda"
exit $status
