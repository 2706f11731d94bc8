#!/usr/bin/env bash
# Runs each libFuzzer target in tests/fuzz/ (the safetensors, IDX/CIFAR, PNG/JPEG, model-file and
# ONNX readers; the ONNX one only when libonnx is installed) for SECONDS (default 20) from its seed corpus in tests/fuzz/corpus/<target>/ (part of
# tools/test.sh).
# Builds them with clang, ASan and UBSan into build-san/ (shared with tools/sanitize.sh). Fails on a
# crash, a sanitizer report, an exception other than cudl::Error, a leak, an input slower than 10 s
# or one that needs over 2 GB; the input that did it is left in build-san/fuzz/<target>/ (replay:
# build-san/fuzz_<target> FILE; once fixed, add it to the seed corpus as a regression test). Inputs
# that found new code are kept in build-san/fuzz/<target>/corpus/ for the next run.
# Usage: tools/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
shift || true
targets=("$@")
build_dir=build-san
CC=clang CXX=clang++ bash tools/build.sh "$build_dir" -DCUDL_CUDA=OFF -DCUDL_SANITIZE=ON -DCUDL_FUZZ=ON \
  -DCUDL_WERROR=OFF
if [ ${#targets[@]} -eq 0 ]; then
  targets=(safetensors datasets image model_file)
  # Built only where CMake found libonnx (CUDL_ONNX=AUTO).
  if [ -x "$build_dir/fuzz_onnx" ]; then targets+=(onnx); else echo "=== fuzz_onnx: not built (no libonnx)"; fi
fi
status=0
for t in "${targets[@]}"; do
  work="$build_dir/fuzz/$t"
  mkdir -p "$work/corpus"
  echo "=== fuzz_$t for ${seconds}s"
  # -timeout: seconds per input; -rss_limit_mb: the process's memory (a single allocation over it
  # fails too). The log keeps only the last lines unless the run fails.
  if ! "$build_dir/fuzz_$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$work/" "$work/corpus" "tests/fuzz/corpus/$t" >"$work/log.txt" 2>&1; then
    cat "$work/log.txt"
    echo "fuzz_$t FAILED: the input is in $work/ (crash-*, leak-*, timeout-* or oom-*)" >&2
    status=1
  else
    grep -E '^(#[0-9]+ *DONE|stat::number_of_executed_units|stat::new_units_added)' "$work/log.txt" || true
  fi
done
exit $status
