#!/usr/bin/env bash
# Run on the development machine (Debian, apt reachable) BEFORE sending the
# tree to a GPU machine whose image may lack our build dependencies and has
# no shared/ fixtures beside the checkout. Fills .gpu-carry/ (ignored through
# .git/info/exclude; pass it in the device call's `carry`):
#   .gpu-carry/root/      the unpacked .debs of jansson, civetweb, libjpeg,
#                         libpng, zlib and pkgconf (headers, libs, .pc files)
#   .gpu-carry/fixtures/  llama-tiny, llama-tiny-bnb4 and clip-tiny from $PEFTSERVE_FIXTURES
#                         (default ../shared/fixtures); never committed
# tests/gpu/run.sh uses them only when the system's packages or fixtures are
# missing. About 12 MB.
set -euo pipefail
cd "$(dirname "$0")/../.."
dst=.gpu-carry
fx=${PEFTSERVE_FIXTURES:-$(cd .. && pwd)/shared/fixtures}
exclude="$(git rev-parse --git-common-dir)/info/exclude"
mkdir -p "$(dirname "$exclude")"
grep -qxF "/$dst/" "$exclude" 2>/dev/null || echo "/$dst/" >>"$exclude"
rm -rf "$dst"
mkdir -p "$dst/debs" "$dst/root" "$dst/fixtures"
pkgs=(libjansson-dev libjansson4 libcivetweb-dev libcivetweb1 libjpeg62-turbo-dev libjpeg62-turbo
      libjpeg-dev libpng-dev libpng16-16 zlib1g-dev zlib1g pkgconf pkgconf-bin libpkgconf3)
(cd "$dst/debs" && apt-get download "${pkgs[@]}")
for f in "$dst"/debs/*.deb; do dpkg -x "$f" "$dst/root"; done
rm -rf "$dst/debs"
for d in llama-tiny llama-tiny-bnb4 clip-tiny; do
  if [ -d "$fx/$d" ]; then cp -r "$fx/$d" "$dst/fixtures/"; else echo "warning: $fx/$d missing"; fi
done
du -sh "$dst"
echo "now run on the GPU machine: tests/gpu/run.sh   (carry: [\"$dst\"])"
