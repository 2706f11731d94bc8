#!/usr/bin/env bash
# One command for a Linux machine with an NVIDIA GPU and the CUDA toolkit: configure and build
# cudl with its CUDA backend, run the tests (ctest), the kernel benchmarks at VGG19 sizes on the
# CPU and the GPU, the model benchmarks (vgg19 at batch 1, 32, 64; mnist_cnn at 128), and, where
# PyTorch is installed, the PyTorch comparison; draw the chart (where matplotlib is installed) and
# write everything into one dated folder, bench/results/<date>-<gpu-name>/, with a meta file.
#
#   tools/gpu-bench.sh                 # on the GPU machine, from a clone of this repository
#   tools/gpu-bench.sh --dry-run       # anywhere: what it finds and the commands it would run
#   tools/gpu-bench.sh --cpu           # anywhere: the same pipeline on the CPU alone (small kernel
#                                      # sizes, mnist_cnn), to check this script or record a CPU
#
# Options: --debs DIR (unpack these Debian .debs with dpkg -x into a prefix and build against
# them; by default $CUDL_DEBS or .deps/ is used when the host libraries are missing; make the folder
# with tools/fetch-deps-debs.sh), --build-dir DIR (default build-gpu; build-cpu-bench with --cpu),
# --out DIR (default bench/results/<date>-<gpu or cpu-host>), --tag NAME (replaces the GPU or host
# name in the folder's name), --skip-tests, --repeat N (default 10).
# Environment: PYTHON (the python3 with PyTorch), CUDL_MODEL_DEVICES (default "cuda": the devices of the model benchmarks; VGG19 on
# a CPU takes minutes), CUDACXX (nvcc), CUDNN_ROOT / CUBLAS_ROOT (override the search).
# Exit status: 0 when every step passed, 1 when a step failed (the others still ran and their
# files are written), 2 when there is no NVIDIA GPU (without --cpu / --dry-run).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

dry_run=0 cpu=0 skip_tests=0 repeat=10 build_dir="" out="" tag="" debs_forced=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --cpu) cpu=1 ;;
    --skip-tests) skip_tests=1 ;;
    --repeat) repeat=$2; shift ;;
    --build-dir) build_dir=$2; shift ;;
    --out) out=$2; shift ;;
    --tag) tag=$2; shift ;;
    --debs) debs_forced=$2; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu-bench: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { echo "gpu-bench: $*"; }
# cudl_run (a command, or its echo under --dry-run), finding PyTorch's Python, cuDNN and cuBLAS,
# and the Debian .debs: shared with tools/gpu-check.sh.
source tools/gpu-common.sh
run() { cudl_run "$@"; }
failed=()
# step NAME CMD...: runs CMD with its output shown and saved as $out/NAME.txt; a failure is
# recorded and the next steps still run.
step() {
  local name=$1; shift
  say "== $name: $*"
  if [ $dry_run -eq 1 ]; then echo "  + $* > $out/$name.txt"; return 0; fi
  if ! "$@" 2>&1 | tee "$out/$name.txt"; then
    say "step '$name' FAILED (see $out/$name.txt)"
    failed+=("$name")
  fi
}
set -o pipefail

# ---------------------------------------------------------------- the GPU
gpu_name="" driver="" compute_cap=""
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && [ -n "$(nvidia-smi -L 2>/dev/null)" ]; then
  gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
  driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)
  compute_cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 || true)
  say "GPU: $gpu_name (driver $driver, compute capability ${compute_cap:-unknown})"
elif [ $cpu -eq 1 ]; then
  say "no NVIDIA GPU needed (--cpu)"
elif [ $dry_run -eq 1 ]; then
  say "no NVIDIA GPU found (nvidia-smi missing or lists none): a real run stops here; showing the plan anyway"
else
  echo "gpu-bench: no NVIDIA GPU: nvidia-smi is missing or lists no GPU. This script needs a machine with an" >&2
  echo "  NVIDIA GPU and the CUDA toolkit. On this machine: tools/gpu-bench.sh --cpu (CPU benchmarks)," >&2
  echo "  or tools/gpu-bench.sh --dry-run (what it would do)." >&2
  exit 2
fi
[ $cpu -eq 1 ] && gpu_name=""

# ---------------------------------------------------------------- the CUDA toolkit, cuDNN, cuBLAS
cmake_args=(-DCMAKE_BUILD_TYPE=Release)
cudl_find_python
if [ $cpu -eq 1 ]; then
  cmake_args+=(-DCUDL_CUDA=OFF)
else
  nvcc=${CUDACXX:-$(command -v nvcc || true)}
  [ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc
  if [ -z "$nvcc" ]; then
    echo "gpu-bench: no nvcc (CUDA toolkit): put it on PATH or set CUDACXX" >&2
    [ $dry_run -eq 1 ] || exit 1
    nvcc=nvcc
  fi
  cuda_home=$(cd "$(dirname "$nvcc")/.." 2>/dev/null && pwd || echo /usr/local/cuda)
  say "nvcc: $nvcc ($("$nvcc" --version 2>/dev/null | grep -o 'release [0-9.]*' || echo 'version unknown'))"
  cudnn_root=${CUDNN_ROOT:-$(cudl_find_root cudnn.h cudnn || true)}
  cublas_root=${CUBLAS_ROOT:-$(cudl_find_root cublas_v2.h cublas || true)}
  say "cuDNN: ${cudnn_root:-NOT FOUND}; cuBLAS: ${cublas_root:-NOT FOUND}"
  cmake_args+=(-DCUDL_CUDA=ON "-DCMAKE_CUDA_COMPILER=$nvcc")
  [ -n "$cudnn_root" ] && cmake_args+=("-DCUDNN_ROOT=$cudnn_root")
  [ -n "$cublas_root" ] && cmake_args+=("-DCUBLAS_ROOT=$cublas_root")
  # Machine code for the GPU at hand (the default in CMakeLists.txt is Hopper, sm_90).
  if [ -n "$compute_cap" ]; then
    arch=${compute_cap/./}
    cmake_args+=("-DCMAKE_CUDA_ARCHITECTURES=${arch}-real;${arch}-virtual")
  fi
  # The wheels' libraries are found at run time through RPATH; LD_LIBRARY_PATH covers the rest.
  for d in "$cudnn_root" "$cublas_root"; do
    [ -n "$d" ] && [ -d "$d/lib" ] && export LD_LIBRARY_PATH="$d/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  done
fi

# ---------------------------------------------------------------- host libraries (Debian .debs)
mapfile -t missing < <(cudl_missing_host_headers)
debs=$debs_forced
if [ -z "$debs" ] && [ ${#missing[@]} -gt 0 ]; then
  debs=${CUDL_DEBS:-.deps}
  say "host headers missing: ${missing[*]}; using the Debian .debs in $debs"
fi
if [ -n "$debs" ]; then
  if ! ls "$debs"/*.deb >/dev/null 2>&1; then
    echo "gpu-bench: no .deb files in '$debs' (make them on a Debian 12 machine with tools/fetch-deps-debs.sh," \
      "then copy the folder here, or install: ${missing[*]})" >&2
    [ $dry_run -eq 1 ] || exit 1
  fi
  prefix="$root/${build_dir:-build-gpu}-debs"
  [ $cpu -eq 1 ] && [ -z "$build_dir" ] && prefix="$root/build-cpu-bench-debs"
  cudl_use_debs "$debs" "$prefix" || [ $dry_run -eq 1 ] || exit 1
fi

# ---------------------------------------------------------------- where it all goes
date=$(date +%F)
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
if [ -z "$build_dir" ]; then
  if [ $cpu -eq 1 ]; then build_dir=build-cpu-bench; else build_dir=build-gpu; fi
fi
if [ -z "$tag" ]; then
  if [ $cpu -eq 1 ]; then tag="cpu-$(hostname -s 2>/dev/null || echo dev)"; else tag=${gpu_name:-no-gpu}; fi
elif [ $cpu -eq 1 ]; then
  tag="cpu-$tag"
fi
slug=$(echo "$tag" | tr '[:upper:]' '[:lower:]' | sed 's/[^a-z0-9.]\+/-/g; s/^-//; s/-$//')
out=${out:-bench/results/$date-$slug}
run mkdir -p "$out"
say "results: $out"

# ---------------------------------------------------------------- configure and build
generator=() launcher=()
command -v ninja >/dev/null && generator=(-G Ninja)
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  [ $cpu -eq 1 ] || launcher+=(-DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
step configure cmake -S . -B "$build_dir" "${generator[@]}" "${launcher[@]}" "${cmake_args[@]}"
step build cmake --build "$build_dir" -j "$(nproc)"
if [ ${#failed[@]} -gt 0 ]; then
  say "the build failed; nothing to benchmark"
  exit 1
fi
cudl=$build_dir/cudl
[ $dry_run -eq 1 ] || "$cudl" info | tee "$out/info.txt"

# ---------------------------------------------------------------- tests and benchmarks
if [ $skip_tests -eq 0 ]; then
  step ctest ctest --test-dir "$build_dir" --output-on-failure -j "$(nproc)"
fi
if [ $cpu -eq 1 ]; then
  step kernels "$cudl" bench --device cpu --sizes small --repeat "$repeat" --json "$out/kernels.json"
  step models "$cudl" bench --device cpu --models mnist_cnn --repeat "$repeat" --json "$out/models.json"
  compare_device=cpu compare_models=mnist_cnn
else
  step kernels "$cudl" bench --device cpu,cuda --sizes vgg --repeat "$repeat" --json "$out/kernels.json"
  step models "$cudl" bench --device "${CUDL_MODEL_DEVICES:-cuda}" --models vgg19,mnist_cnn --repeat "$repeat" \
    --json "$out/models.json"
  compare_device=cuda compare_models=vgg19,mnist_cnn
fi
torch_version=""
if [ -n "$python" ] && "$python" -c 'import torch' 2>/dev/null; then
  torch_version=$("$python" -c 'import torch; print(torch.__version__)')
  if [ "$compare_device" = cuda ] && ! "$python" -c 'import torch,sys; sys.exit(not torch.cuda.is_available())'; then
    say "PyTorch $torch_version sees no GPU: no comparison"
  else
    step compare_torch "$python" bench/compare_torch.py --cudl "$cudl" --device "$compare_device" \
      --models "$compare_models" --repeat "$repeat" --json "$out/compare_torch.json"
  fi
else
  say "PyTorch is not installed for ${python:-python3}: no comparison"
fi
if [ -n "$python" ] && "$python" -c 'import matplotlib' 2>/dev/null; then
  title="cudl bench, ${gpu_name:-CPU} ($date)"
  step chart "$python" tools/bench_chart.py "$out/kernels.json" "$out/models.json" -o "$out/chart.png" --title "$title"
else
  say "matplotlib is not installed: no chart (Debian: apt-get install python3-matplotlib)"
fi

# ---------------------------------------------------------------- the meta file
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit (with uncommitted changes)"
meta() {
  echo "date: $date"
  if [ -n "$gpu_name" ]; then
    echo "gpu: $gpu_name"
    echo "driver: $driver"
    echo "compute capability: ${compute_cap:-unknown}"
    echo "nvcc: $("$nvcc" --version 2>/dev/null | grep -o 'release [0-9.]*' || echo unknown)"
  fi
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') ($(nproc) cores available)"
  echo "host: $(hostname -s 2>/dev/null || echo unknown), $(uname -sr)"
  echo "load average at start: $load_at_start (1, 5, 15 min; other work on the machine skews CPU numbers)"
  echo "commit: $commit"
  echo "build: cmake ${generator[*]} ${launcher[*]} ${cmake_args[*]}"
  echo "compiler: $(grep -m1 '^CMAKE_CXX_COMPILER:' "$build_dir/CMakeCache.txt" 2>/dev/null | cut -d= -f2) $(c++ -dumpfullversion 2>/dev/null || true)"
  echo "pytorch: ${torch_version:-not installed}"
  echo "repeat: $repeat (median of that many timed runs after 2 warm-ups; models: half as many)"
  echo "failed steps: ${failed[*]:-none}"
}
if [ $dry_run -eq 1 ]; then
  say "would write $out/meta.txt:"; meta | sed 's/^/  /'
else
  meta > "$out/meta.txt"
  say "wrote $out/: $(cd "$out" && echo *)"
fi
if [ ${#failed[@]} -gt 0 ]; then
  say "FAILED steps: ${failed[*]}"
  exit 1
fi
