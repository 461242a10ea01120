#!/usr/bin/env python3
"""Loops of a kernel's SASS (tests/gpu/sass.sh's output on stdin): one line
per backward branch, innermost first: its instructions, how many are HMMA,
LDS, LDG and SHFL, and instructions per HMMA. The NF4 GEMV v6's main loop is
the one with 8 HMMA per 64-block group (two groups per trip): its
instructions per 64-block are the figure nf4_gemv_v6.cu's header quotes."""
import re
import sys

lines = sys.stdin.read().split('\n')
labels = {}
for i, line in enumerate(lines):
    m = re.match(r'^(\.L_x_\d+):', line.strip())
    if m:
        labels[m.group(1)] = i
loops = []
for i, line in enumerate(lines):
    m = re.search(r'BRA `\((\.L_x_\d+)\)', line)
    if m and m.group(1) in labels and labels[m.group(1)] < i:
        body = [x for x in lines[labels[m.group(1)]:i + 1] if re.match(r'\s*/\*[0-9a-f]+\*/', x)]
        count = {op: sum(re.search(r'\b' + op + r'\b', x) is not None for x in body)
                 for op in ('HMMA', 'LDS', 'LDG', 'SHFL')}
        loops.append((len(body), count))
for n, c in sorted(loops, key=lambda l: l[0]):
    per = ' (%.1f per HMMA)' % (n / c['HMMA']) if c['HMMA'] else ''
    print('%5d instructions: %s%s' % (n, ' '.join('%s %d' % kv for kv in c.items()), per))
