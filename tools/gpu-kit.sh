#!/usr/bin/env bash
# Assembles the GPU kit: one git-ignored folder, .gpu-kit/, that a session lent a GPU machine
# carries there and runs with ONE command (tools/gpu-check.sh, copied into the kit):
#
#   bash tools/gpu-kit.sh                      # here: build (Release, CUDA backend, sm_90 + PTX) and assemble
#   device run: carry [".gpu-kit"], command "bash .gpu-kit/gpu-check.sh $OUT", timeout_s 540
#   env -i PATH=/usr/bin:/bin HOME=$HOME bash .gpu-kit/gpu-check.sh /tmp/kit-out --cpu   # rehearsal here
#
# No GPU is needed to make it. The kit holds:
#   runtime.tar.gz             (gzip: OpenBLAS alone is 36 MB unpacked; gpu-check.sh unpacks it in /tmp)
#     bin/cudl, bin/cudl_tests built in build-kit/ from the working tree, stripped
#     lib/                     every shared library they load except the C library's own (libc, libm,
#                              ld-linux, libpthread, libdl, librt) and the CUDA ones (cudart, cuDNN,
#                              cuBLAS, cuBLASLt, NCCL, NVRTC), which the GPU machine has (its toolkit,
#                              PyTorch's nvidia wheels): fmt, OpenBLAS, gfortran, quadmath, libpng,
#                              libjpeg, zlib, gomp
#     lib/gcc/                 libstdc++ and libgcc_s, used there only when the machine's own are older
#   data/mnist/*.gz            real MNIST (gzipped IDX), for the GPU training step
#   gpu-check.sh, gpu-common.sh, tests/data/*.png, the JPEG test input from tests/fuzz/corpus/, bench/compare_torch.py, tools/bench_chart.py
#   cudl-src.tar.gz            `git archive HEAD` (without bench/results), for a rebuild there when
#                              the prebuilt binaries do not load
#   debs/                      the Debian 12 .debs of the host libraries (tools/fetch-deps-debs.sh,
#                              cached in .deps/), which that rebuild unpacks with dpkg -x
#   KIT.txt                    commit, build machine, compilers, CUDA architectures, the newest
#                              GLIBC/GLIBCXX versions the binaries need, the libraries
# It stops when the kit exceeds 60 MiB (a device run carries at most 64 MiB, the checkout included).
#
# Options: --out DIR (default .gpu-kit), --build-dir DIR (default build-kit), --no-debs (leave the
# .debs out: no rebuild possible there without the host libraries), --skip-build (assemble from
# the existing build).
set -euo pipefail
cd "$(dirname "$0")/.."

kit=.gpu-kit build_dir=build-kit with_debs=1 skip_build=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) kit=$2; shift ;;
    --build-dir) build_dir=$2; shift ;;
    --no-debs) with_debs=0 ;;
    --skip-build) skip_build=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu-kit: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
say() { echo "gpu-kit: $*"; }
limit_mib=60

# ---------------------------------------------------------------- build
# Release with the CUDA backend; the architectures are CMakeLists.txt's default (90-real;90-virtual:
# Hopper machine code plus PTX). Tests are listed when ctest runs, not at build time, so the build
# never runs the binary.
if [ $skip_build = 0 ]; then
  say "building $build_dir (Release, CUDL_CUDA=ON)"
  # Without oneDNN: libdnnl alone is 40 MB unpacked, and a kit travels within 64 MiB; the kit's CPU
  # side (the CPU half of kernels_vs_cpu) then runs the im2col + OpenBLAS path. Without MPI: the
  # GPU machine has no OpenMPI, and one GPU leaves the NCCL test nothing to run on. Without ONNX: libonnx and protobuf are not on
  # the GPU machine.
  bash tools/build.sh "$build_dir" -DCMAKE_BUILD_TYPE=Release -DCUDL_CUDA=ON -DCUDL_ONEDNN=OFF -DCUDL_DISTRIBUTED=OFF -DCUDL_ONNX=OFF \
    -DCMAKE_GTEST_DISCOVER_TESTS_DISCOVERY_MODE=PRE_TEST
fi
for b in cudl cudl_tests; do
  [ -x "$build_dir/$b" ] || { echo "gpu-kit: $build_dir/$b is missing (build failed?)" >&2; exit 1; }
done
if ! "$build_dir/cudl" info | grep -q 'backends compiled in:.*cuda'; then
  echo "gpu-kit: $build_dir/cudl has no CUDA backend" >&2; exit 1
fi

# ---------------------------------------------------------------- assemble
say "assembling $kit/"
rm -rf "$kit"
mkdir -p "$kit/tests/data" "$kit/bench" "$kit/tools"
kit=$(cd "$kit" && pwd)
# The runtime (binaries and libraries) is staged here, checked, then packed into runtime.tar.gz.
stage=$(cd "$build_dir" && pwd)/kit-runtime
rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/lib/gcc"
cp "$build_dir/cudl" "$build_dir/cudl_tests" "$stage/bin/"
# Symbol tables are not needed to run; strip keeps the dynamic symbols.
command -v strip >/dev/null && strip --strip-unneeded "$stage/bin/cudl" "$stage/bin/cudl_tests"

# is_cuda_lib NAME / is_libc NAME: the libraries the kit leaves to the GPU machine.
is_cuda_lib() { [[ $1 =~ ^lib(cudart|cudnn|cublas|cublasLt|nccl|nvrtc|nvJitLink|cuda)[._] ]]; }
is_libc() { [[ $1 =~ ^(linux-vdso|ld-linux|libc\.|libm\.|libpthread\.|libdl\.|librt\.|libutil\.|libresolv\.|libmvec\.) ]]; }
for b in cudl cudl_tests; do ldd "$build_dir/$b"; done | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' | sort -u |
  while read -r name path; do
    if is_cuda_lib "$name" || is_libc "$name"; then continue; fi
    case "$name" in
      libstdc++.so.*|libgcc_s.so.*) cp -L "$path" "$stage/lib/gcc/$name" ;;
      *) cp -L "$path" "$stage/lib/$name" ;;
    esac
  done

cp tools/gpu-check.sh tools/gpu-common.sh "$kit/"
cp tests/data/chelsea.png tests/data/brick.png "$kit/tests/data/"
# Test inputs the tests read through source_dir() (gpu-check.sh points CUDL_TEST_SOURCE_DIR at the kit).
mkdir -p "$kit/tests/fuzz/corpus/image"
cp tests/fuzz/corpus/image/progressive_16x16.jpg "$kit/tests/fuzz/corpus/image/"
# Real MNIST, gzipped (11 MB), for the GPU training step; fetched here when it is not yet.
[ -f data/mnist/train-images-idx3-ubyte ] || [ -f data/mnist/train-images-idx3-ubyte.gz ] || bash tools/fetch-mnist.sh data/mnist
mkdir -p "$kit/data/mnist"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  if [ -f "data/mnist/$f.gz" ]; then cp "data/mnist/$f.gz" "$kit/data/mnist/"; else gzip -9c "data/mnist/$f" > "$kit/data/mnist/$f.gz"; fi
done
cp bench/compare_torch.py "$kit/bench/"
cp tools/bench_chart.py "$kit/tools/"
git archive --format=tar.gz -o "$kit/cudl-src.tar.gz" HEAD -- . ':(exclude)bench/results'

if [ $with_debs = 1 ]; then
  # The .debs tools/fetch-deps-debs.sh names, fetched once into .deps/ (apt-get download).
  need=$(sed -n '/^packages=(/,/^)/p' tools/fetch-deps-debs.sh | grep -v '^packages=(\|^)' | xargs -n1)
  missing=0
  for p in $need; do ls .deps/"${p}"_*.deb >/dev/null 2>&1 || missing=1; done
  if [ $missing = 1 ]; then
    say "fetching the host libraries' .debs into .deps/ (tools/fetch-deps-debs.sh)"
    bash tools/fetch-deps-debs.sh .deps
  fi
  mkdir -p "$kit/debs"
  for p in $need; do cp .deps/"${p}"_*.deb "$kit/debs/"; done
fi

# ---------------------------------------------------------------- KIT.txt
commit=$(git rev-parse --short=12 HEAD)
dirty=""
git diff --quiet HEAD || dirty=" + uncommitted changes (in the binaries, not in cudl-src.tar.gz)"
max_version() {  # max_version GLIBC|GLIBCXX FILE...: the newest symbol version the files ask for
  local v=$1; shift
  for b in "$@"; do objdump -T "$b"; done 2>/dev/null | grep -o "${v}_[0-9][0-9.]*" | sort -Vu | tail -1
}
{
  echo "commit: $commit$dirty ($(git log -1 --format=%s | cut -c1-80))"
  echo "built: $(date -u '+%F %T UTC') on $(. /etc/os-release && echo "$PRETTY_NAME"), $(ldd --version | head -1)"
  echo "compilers: $(c++ --version | head -1); nvcc $(/usr/local/cuda/bin/nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' | cut -d' ' -f2 || echo '?')"
  echo "cuda code: $(grep -o -- '--generate-code=[^ ]*' "$build_dir/build.ninja" 2>/dev/null | sort -u | sed 's/.*code=//' | paste -sd ' ') (sm_90 machine code; compute_90 PTX for newer GPUs)"
  echo "needs: $(max_version GLIBC "$stage"/bin/* "$stage"/lib/*.so.*) $(max_version GLIBCXX "$stage"/bin/* "$stage"/lib/*.so.*);" \
    "lib/gcc's libstdc++ (used only where the machine's is older) needs $(max_version GLIBC "$stage"/lib/gcc/*)"
  echo "built against: $("$build_dir/cudl" info | grep -E '^(CUDA runtime|cuDNN|cuBLAS):' | paste -sd ';' | sed 's/;/; /g')"
  echo "lib/: $(cd "$stage/lib" && find . -type f | sed 's|^\./||' | sort | paste -sd ' ')"
  echo "run: bash .gpu-kit/gpu-check.sh OUTDIR [--cpu]  (see bash .gpu-kit/gpu-check.sh --help)"
} > "$kit/KIT.txt"
cat "$kit/KIT.txt"

# ---------------------------------------------------------------- checks
# With only the kit's lib/ on the path and a clean environment, every library but the C library's
# and the CUDA ones must come from the kit.
bad=0
for b in cudl cudl_tests; do
  while read -r name path; do
    if is_cuda_lib "$name" || is_libc "$name"; then continue; fi
    case "$path" in "$stage/lib/"*) ;; *) echo "gpu-kit: $b loads $name from $path, not from the kit" >&2; bad=1 ;; esac
  done < <(env -i PATH=/usr/bin:/bin LD_LIBRARY_PATH="$stage/lib:$stage/lib/gcc" ldd "$stage/bin/$b" |
           awk '$2 == "=>" { print $1, $3 }')
done
[ $bad = 0 ] || exit 1
tar -czf "$kit/runtime.tar.gz" -C "$stage" bin lib
size_kib=$(du -sk "$kit" | cut -f1)
say "$kit/: $(du -sh "$kit" | cut -f1) ($(find "$kit" -type f | wc -l) files): runtime.tar.gz $(du -sh "$kit/runtime.tar.gz" | cut -f1) (bin $(du -sh "$stage/bin" | cut -f1), lib $(du -sh "$stage/lib" | cut -f1) unpacked), debs $(du -sh "$kit/debs" 2>/dev/null | cut -f1 || echo 0), source $(du -sh "$kit/cudl-src.tar.gz" | cut -f1)"
if [ "$size_kib" -gt $((limit_mib * 1024)) ]; then
  echo "gpu-kit: the kit is over ${limit_mib} MiB: a device run carries at most 64 MiB with the checkout" >&2
  exit 1
fi
[ -z "$dirty" ] || say "note: the working tree has uncommitted changes: the binaries include them, cudl-src.tar.gz (HEAD) does not"
say "ready. On the GPU machine: carry .gpu-kit, run: bash .gpu-kit/gpu-check.sh \$OUT (timeout_s 540)"
