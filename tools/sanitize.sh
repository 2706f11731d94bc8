#!/usr/bin/env bash
# The unit tests under AddressSanitizer and UndefinedBehaviorSanitizer (part of tools/test.sh).
# A CPU-only clang build in build-san/ (shared with tools/fuzz.sh, whose targets it also builds)
# with -fsanitize=address,undefined and -fno-sanitize-recover: the first report fails the test.
# CUDL_NO_CACHING=1 makes every tensor its own allocation, so an access past a tensor's end is
# reported instead of landing in the caching pool's rounding. Skipped: the end-to-end training
# runs (minutes even without sanitizers; tools/test.sh runs them in the default build).
# Usage: tools/sanitize.sh [extra ctest arguments, e.g. -R Image]
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=build-san
# CUDL_WERROR=OFF: the warning gate is the GCC builds'; this build is for the runtime checks.
# CUDL_DISTRIBUTED=OFF: OpenMPI's own allocations at MPI_Init/MPI_Finalize (never freed by design)
# would fail LeakSanitizer in every mpirun test; the data-parallel code's shard arithmetic is
# still tested here (DataParallel.*), the mpirun runs in the GCC builds.
CC=clang CXX=clang++ bash tools/build.sh "$build_dir" -DCUDL_CUDA=OFF -DCUDL_SANITIZE=ON -DCUDL_FUZZ=ON \
  -DCUDL_WERROR=OFF -DCUDL_DISTRIBUTED=OFF
export CUDL_NO_CACHING=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1}
cd "$build_dir"
ctest --output-on-failure -j "$(nproc)" -E '^(EndToEnd|Training)\.' "$@"
