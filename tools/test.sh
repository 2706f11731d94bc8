#!/usr/bin/env bash
# The test command: set-up, then build and test both configurations: the default one (the CUDA
# backend compiled when nvcc, cuDNN and cuBLAS are found; its GPU tests skip visibly without a
# GPU) and the CPU-only one (-DCUDL_CUDA=OFF).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
status=0
# The end-to-end training runs (minutes on a CPU) run once, in the default configuration; the
# CPU-only build runs everything else.
echo "=== cudl: building and testing build (CUDL_CUDA=AUTO)"
bash tools/build.sh build
(cd build && ctest --output-on-failure -j "$(nproc)") || status=1
echo "=== cudl: building and testing build-cpu (CUDL_CUDA=OFF)"
bash tools/build.sh build-cpu -DCUDL_CUDA=OFF
(cd build-cpu && ctest --output-on-failure -j "$(nproc)" -E '^(EndToEnd|Training)\.') || status=1
exit $status
