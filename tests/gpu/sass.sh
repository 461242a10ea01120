#!/usr/bin/env bash
# The SASS (H100 machine code) of one kernels/cuda source, on a machine
# without a GPU: to count what a kernel's inner loop issues per weight element
# before spending a scarce GPU run on it (ncu on the H100 found the NF4 GEMV
# bound by instruction issue, not by memory).
#
# nvcc -cubin for sm_90 with the backend's flags, then nvdisasm. The CUDA 13
# toolkit here ships no disassembler; Debian's nvidia-cuda-toolkit (11.8, in
# the non-free component) has one that decodes sm_90 but refuses the ELF
# header revision CUDA 13 writes, so this script rewrites the header's ABI
# version and flags to the older form in a copy (the code is untouched).
#
# Usage: tests/gpu/sass.sh FILE.cu [KERNEL]
#   stdout: the SASS of every kernel in FILE.cu (or of those whose mangled
#           name contains KERNEL, e.g. nf4_gemv_v4_kernelILi1ELi4ELi2ELi4E)
#   stderr: with KERNEL, an opcode histogram of those kernels
# nvdisasm: $PS_NVDISASM, else on PATH, else unpacked once (no install) from
# the Debian package into ~/.cache/peftserve-nvdisasm; that needs apt sources
# with "contrib non-free" (e.g. a /etc/apt/sources.list.d/*.sources entry for
# bookworm with Components: contrib non-free).
set -euo pipefail
cd "$(dirname "$0")/../.."
src=${1:?usage: tests/gpu/sass.sh FILE.cu [KERNEL]}
want=${2:-}

dis=${PS_NVDISASM:-$(command -v nvdisasm || true)}
if [ -z "$dis" ]; then
  cache=$HOME/.cache/peftserve-nvdisasm
  dis=$cache/usr/bin/nvdisasm
  if [ ! -x "$dis" ]; then
    mkdir -p "$cache"
    (cd "$cache" && apt-get download nvidia-cuda-toolkit >/dev/null) ||
      { echo "sass.sh: no nvdisasm; add contrib non-free to the apt sources (see the header)" >&2; exit 1; }
    dpkg -x "$cache"/nvidia-cuda-toolkit_*.deb "$cache"
    rm -f "$cache"/*.deb
  fi
fi

nvcc=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$nvcc" -arch=sm_90 -O3 --use_fast_math -cubin -DPS_HAVE_CUDA=1 -Ikernels -Ikernels/cuda \
  -o "$tmp/k.cubin" "$src"
python3 - "$tmp/k.cubin" <<'EOF'
import struct, sys
d = bytearray(open(sys.argv[1], 'rb').read())
if d[7] != 51:                                   # e_ident[EI_ABIVERSION] of CUDA <= 12
    d[7], d[8] = 51, 7
    sm = (struct.unpack_from('<I', d, 0x30)[0] >> 8) & 0xff   # CUDA 13 keeps the SM in bits 8..15
    struct.pack_into('<I', d, 0x30, sm | 0x0500 | (sm << 16))  # the older EF_CUDA_SM | 64-bit | virtual SM
open(sys.argv[1], 'wb').write(d)
EOF
"$dis" -c "$tmp/k.cubin" >"$tmp/k.sass"
# one kernel's section runs from its ".text.<name>" header to the next header
awk -v want="$want" '/^\/\/-+ \.text\./ {on = want == "" || index($0, want) > 0} on' "$tmp/k.sass" |
  tee "$tmp/sel.sass"
if [ -n "$want" ]; then
  echo "== opcodes of the kernels matching $want (count, opcode without modifiers)" >&2
  sed -nE 's#^\s*/\*[0-9a-f]+\*/\s*(@!?U?P[0-9T]+\s+)?([A-Z][A-Z0-9_]*).*#\2#p' "$tmp/sel.sass" |
    sort | uniq -c | sort -rn >&2
fi
