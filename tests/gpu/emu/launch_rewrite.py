# Rewrites CUDA launches  kern<<<grid, block[, smem[, stream]]>>>(args)  into
# emu_launch_k(grid, block, smem, kern, args) (the arguments are evaluated at
# the launch, as CUDA does, which matters when a graph replays it) and dynamic shared
# memory into the emulator's buffer, so a .cu file compiles as C++ against
# tests/gpu/emu/include. Usage: launch_rewrite.py file.cu > file.cpp
import re, sys
src = open(sys.argv[1]).read()
def split_top(s):
    parts, depth, cur = [], 0, ''
    for ch in s:
        if ch in '(<[{': depth += 1
        if ch in ')>]}': depth -= 1
        if ch == ',' and depth == 0: parts.append(cur); cur = ''
        else: cur += ch
    parts.append(cur)
    return [p.strip() for p in parts]
out, i = '', 0
pat = re.compile(r'([A-Za-z_]\w*(?:<[^<>;]*>)?)\s*<<<')
while True:
    m = pat.search(src, i)
    if not m: out += src[i:]; break
    out += src[i:m.start()]
    j = src.index('>>>', m.end())
    cfg = split_top(src[m.end():j])
    k = j + 3
    assert src[k] == '('
    depth, e = 0, k
    while True:
        if src[e] == '(': depth += 1
        elif src[e] == ')':
            depth -= 1
            if depth == 0: break
        e += 1
    args = src[k+1:e]
    smem = cfg[2] if len(cfg) > 2 else '0'
    out += 'emu_launch_k(emu_dim(%s), emu_dim(%s), (size_t)(%s), %s%s)' % (cfg[0], cfg[1], smem, m.group(1), (', ' + args) if args.strip() else '')
    i = e + 1
out = out.replace('extern __shared__ float smem[];', 'float *smem = (float *)emu_dyn_smem;')
sys.stdout.write(out)
