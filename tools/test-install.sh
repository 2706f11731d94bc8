#!/usr/bin/env bash
# Checks cudl the way a user gets it: `cmake --install` of a build into a fresh prefix, then
# examples/consumer built against it with find_package(cudl) and run; then, as root, the Debian
# package made by cpack, installed with dpkg -i, `cudl info` and the consumer from it, removed again.
#   tools/test-install.sh [BUILD_DIR]    (default build-cpu; configured and built if needed)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-cpu}
[ -f "$build/CMakeCache.txt" ] || bash tools/build.sh "$build" -DCUDL_CUDA=OFF
cmake --build "$build" --target cudl cudl_cli -j "$(nproc)" >/dev/null
work=$(mktemp -d /tmp/cudl-install.XXXXXX)
trap 'rm -rf "$work"' EXIT
say() { echo "test-install: $*"; }

say "cmake --install $build --prefix $work/prefix"
cmake --install "$build" --prefix "$work/prefix" >/dev/null
consumer() {  # consumer PREFIX BUILD: configure, build and run examples/consumer against PREFIX
  cmake -S examples/consumer -B "$2" -G Ninja -DCMAKE_PREFIX_PATH="$1" >/dev/null
  cmake --build "$2" >/dev/null
  "$2/consumer"
}
say "examples/consumer against the prefix"
consumer "$work/prefix" "$work/consumer-prefix"
"$work/prefix/bin/cudl" info | head -2

if [ "$(id -u)" != 0 ]; then
  say "not root: the Debian package check (dpkg -i) is skipped"
  exit 0
fi
if dpkg -s cudl >/dev/null 2>&1; then
  say "a cudl package is installed already; the Debian package check is skipped (dpkg -r cudl first)"
  exit 0
fi
say "cpack -G DEB"
(cd "$build" && cpack -G DEB -B "$work/deb" >/dev/null)
deb=$(ls "$work"/deb/cudl_*.deb)
dpkg-deb -I "$deb" | sed -n 's/^ Depends:/test-install: Depends:/p'
trap 'dpkg -r cudl >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
dpkg -i "$deb" >/dev/null
say "cudl info from the package: $(command -v cudl)"
cudl info | head -2
say "examples/consumer against the package (/usr)"
consumer /usr "$work/consumer-deb"
say "ok"
