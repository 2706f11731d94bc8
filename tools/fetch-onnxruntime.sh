#!/usr/bin/env bash
# Fetches onnxruntime for Node.js (the npm packages onnxruntime-node, with its prebuilt Linux x64
# native library, and onnxruntime-common) into TARGET_DIR/node_modules (default data/onnxruntime),
# so that tests/test_onnx_runtime.cpp can run cudl's ONNX exports in another runtime. About 115 MiB.
# Idempotent: nothing is downloaded when both packages are there. tests/test_onnx_runtime.cpp runs
# it when they are not.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-data/onnxruntime}
version=1.31.1
modules="$target/node_modules"
# One fetch at a time (tests running in parallel each ask): the others wait, then find it there.
mkdir -p "$target"
exec 9>"$target/.fetch.lock"
flock 9
if [ -f "$modules/onnxruntime-node/package.json" ] && [ -f "$modules/onnxruntime-common/package.json" ]; then
  echo "fetch-onnxruntime: already in $modules"
  exit 0
fi
command -v npm >/dev/null || { echo "fetch-onnxruntime: npm not found (install Node.js/npm)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for p in onnxruntime-node onnxruntime-common; do
  echo "fetch-onnxruntime: downloading the npm package $p@$version..."
  if ! (cd "$tmp" && npm pack --loglevel=error "$p@$version" >pack.log 2>&1); then
    echo "fetch-onnxruntime: 'npm pack $p@$version' failed (no network or registry unreachable?):" >&2
    head -n 4 "$tmp/pack.log" >&2 || true
    exit 1
  fi
  mkdir -p "$tmp/$p"
  tar -xzf "$tmp/$p-$version.tgz" -C "$tmp/$p"
done
mkdir -p "$modules"
for p in onnxruntime-node onnxruntime-common; do
  rm -rf "${modules:?}/$p"
  mv "$tmp/$p/package" "$modules/$p"
done
echo "fetch-onnxruntime: onnxruntime $version for Node.js is in $(cd "$modules" && pwd)"
