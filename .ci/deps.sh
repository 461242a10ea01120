#!/usr/bin/env bash
# Installs what peftserve needs to build and test on Debian (root or sudo).
# Idempotent: only installs packages that are missing. Used by .ci/serve and .ci/test.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libcivetweb-dev libjansson-dev libjpeg62-turbo-dev libpng-dev libssl-dev)
if [ "${1:-}" = "--test" ]; then pkgs+=(nodejs npm chromium); fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node/npm may come from outside Debian's packages: accept any working binary
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
read -r -a missing <<<"${missing[*]}"
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
