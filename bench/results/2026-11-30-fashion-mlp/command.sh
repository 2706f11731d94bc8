#!/usr/bin/env bash
# The run behind this folder, from the repository root (after tools/build.sh build-cpu -DCUDL_CUDA=OFF).
set -euo pipefail
tools/fetch-fashion-mnist.sh data/fashion-mnist
R=bench/results/2026-11-30-fashion-mlp
build-cpu/cudl train --model mlp --dataset fashion-mnist --data data/fashion-mnist --device cpu \
  --epochs 5 --batch-size 64 --optimizer adam --lr 1e-3 --schedule none --seed 1 \
  --val-split 0.1 --save-best /tmp/fashion-mlp-best.safetensors \
  --metrics-json $R/metrics.json --plot $R/curves.png
build-cpu/cudl eval --model mlp --dataset fashion-mnist --data data/fashion-mnist --device cpu \
  --weights /tmp/fashion-mlp-best.safetensors --json $R/eval.json
