# Rewrites CUDA launches  kern<<<grid, block[, smem[, stream]]>>>(args)  into
# emu_launch_k(grid, block, smem, kern, args) (the arguments are evaluated at
# the launch, as CUDA does, which matters when a graph replays it), dynamic
# shared memory into the emulator's buffer, and each static declaration
#   __shared__ T a[N], b;   into   auto &a = emu_shared<T[N]>([]{}); auto &b = ...;
# (storage per launch context, see emu_prelude.h: a PDL launch parked in a
# block keeps its shared memory while its predecessor runs), so a .cu or
# .cuh file compiles as C++ against tests/gpu/emu/include.
# Usage: launch_rewrite.py file.cu > file.cpp
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
def shared_decl(m):
    decls = split_top(m.group(2))
    first = re.match(r'^(.*\S)\s+([A-Za-z_]\w*)\s*((?:\[[^\]]*\]\s*)*)$', decls[0])
    if not first: raise SystemExit('launch_rewrite: cannot rewrite %r' % m.group(0))
    ty, res = first.group(1), ''
    for i, d in enumerate(decls):
        dm = first if i == 0 else re.match(r'^([A-Za-z_]\w*)\s*((?:\[[^\]]*\]\s*)*)$', d)
        if not dm: raise SystemExit('launch_rewrite: cannot rewrite %r' % m.group(0))
        name, dims = dm.groups()[-2:]
        res += 'auto &%s = emu_shared<%s%s>([]{}); ' % (name, ty, re.sub(r'\]\s+\[', '][', dims.strip()))
    return m.group(1) + res.rstrip()
out = re.sub(r'^([ \t]*)__shared__\s+([^;]*);', shared_decl, out, flags=re.M)
sys.stdout.write(out)
