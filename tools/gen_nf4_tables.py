#!/usr/bin/env python3
"""Prints the two NF4 lookup tables as C brace lists for kernels/math/nf4.h.

Reads `nf4.code` (F32[16]) and `dq.code` (F32[256], bitsandbytes'
create_dynamic_map(signed=True)) from a fixture file such as
shared/fixtures/llama-tiny/ref/nf4.safetensors, using only the standard
library. Values are printed with 9 significant digits, which round-trips
every float32 exactly; tests/unit/test_nf4_quant.c re-checks the compiled
tables bit for bit against the same fixture.

usage: python3 tools/gen_nf4_tables.py shared/fixtures/llama-tiny/ref/nf4.safetensors
"""
import json
import struct
import sys


def read_f32(path, name):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        meta = header[name]
        if meta["dtype"] != "F32":
            raise SystemExit(f"{name}: dtype {meta['dtype']}, expected F32")
        b, e = meta["data_offsets"]
        f.seek(8 + n + b)
        raw = f.read(e - b)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def c_float(v):
    s = f"{v:.9g}"
    if "." not in s and "e" not in s:
        s += ".0"
    return s + "f"


def brace_list(macro, values, per_line):
    lines = []
    for i in range(0, len(values), per_line):
        lines.append("    " + ", ".join(c_float(v) for v in values[i:i + per_line]))
    return f"#define {macro} {{ \\\n" + ", \\\n".join(lines) + " \\\n}"


def main():
    path = sys.argv[1]
    nf4 = read_f32(path, "nf4.code")
    dq = read_f32(path, "dq.code")
    assert len(nf4) == 16 and len(dq) == 256
    print(brace_list("PS_NF4_CODE_VALUES", nf4, 4))
    print()
    print(brace_list("PS_DQ_CODE_VALUES", dq, 5))


if __name__ == "__main__":
    main()
