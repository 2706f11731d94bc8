#!/usr/bin/env bash
# Downloads (apt-get download, no install, no root needed) the Debian 12 .deb files of cudl's host
# dependencies into DIR (default .deps/, git-ignored), for a GPU machine that has the CUDA
# toolkit, a compiler, CMake and PyTorch but none of these libraries and no network.
# tools/gpu-bench.sh unpacks them there with `dpkg -x` into a prefix (never into /).
#
#   tools/fetch-deps-debs.sh [DIR]      # then carry DIR to the GPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.deps}
# The -dev packages and the runtime libraries they link against (dpkg -x does not follow
# dependencies). Header-only: CLI11, nlohmann-json. Static: GoogleTest (libgtest.a).
packages=(
  libgtest-dev
  libfmt-dev libfmt9
  libcli11-dev
  nlohmann-json3-dev
  libpng-dev libpng16-16
  libjpeg-dev libjpeg62-turbo-dev libjpeg62-turbo
  zlib1g-dev zlib1g
  libopenblas-dev libopenblas-pthread-dev libopenblas0-pthread libopenblas0 libgfortran5 libquadmath0
)
mkdir -p "$dir"
cd "$dir"
if ! apt-get download "${packages[@]}"; then
  echo "fetch-deps-debs: apt-get download failed; run 'apt-get update' (as root) and try again" >&2
  exit 1
fi
echo "fetch-deps-debs: $(find . -maxdepth 1 -name '*.deb' | wc -l) .deb files ($(du -sh . | cut -f1)) in $(pwd)"
