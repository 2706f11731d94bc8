#!/usr/bin/env bash
# Checks cudl the way a user gets it: `cmake --install` of a build into a fresh prefix, then
# examples/consumer built against it with find_package(cudl) and run; then, as root, the Debian
# package made by cpack, installed with dpkg -i, `cudl info` and the consumer from it, removed again.
#   tools/test-install.sh [BUILD_DIR]    (default build-cpu; configured and built if needed)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-cpu}
say() { echo "test-install: $*"; }
quiet() {  # runs "$@", showing its output only when it fails
  local log; log=$(mktemp)
  if ! "$@" > "$log" 2>&1; then cat "$log" >&2; rm -f "$log"; echo "test-install: failed: $*" >&2; return 1; fi
  rm -f "$log"
}
[ -f "$build/CMakeCache.txt" ] || bash tools/build.sh "$build" -DCUDL_CUDA=OFF
quiet cmake --build "$build" --target cudl cudl_cli -j "$(nproc)"
work=$(mktemp -d /tmp/cudl-install.XXXXXX)
trap 'rm -rf "$work"' EXIT

say "cmake --install $build --prefix $work/prefix"
quiet cmake --install "$build" --prefix "$work/prefix"
consumer() {  # consumer PREFIX BUILD: configure, build and run examples/consumer against PREFIX
  quiet cmake -S examples/consumer -B "$2" -G Ninja -DCMAKE_PREFIX_PATH="$1"
  quiet cmake --build "$2"
  "$2/consumer"
}
# The consumer must set no C++ standard, and the package must carry cudl's: a find_package(cudl)
# user on a compiler whose default is older than C++20 would otherwise fail inside cudl's headers.
# (Comments are skipped: the file says in one why it sets none.)
if grep -v '^[[:space:]]*#' examples/consumer/CMakeLists.txt | grep -Eq 'CMAKE_CXX_STANDARD|cxx_std_|CXX_STANDARD'; then
  echo "test-install: examples/consumer/CMakeLists.txt sets a C++ standard; it must rely on cudl::cudl's" >&2; exit 1
fi
if ! grep -q 'cxx_std_20' "$work"/prefix/lib*/cmake/cudl/cudlTargets.cmake; then
  echo "test-install: the installed cudl::cudl target carries no cxx_std_20 compile feature" >&2; exit 1
fi
say "examples/consumer against the prefix (no standard set by the consumer)"
consumer "$work/prefix" "$work/consumer-prefix"
"$work/prefix/bin/cudl" info > "$work/info.txt"  # whole: a pipe to head may end it with SIGPIPE
head -2 "$work/info.txt"

if [ "$(id -u)" != 0 ]; then
  say "not root: the Debian package check (dpkg -i) is skipped"
  exit 0
fi
if dpkg -s cudl >/dev/null 2>&1; then
  say "a cudl package is installed already; the Debian package check is skipped (dpkg -r cudl first)"
  exit 0
fi
say "cpack -G DEB"
(cd "$build" && quiet cpack -G DEB -B "$work/deb")
deb=$(ls "$work"/deb/cudl_*.deb)
dpkg-deb -I "$deb" | sed -n 's/^ Depends:/test-install: Depends:/p'
trap 'dpkg -r cudl >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
quiet dpkg -i "$deb"
say "cudl info from the package: $(command -v cudl)"
cudl info > "$work/info.txt"
head -2 "$work/info.txt"
say "examples/consumer against the package (/usr)"
consumer /usr "$work/consumer-deb"
say "ok"
