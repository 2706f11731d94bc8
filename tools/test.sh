#!/usr/bin/env bash
# The test command: set-up, then build and test both configurations: the default one (the CUDA
# backend compiled when nvcc, cuDNN and cuBLAS are found; its GPU tests skip visibly without a
# GPU) and the CPU-only one (-DCUDL_CUDA=OFF).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
status=0
for config in "build" "build-cpu -DCUDL_CUDA=OFF"; do
  # shellcheck disable=SC2086
  set -- $config
  echo "=== cudl: building and testing $1 ${2:-(CUDL_CUDA=AUTO)}"
  bash tools/build.sh "$@"
  (cd "$1" && ctest --output-on-failure -j "$(nproc)") || status=1
done
exit $status
