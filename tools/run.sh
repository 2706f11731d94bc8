#!/usr/bin/env bash
# The main job: set-up, build, fetch real MNIST, train mnist_cnn on it and print the test accuracy.
# EPOCHS (default 1: about 98% on MNIST's test set) and DEVICE (default auto) can be overridden.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh build
./build/cudl info
bash tools/fetch-mnist.sh data/mnist
mkdir -p runs
./build/cudl train --model mnist_cnn --data data/mnist --epochs "${EPOCHS:-1}" --device "${DEVICE:-auto}" \
  --save runs/mnist_cnn.safetensors --metrics-json runs/mnist_cnn.metrics.json
