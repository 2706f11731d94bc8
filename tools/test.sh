#!/usr/bin/env bash
# The test command: set-up and the formatting check, then build and test both configurations: the default one (the CUDA
# backend compiled when nvcc, cuDNN and cuBLAS are found; its GPU tests skip visibly without a
# GPU) and the CPU-only one (-DCUDL_CUDA=OFF); the CPU-only build installed and used as a package
# (tools/test-install.sh); then the unit tests under ASan+UBSan
# (tools/sanitize.sh) and a short run of each fuzz target (tools/fuzz.sh), both in one clang
# build (build-san/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
status=0
echo "=== cudl: formatting (clang-format, the checkout's .clang-format)"
bash tools/check-format.sh || status=1
# The end-to-end training runs (minutes on a CPU) run once, in the default configuration; the
# CPU-only build runs everything else.
echo "=== cudl: building and testing build (CUDL_CUDA=AUTO)"
bash tools/build.sh build
(cd build && ctest --output-on-failure -j "$(nproc)") || status=1
echo "=== cudl: building and testing build-cpu (CUDL_CUDA=OFF)"
bash tools/build.sh build-cpu -DCUDL_CUDA=OFF
(cd build-cpu && ctest --output-on-failure -j "$(nproc)" -E '^(EndToEnd|Training)\.') || status=1
echo "=== cudl: installed as a user gets it (cmake --install, find_package, the Debian package)"
bash tools/test-install.sh build-cpu || status=1
echo "=== cudl: unit tests under AddressSanitizer + UndefinedBehaviorSanitizer (build-san, clang)"
bash tools/sanitize.sh || status=1
echo "=== cudl: fuzzing the safetensors, IDX/CIFAR, PNG/JPEG and model-file readers (20 s each)"
bash tools/fuzz.sh 20 || status=1
exit $status
