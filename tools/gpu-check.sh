#!/usr/bin/env bash
# The one-call GPU check: runs the prebuilt kit that tools/gpu-kit.sh assembles (.gpu-kit/) on a
# machine with an NVIDIA GPU, inside a fixed time, and leaves at most three files in OUTDIR:
#   summary.txt      machine, GPU, driver, commit, test counts, the key numbers, the steps that
#                    failed, timed out or were skipped
#   results.tar.gz   every log, JSON and gtest XML, ldd and nvidia-smi output, the style images
#   chart.png        tools/bench_chart.py's chart of the kernels and models (where matplotlib is)
# They are rewritten after every step, so a run cut short still leaves what it had.
#
#   bash .gpu-kit/gpu-check.sh OUTDIR           # on the GPU machine, from the carried kit
#   bash .gpu-kit/gpu-check.sh OUTDIR --cpu     # a rehearsal on any machine: the CPU, tiny sizes
#   bash tools/gpu-check.sh OUTDIR              # from a checkout: uses .gpu-kit/ when it is built,
#                                               # else builds from the checkout (like --rebuild)
#
# The steps, most wanted first, each under its own `timeout`, all inside a budget of --budget
# seconds (default 480) from the start; a step that no longer fits is NOT RUN (a failure):
#   preflight      nvidia-smi, `cudl info`, `ldd` of both binaries (where each library comes from)
#   rebuild        only when the prebuilt binaries do not load (a library, or a GLIBC/GLIBCXX
#                  version, missing; `cudl info` failing) or with --rebuild: the kit's source
#                  tarball, cmake + ninja, the host libraries from the kit's Debian .debs
#                  unpacked with `dpkg -x` into a prefix (tools/gpu-common.sh, as gpu-bench.sh);
#                  up to two thirds of the budget, so the later steps may not all run
#   tests_cuda     cudl_tests --gtest_filter='*cuda*:*Cuda*:*CUDA*' (gtest XML; includes the bf16/fp16
#                  CudaVsCpuHalf suite)
#   compare_torch_bf16, compare_torch_fp16   bench/compare_torch.py --precision bf16|fp16 on vgg19 at
#                  batch 1, 32 and 64 and style (Adam) at 512 and 1024 px: cudl --precision against
#                  PyTorch's autocast + channels_last (+ GradScaler for fp16), with both sides' peak
#                  memory; first after the tests, since
#                  mixed precision (issue 20) is what the next GPU run is for
#   memory_format  cudl bench --models vgg19 --batch-sizes 32 --precision bf16 with --memory-format
#                  nchw, then channels_last, twice over in one step (cuDNN's NHWC convolutions against
#                  NCHW; CUDA's automatic format stays NCHW until this has measured NHWC faster)
#   kernels        cudl bench --device cuda --sizes vgg (every kernel at VGG19 layer shapes)
#   models         cudl bench --device cuda --models vgg19,mnist_cnn (vgg19 at batch 1, 32, 64;
#                  mnist_cnn at 128)
#   style_512, style_1024   cudl style with random:1 VGG19 weights (no weights file travels),
#                  30 L-BFGS iterations, --conv-algo measured: ms/iteration and the pool's peak memory
#   models_graphs, style_512_graphs   vgg19 batch-1 train step and inference and the 512 px style
#                  iteration with --cuda-graphs true (GPU only), to set beside models and style_512
#   compare_torch  bench/compare_torch.py --device cuda (PyTorch on the same GPU; downloads nothing)
#   compare_torch_defaults   the same with --defaults (each engine untouched) on vgg19 and a 512 px
#                  style iteration
#   kernels_vs_cpu cudl bench --device cpu,cuda --sizes vgg (the GPU's speed-up over the CPU)
#   profile_heuristic, profile_measured   cudl bench --models vgg19 --batch-sizes 64 --profile under
#                  each --conv-algo (every layer's forward and backward time)
#   compare_torch_tf32   bench/compare_torch.py --precision tf32 (both sides) on vgg19
#   train_mnist    cudl train --model mnist_cnn --epochs 3 on the kit's real MNIST, on the device
#   tests_other    the rest of cudl_tests but the end-to-end training runs (EndToEnd.*)
#   chart          tools/bench_chart.py
# With --cpu the same steps run on the CPU alone with tiny sizes (the CUDA tests skip visibly).
#
# Libraries: the kit's lib/ holds every non-CUDA library the binaries load (fmt, OpenBLAS and its
# gfortran/quadmath, libpng, libjpeg, zlib, gomp; libstdc++ and libgcc_s too, used only where the
# machine's own are older and its glibc new enough for them). cudart, cuDNN, cuBLAS(Lt)
# and NVRTC are looked up by file name in $CUDA_HOME, /usr/local/cuda*/lib64 and then in the lib/
# folders of PyTorch's nvidia wheels (python3 -c 'import nvidia'); the folders found go on
# LD_LIBRARY_PATH of cudl's processes only (small wrappers in the work folder), never Python's.
#
# Options: --cpu (or CUDL_CHECK_CPU=1), --rebuild (build from source even when the kit loads),
# --budget SECONDS (or CUDL_CHECK_BUDGET; default 480), --only STEP,... (a rerun: run only these
# steps, e.g. --only tests_cuda,style; preflight always runs; a prefix matches, so `style` runs
# both sizes), --tests GTEST_FILTER (the tests_cuda step's filter instead of every CUDA test, e.g.
# a rerun of the ones that failed), --work DIR (default: a new folder in
# /tmp; the logs live there, OUTDIR gets only the packed files).
# Environment: PYTHON (the python3 with PyTorch), CUDA_HOME, CUDL_DEBS (the .debs for a rebuild
# from a checkout; default .deps/), CUDL_CHECK_USE_DEBS=1 (use the .debs even where the host has
# the headers: to rehearse the rebuild).
# Exit status: 0 when every step passed; 1 when any failed, timed out or was skipped for lack of
# time (the files are written either way); 2 on bad usage.
set -uo pipefail
start_s=$(date +%s)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

out="" cpu=${CUDL_CHECK_CPU:-0} force_rebuild=0 budget=${CUDL_CHECK_BUDGET:-480} work="" only="" cuda_filter='*cuda*:*Cuda*:*CUDA*'
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) cpu=1 ;;
    --rebuild) force_rebuild=1 ;;
    --budget) budget=$2; shift ;;
    --work) work=$2; shift ;;
    --only) only=$2; shift ;;
    --tests) cuda_filter=$2; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "gpu-check: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *) [ -z "$out" ] || { echo "gpu-check: one OUTDIR only (see --help)" >&2; exit 2; }; out=$1 ;;
  esac
  shift
done
[ -n "$out" ] || { echo "gpu-check: usage: gpu-check.sh OUTDIR [--cpu] [--rebuild] [--budget S] (see --help)" >&2; exit 2; }
[ "$cpu" = 1 ] || cpu=0
mkdir -p "$out" && out=$(cd "$out" && pwd) || { echo "gpu-check: cannot create $out" >&2; exit 2; }
deadline=$((start_s + budget))
reserve=15  # seconds kept for packing the results

# shellcheck source=tools/gpu-common.sh
source "$here/gpu-common.sh"

# ---------------------------------------------------------------- where things are
# root: the folder laid out like the repository (tests/data, bench/, tools/bench_chart.py): the kit
# itself, or the checkout this script lives in.
kit="" repo=""
if [ -f "$here/KIT.txt" ]; then
  kit=$here root=$here
else
  repo=$(cd "$here/.." && pwd) root=$repo
  [ -f "$repo/.gpu-kit/KIT.txt" ] && kit=$repo/.gpu-kit
fi
if [ -z "$work" ]; then work=$(mktemp -d "${TMPDIR:-/tmp}/cudl-check.XXXXXX"); else mkdir -p "$work"; fi
work=$(cd "$work" && pwd)
res=$work/results  # everything that goes into results.tar.gz
mkdir -p "$res/logs" "$work/bin"
say() { echo "gpu-check: $*"; echo "$(date +%T) $*" >> "$res/log.txt"; }
if [ $cpu = 1 ]; then dev=cpu mode="cpu (rehearsal: tiny sizes, no GPU used)"; else dev=cuda mode=gpu; fi
say "mode $mode; kit ${kit:-none}; work folder $work; budget ${budget}s"

# ---------------------------------------------------------------- steps, with their own timeouts
declare -a step_names=() step_status=() step_secs=()
failed=0
now() { date +%s; }
left() { echo $((deadline - reserve - $(now))); }
# record NAME STATUS SECONDS: "ok" and "skipped (why)" pass; anything else (FAILED, TIMED OUT,
# NOT RUN) fails the check.
record() {
  step_names+=("$1"); step_status+=("$2"); step_secs+=("$3")
  case "$2" in ok|"skipped ("*) ;; *) failed=1 ;; esac
  say "$1: $2 (${3}s)"
}
# wanted NAME: true without --only, or when NAME starts with one of its comma-separated steps.
wanted() {
  [ -z "$only" ] && return 0
  local w
  for w in ${only//,/ }; do case "$1" in "$w"*) return 0 ;; esac; done
  return 1
}
# step NAME CAP CMD...: runs CMD under `timeout` (CAP seconds, or what is left of the budget),
# output in logs/NAME.log; records ok, FAILED (exit N), TIMED OUT, or NOT RUN when the budget is spent.
step() {
  local name=$1 cap=$2; shift 2
  if ! wanted "$name"; then record "$name" "skipped (not in --only $only)" 0; return 0; fi
  local t; t=$(left)
  if [ "$t" -lt 10 ]; then record "$name" "NOT RUN (out of time: ${t}s left)" 0; pack; return 1; fi
  [ "$cap" -lt "$t" ] && t=$cap
  say "== $name (timeout ${t}s): $*"
  local s; s=$(now)
  timeout -k 10 "$t" "$@" > "$res/logs/$name.log" 2>&1
  local rc=$?
  local d=$(($(now) - s))
  if [ $rc -eq 0 ]; then record "$name" ok "$d"
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then record "$name" "TIMED OUT after ${t}s" "$d"
  else record "$name" "FAILED (exit $rc)" "$d"; fi
  tail -n 3 "$res/logs/$name.log" | sed 's/^/    /'
  pack
  return $rc
}

# ---------------------------------------------------------------- the machine and the GPU
gpu_name="" driver="" compute_cap="" gpu_mem=""
if command -v nvidia-smi >/dev/null && [ -n "$(timeout 20 nvidia-smi -L 2>/dev/null)" ]; then
  q=$(timeout 20 nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader 2>/dev/null | head -1)
  IFS=',' read -r gpu_name driver compute_cap gpu_mem <<< "$q"
  gpu_name=$(echo "$gpu_name" | xargs) driver=$(echo "$driver" | xargs)
  compute_cap=$(echo "$compute_cap" | xargs) gpu_mem=$(echo "$gpu_mem" | xargs)
  timeout 20 nvidia-smi > "$res/nvidia-smi.txt" 2>&1
fi
cudl_find_python
torch_version=""
if [ -n "$python" ]; then
  torch_version=$(timeout 60 "$python" -c 'import torch; print(torch.__version__, "(cuda available)" if torch.cuda.is_available() else "(no cuda)")' 2>/dev/null || true)
fi
{
  echo "date: $(date -u '+%F %T UTC')"
  echo "mode: $mode"
  echo "host: $(hostname 2>/dev/null || cat /etc/hostname 2>/dev/null), $(uname -srm)"
  echo "os: $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"); $(ldd --version 2>/dev/null | head -1)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') ($(nproc) cores); memory $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  if [ -n "$gpu_name" ]; then
    echo "gpu: $gpu_name, $gpu_mem, compute capability $compute_cap, driver $driver"
  else
    echo "gpu: none found (nvidia-smi missing or lists none)"
  fi
  echo "python: ${python:-none}; torch: ${torch_version:-not importable}"
  if [ -n "$kit" ]; then sed 's/^/kit: /' "$kit/KIT.txt"; fi
} > "$res/machine.txt"
if [ $cpu = 0 ] && [ -z "$gpu_name" ]; then
  say "no NVIDIA GPU visible: the CUDA steps will skip or fail (use --cpu for a rehearsal)"
fi

# ---------------------------------------------------------------- packing (after every step)
summary() {
  echo "cudl gpu-check: $( [ $failed = 0 ] && echo PASS || echo FAIL ) ($(($(now) - start_s)) s of a ${budget} s budget)"
  cat "$res/machine.txt"
  echo "binaries: ${binaries:-not loaded yet}"
  if [ -f "$res/info.txt" ]; then
    echo; echo "cudl info:"; sed 's/^/  /' "$res/info.txt"
    # A CUDA library older at run time than at build time may lack what cudl calls.
    sed -nE 's/^([^:]+): ([0-9.]+) \(built against ([0-9.]+)\)$/\1|\2|\3/p' "$res/info.txt" |
      while IFS='|' read -r name run built; do
        if [ "$run" != "$built" ] && [ "$(printf '%s\n%s\n' "$run" "$built" | sort -V | head -1)" = "$run" ]; then
          echo "  note: $name $run here is older than the $built cudl was built against; if its steps fail, run again with --rebuild"
        fi
      done
  fi
  [ -f "$res/libraries.txt" ] && { echo; echo "libraries (ldd, with the LD_LIBRARY_PATH cudl runs with):"; cat "$res/libraries.txt"; }
  echo
  echo "steps:"
  local i t
  for i in "${!step_names[@]}"; do
    printf '  %-17s %-42s %5ss\n' "${step_names[$i]}" "${step_status[$i]}" "${step_secs[$i]}"
  done
  for t in tests_cuda tests_other; do
    [ -f "$res/$t.counts" ] && { echo; echo "$t: $(cat "$res/$t.counts")"; }
  done
  local f
  for f in kernels models memory_format kernels_vs_cpu; do
    [ -f "$res/logs/$f.log" ] || continue
    echo; echo "$f (cudl bench; median ms over the repeats):"
    grep -v '^wrote ' "$res/logs/$f.log" | sed 's/^/  /' | head -80
  done
  if ls "$res"/logs/style_*.log >/dev/null 2>&1; then
    echo; echo "style transfer (random:1 VGG19 weights, chelsea.png content, brick.png style, --conv-algo measured):"
    for i in "${!step_names[@]}"; do
      f=$res/logs/${step_names[$i]}.log
      case "${step_names[$i]}" in style_*) [ -f "$f" ] || continue ;; *) continue ;; esac
      echo "  ${step_names[$i]}: $(grep -h '^style transfer on\|^wrote' "$f" | sed "s|$res/||" | tr '\n' ' ' || true)"
    done
  fi
  for f in compare_torch compare_torch_defaults compare_torch_bf16 compare_torch_fp16 compare_torch_tf32; do
    [ -f "$res/logs/$f.log" ] || continue
    echo; echo "$f (torch/cudl time > 1: cudl is faster):"; sed 's/^/  /' "$res/logs/$f.log" | tail -20
  done
  for f in profile_heuristic profile_measured train_mnist; do
    [ -f "$res/logs/$f.log" ] || continue
    echo; echo "$f:"; grep -v '^wrote ' "$res/logs/$f.log" | tr '\r' '\n' | grep -v '^ *$' | sed 's/^/  /' | tail -70
  done
  echo
  local bad=() skipped=()
  for i in "${!step_names[@]}"; do
    case "${step_status[$i]}" in
      ok) ;;
      "skipped ("*) skipped+=("${step_names[$i]} ${step_status[$i]#skipped }") ;;
      *) bad+=("${step_names[$i]}: ${step_status[$i]}") ;;
    esac
  done
  if [ ${#bad[@]} -gt 0 ]; then printf 'failed: %s\n' "${bad[@]}"; else echo "failed: none"; fi
  [ ${#skipped[@]} -eq 0 ] || printf 'skipped: %s\n' "${skipped[@]}"
}
pack() {
  summary > "$res/summary.txt" 2>&1
  cp "$res/summary.txt" "$out/summary.txt.tmp" && mv "$out/summary.txt.tmp" "$out/summary.txt"
  tar -czf "$out/results.tar.gz.tmp" -C "$work" results 2>/dev/null && mv "$out/results.tar.gz.tmp" "$out/results.tar.gz"
  [ -f "$res/chart.png" ] && cp "$res/chart.png" "$out/chart.png"
  return 0
}
pack

# ---------------------------------------------------------------- the binaries and their libraries
# Writes $work/bin/NAME: a wrapper that runs BINARY with $libpath first on LD_LIBRARY_PATH, so
# cudl's processes (also those cudl_tests and compare_torch.py start) get the kit's libraries and
# Python never does (the kit's libstdc++ may be older than the one PyTorch needs).
libpath=""
wrap() {
  local name=$1 binary=$2
  printf '#!/bin/sh\nexport LD_LIBRARY_PATH=%q${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}\nexec %q "$@"\n' "$libpath" "$binary" \
    > "$work/bin/$name"
  chmod +x "$work/bin/$name"
}
# use_binaries DIR BASE_LIBPATH: resolves the CUDA libraries of DIR/cudl and DIR/cudl_tests, writes
# the wrappers and the ldd report; returns 1 when something still does not load.
use_binaries() {
  local dir=$1 base=$2 extra
  extra=$(LD_LIBRARY_PATH=$base cudl_resolve_cuda_libs "$dir/cudl" "$dir/cudl_tests" | paste -sd:)
  libpath=$base${extra:+:$extra}
  libpath=${libpath#:}
  wrap cudl "$dir/cudl"
  wrap cudl_tests "$dir/cudl_tests"
  local ok=0 b
  : > "$res/libraries.txt"
  echo "  LD_LIBRARY_PATH=$libpath" >> "$res/libraries.txt"
  for b in cudl cudl_tests; do
    echo "  $b:" >> "$res/libraries.txt"
    LD_LIBRARY_PATH=$libpath ldd "$dir/$b" > "$res/ldd_$b.txt" 2>&1 || ok=1
    sed 's/^\s*/    /; s/ (0x[0-9a-f]*)$//' "$res/ldd_$b.txt" >> "$res/libraries.txt"
    if grep -q 'not found' "$res/ldd_$b.txt"; then ok=1; fi
  done
  [ $ok = 0 ] || return 1
  timeout 60 "$work/bin/cudl" info > "$res/info.txt" 2>&1 || return 1
  return 0
}

binaries=""
need_build=$force_rebuild reason="--rebuild"
if [ $need_build = 0 ]; then
  if [ -n "$kit" ] && [ -f "$kit/runtime.tar.gz" ] && mkdir -p "$work/runtime" &&
     tar -xzf "$kit/runtime.tar.gz" -C "$work/runtime"; then
    rt=$work/runtime
    # libstdc++ and libgcc_s: the kit's (lib/gcc) unless this machine's are newer (then they serve
    # cudl and the CUDA libraries it loads better) or this glibc is older than the kit's needs.
    newest_glibcxx() { grep -ao 'GLIBCXX_3\.4\.[0-9]*' "$1" 2>/dev/null | sort -Vu | tail -1; }
    ldconfig_bin=$(command -v ldconfig || ls /sbin/ldconfig /usr/sbin/ldconfig 2>/dev/null | head -1)
    sys_stdcxx=$("${ldconfig_bin:-ldconfig}" -p 2>/dev/null | awk '/libstdc\+\+\.so\.6 .*x86-64/ { print $NF; exit }')
    kit_v=$(newest_glibcxx "$rt/lib/gcc/libstdc++.so.6") sys_v=""
    [ -n "$sys_stdcxx" ] && sys_v=$(newest_glibcxx "$sys_stdcxx")
    glibc_v=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{ print $2 }')
    kit_glibc=$(grep -ao 'GLIBC_2\.[0-9]*' "$rt/lib/gcc/libstdc++.so.6" 2>/dev/null | sort -Vu | tail -1)
    kit_glibc=${kit_glibc#GLIBC_}
    newer() { [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | tail -1)" = "$1" ]; }
    if [ -n "$sys_v" ] && { newer "$sys_v" "$kit_v" || newer "$kit_glibc" "${glibc_v:-0}"; }; then
      base=$rt/lib stdcxx="the machine's ($sys_stdcxx, $sys_v; the kit's is $kit_v and needs glibc $kit_glibc, here ${glibc_v:-?})"
    else
      base=$rt/lib:$rt/lib/gcc stdcxx="the kit's ($kit_v; the machine's: ${sys_v:-none found})"
    fi
    echo "libstdc++: $stdcxx" >> "$res/machine.txt"
    if use_binaries "$rt/bin" "$base"; then
      binaries="prebuilt (the kit's runtime.tar.gz: bin/, libraries from its lib/)"
    else
      need_build=1 reason="the prebuilt binaries do not load: $(grep -h 'not found' "$res"/ldd_*.txt | sort -u | head -3 | tr -s '\n\t' '  ') $(tail -2 "$res/info.txt" 2>/dev/null | tr '\n' ' ')"
    fi
  else
    need_build=1 reason="no prebuilt kit (make one with tools/gpu-kit.sh)"
  fi
fi

# ---------------------------------------------------------------- rebuild (only when needed)
if [ $need_build = 1 ]; then
  say "building from source: $reason"
  echo "rebuild reason: $reason" >> "$res/machine.txt"
  s=$(now)
  build_ok=1
  if [ -n "$kit" ] && [ -f "$kit/cudl-src.tar.gz" ]; then
    src=$work/src
    mkdir -p "$src" && tar -xzf "$kit/cudl-src.tar.gz" -C "$src" || build_ok=0
    debs_dir=$kit/debs
  elif [ -n "$repo" ]; then
    src=$repo debs_dir=${CUDL_DEBS:-$repo/.deps}
  else
    build_ok=0
  fi
  # Warnings stay warnings: this machine's compiler may warn where the kit's did not.
  cmake_args=(-DCMAKE_BUILD_TYPE=Release -DCMAKE_GTEST_DISCOVER_TESTS_DISCOVERY_MODE=PRE_TEST -DCUDL_WERROR=OFF)
  command -v ninja >/dev/null && cmake_args+=(-G Ninja)
  if command -v ccache >/dev/null; then
    cmake_args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
    export CCACHE_BASEDIR=$src CCACHE_NOHASHDIR=1
  fi
  nvcc=""
  if [ $cpu = 1 ]; then
    cmake_args+=(-DCUDL_CUDA=OFF)  # the rehearsal: the CPU backend alone (minutes less on a small machine)
  else
    nvcc=${CUDACXX:-$(command -v nvcc || true)}
    [ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ] && nvcc=/usr/local/cuda/bin/nvcc
    [ -n "$nvcc" ] || say "no nvcc: the rebuild has no CUDA backend"
  fi
  if [ -n "$nvcc" ]; then
    # shellcheck disable=SC2034  # read by cudl_find_root
    cuda_home=$(cd "$(dirname "$nvcc")/.." && pwd)
    cudnn_root=${CUDNN_ROOT:-$(cudl_find_root cudnn.h cudnn || true)}
    cublas_root=${CUBLAS_ROOT:-$(cudl_find_root cublas_v2.h cublas || true)}
    say "nvcc $nvcc; cuDNN ${cudnn_root:-NOT FOUND}; cuBLAS ${cublas_root:-NOT FOUND}"
    cmake_args+=("-DCMAKE_CUDA_COMPILER=$nvcc" -DCUDL_CUDA=ON)
    [ -n "$cudnn_root" ] && cmake_args+=("-DCUDNN_ROOT=$cudnn_root")
    [ -n "$cublas_root" ] && cmake_args+=("-DCUBLAS_ROOT=$cublas_root")
    if [ -n "$compute_cap" ]; then arch=${compute_cap/./}; cmake_args+=("-DCMAKE_CUDA_ARCHITECTURES=${arch}-real;${arch}-virtual"); fi
  fi
  # Host libraries: from the kit's .debs where the headers are missing (or when asked to).
  saved_ld=${LD_LIBRARY_PATH:-}
  deps_ld=""
  missing=$(cudl_missing_host_headers | xargs)
  if [ $build_ok = 1 ] && { [ -n "$missing" ] || [ "${CUDL_CHECK_USE_DEBS:-0}" = 1 ]; }; then
    say "host headers missing: ${missing:-none (CUDL_CHECK_USE_DEBS=1)}; using the .debs in $debs_dir"
    if cudl_use_debs "$debs_dir" "$work/deps" >> "$res/logs/rebuild.log" 2>&1; then
      deps_ld=${LD_LIBRARY_PATH%"${saved_ld:+:$saved_ld}"}
    else
      build_ok=0
    fi
  fi
  if [ $build_ok = 1 ]; then
    # LD_LIBRARY_PATH (the .debs' libraries) stays set for the build: CMake's checks link and run.
    step rebuild_configure 120 cmake -S "$src" -B "$work/build" "${cmake_args[@]}" &&
      step rebuild $((budget * 2 / 3)) cmake --build "$work/build" -j "$(nproc)" --target cudl_cli cudl_tests
    build_ok=$(( $? == 0 ))
  else
    record rebuild "FAILED (no source or no .debs; see logs/rebuild.log)" $(($(now) - s))
  fi
  export LD_LIBRARY_PATH=$saved_ld
  [ -n "$LD_LIBRARY_PATH" ] || unset LD_LIBRARY_PATH
  if [ $build_ok = 1 ]; then
    # Not the kit's lib/: its libstdc++ may be older than this machine's compiler needs.
    if use_binaries "$work/build" "$deps_ld"; then
      binaries="rebuilt here from $( [ -n "$kit" ] && echo "the kit's cudl-src.tar.gz" || echo "$src") ($reason)"
    else
      record rebuilt_binaries "FAILED (they do not load either: see libraries.txt, info.txt)" 0
    fi
  fi
fi
if [ -z "$binaries" ]; then
  say "no binaries that load: nothing more to run"
  [ -n "$reason" ] && echo "why: $reason" >> "$res/machine.txt"
  failed=1; pack; cat "$out/summary.txt"; exit 1
fi
cudl=$work/bin/cudl tests=$work/bin/cudl_tests

# ---------------------------------------------------------------- preflight
s=$(now)
{
  echo "== cudl info"; cat "$res/info.txt"
  echo; echo "== ldd cudl"; cat "$res/ldd_cudl.txt"
  echo; echo "== nvidia-smi"; cat "$res/nvidia-smi.txt" 2>/dev/null || echo "(none)"
} > "$res/logs/preflight.log"
cat "$res/info.txt"
if [ $cpu = 0 ] && ! grep -q '^cuda:0' "$res/info.txt"; then
  record preflight "FAILED (cudl info lists no CUDA device)" $(($(now) - s))
else
  record preflight ok $(($(now) - s))
fi
pack

# ---------------------------------------------------------------- tests
export CUDL_TEST_SOURCE_DIR=$root CUDL_TEST_CLI=$cudl
# counts NAME: passed, failed, skipped and skipped-for-"no CUDA device" from the gtest log (per-test
# lines, so a run cut short counts too).
counts() {
  local log=$res/logs/$1.log
  local p f k n
  [ -f "$log" ] || { echo "0 0 0 0"; return; }
  p=$(grep -cE '^\[ +OK \] .* \([0-9]+ ms\)$' "$log")
  f=$(grep -cE '^\[ +FAILED +\] .* \([0-9]+ ms\)$' "$log")
  k=$(grep -cE '^\[ +SKIPPED +\] .* \([0-9]+ ms\)$' "$log")
  n=$(grep -c '^no CUDA device' "$log")
  echo "$p passed, $f failed, $k skipped ($n of them: no CUDA device) ($((p + f + k)) run)" > "$res/$1.counts"
  if [ "$f" -gt 0 ]; then
    grep -E '^\[ +FAILED +\] .* \([0-9]+ ms\)$' "$log" | sed 's/^\[ *FAILED *\] /  failed: /' | head -20 >> "$res/$1.counts"
  fi
  echo "$p $f $k $n"
}
# On the GPU machine a CUDA test skipped for "no CUDA device" means cudl did not see the GPU.
no_device_check() {
  local p f k n
  read -r p f k n < <(counts "$1")
  if [ $cpu = 0 ] && [ "$n" -gt 0 ]; then
    record "$1_on_gpu" "FAILED ($n tests skipped: no CUDA device)" 0
  fi
}
if [ $cpu = 1 ]; then cuda_cap=120 other_cap=240; else cuda_cap=150 other_cap=150; fi
step tests_cuda $cuda_cap "$tests" --gtest_filter="$cuda_filter" --gtest_output="xml:$res/tests_cuda.xml"
no_device_check tests_cuda

# ---------------------------------------------------------------- mixed precision against PyTorch
# compare_torch_half PRECISION: vgg19 at batch 1, 32 and 64 and an Adam style iteration at 512 and 1024
# px, in bf16 or fp16 on both sides, with both sides' peak memory (GPU only;
# the rehearsal records a skip: --precision is refused for the CPU).
compare_torch_half() {
  local name=compare_torch_$1
  if ! wanted "$name"; then
    record "$name" "skipped (not in --only $only)" 0
  elif [ -z "$torch_version" ] || [ $cpu = 1 ]; then
    record "$name" "skipped (no PyTorch, or no GPU)" 0
  else
    step "$name" 150 "$python" "$root/bench/compare_torch.py" --cudl "$cudl" --device cuda \
      --models vgg19 --batch-sizes 1,32,64 --precision "$1" --repeat 5 --style 512,1024 --style-optimizers adam \
      --json "$res/$name.json"
  fi
}
compare_torch_half bf16
compare_torch_half fp16

# ---------------------------------------------------------------- channels_last against NCHW
# The same bench with the convolutions' activations stored NHWC and NCHW, alternated (nchw,
# channels_last, nchw, channels_last) so that both see the GPU in the same state; the train step and
# inference rows of each run are in the log (and the summary), the JSONs in results.tar.gz. About 4 x
# 10 s on an H100 (process start, the measured algorithm search, 5 repeats of each row).
if [ $cpu = 1 ]; then mf_args=(--device cpu --models mnist_cnn --batch-sizes 16 --repeat 2)
else mf_args=(--device cuda --models vgg19 --batch-sizes 32 --repeat 5); fi
# shellcheck disable=SC2016  # expanded by the inner shell
step memory_format 90 bash -c 'cudl=$1 res=$2; shift 2
  for round in 1 2; do
    for f in nchw channels_last; do
      echo "== round $round: --memory-format $f"
      "$cudl" bench "$@" --precision bf16 --memory-format "$f" --json "$res/memory_format_${f}_$round.json" || exit 1
    done
  done' memory_format "$cudl" "$res" "${mf_args[@]}"

# ---------------------------------------------------------------- benchmarks
# The GPU's kernels first (seconds); their speed-up over the CPU later (kernels_vs_cpu), since the
# CPU side at VGG19 sizes is the slow half and must not cost the GPU numbers if it runs out of time.
if [ $cpu = 1 ]; then
  sizes=small
  step kernels 60 "$cudl" bench --device cpu --sizes small --repeat 3 --json "$res/kernels.json"
  step models 60 "$cudl" bench --device cpu --models mnist_cnn --batch-sizes 16 --repeat 2 --json "$res/models.json"
  style_sizes="64 128" style_iters=3
else
  sizes=vgg
  step kernels 60 "$cudl" bench --device cuda --sizes vgg --repeat 10 --json "$res/kernels.json"
  step models 120 "$cudl" bench --device cuda --models vgg19,mnist_cnn --repeat 10 --json "$res/models.json"
  style_sizes="512 1024" style_iters=30
fi
for size in $style_sizes; do
  step "style_$size" 90 "$cudl" style --weights random:1 --content "$root/tests/data/chelsea.png" \
    --style "$root/tests/data/brick.png" --size "$size" --iters "$style_iters" --print-every "$style_iters" \
    --device "$dev" --conv-algo measured --output "$res/style_$size.png" --log "$res/style_$size.csv"
done
# CUDA graphs (issue 24, engine/step_graph.hpp): vgg19's batch-1 train step (forward, loss, backward,
# Adam: models/train/step_capture.hpp) and inference and the 512 px style iteration replayed, beside
# the plain rows of models and style_512 above (same settings otherwise).
if [ $cpu = 0 ]; then
  step models_graphs 60 "$cudl" bench --device cuda --models vgg19 --batch-sizes 1 --repeat 10 --cuda-graphs true \
    --json "$res/models_graphs.json"
  step style_512_graphs 60 "$cudl" style --weights random:1 --content "$root/tests/data/chelsea.png" \
    --style "$root/tests/data/brick.png" --size 512 --iters 30 --print-every 30 --device cuda --conv-algo measured \
    --cuda-graphs true --output "$res/style_512_graphs.png" --log "$res/style_512_graphs.csv"
fi
if [ -n "$torch_version" ]; then
  if [ $cpu = 1 ]; then
    step compare_torch 90 "$python" "$root/bench/compare_torch.py" --cudl "$cudl" --device cpu --models mnist_cnn \
      --batch-sizes 16 --repeat 2 --json "$res/compare_torch.json"
  else
    step compare_torch 150 "$python" "$root/bench/compare_torch.py" --cudl "$cudl" --device cuda \
      --models vgg19,mnist_cnn --repeat 5 --json "$res/compare_torch.json"
    # Each engine untouched (issue 24's target: every VGG19 row at least 1.2x PyTorch's defaults),
    # with the 512 px style iteration (Adam and L-BFGS) and both sides' peak memory.
    step compare_torch_defaults 150 "$python" "$root/bench/compare_torch.py" --cudl "$cudl" --device cuda \
      --defaults --models vgg19 --style 512 --repeat 5 --json "$res/compare_torch_defaults.json"
  fi
elif ! wanted compare_torch; then
  record compare_torch "skipped (not in --only $only)" 0
elif [ $cpu = 1 ]; then
  record compare_torch "skipped (no PyTorch for ${python:-python3}; not needed for a rehearsal)" 0
else
  record compare_torch "FAILED (no python3 with PyTorch found; set PYTHON)" 0
fi

step kernels_vs_cpu 150 "$cudl" bench --device cpu,cuda --sizes $sizes --repeat 5 --json "$res/kernels_vs_cpu.json"

# ---------------------------------------------------------------- where VGG19's time goes, and training
# vgg19 at batch 64 layer by layer under cuDNN's heuristic choice and the measured one; the PyTorch
# comparison again in TF32 (both sides); real MNIST trained on the device (the kit's data/mnist).
if [ $cpu = 1 ]; then prof_model=mnist_cnn prof_batch=16; else prof_model=vgg19 prof_batch=64; fi
for search in heuristic measured; do
  step "profile_$search" 60 "$cudl" bench --device "$dev" --models $prof_model --batch-sizes $prof_batch --repeat 3 \
    --profile --conv-algo $search --json "$res/profile_$search.json"
done
if [ -n "$torch_version" ] && [ $cpu = 0 ]; then
  step compare_torch_tf32 120 "$python" "$root/bench/compare_torch.py" --cudl "$cudl" --device cuda \
    --models vgg19 --precision tf32 --repeat 5 --json "$res/compare_torch_tf32.json"
elif ! wanted compare_torch_tf32; then
  record compare_torch_tf32 "skipped (not in --only $only)" 0
else
  record compare_torch_tf32 "skipped (no PyTorch, or no GPU)" 0
fi
if [ -f "$root/data/mnist/train-images-idx3-ubyte.gz" ]; then
  if [ $cpu = 1 ]; then train_args=(--model mlp --epochs 1); else train_args=(--model mnist_cnn --epochs 3); fi
  step train_mnist 120 "$cudl" train "${train_args[@]}" --data "$root/data/mnist" --device "$dev" \
    --metrics-json "$res/train_mnist.json" --save "$work/train_mnist.safetensors"
else
  record train_mnist "skipped (the kit holds no data/mnist)" 0
fi

# ---------------------------------------------------------------- the other tests, then the chart
# Without the end-to-end training runs (minutes on a CPU); in the rehearsal also without the
# training and model suites (a 2-core machine would spend the whole budget there).
if [ $cpu = 1 ]; then other_filter='-*cuda*:*Cuda*:*CUDA*:EndToEnd.*:Training.*:*Models*:*Vgg*:ClassifyCli.*'
else other_filter='-*cuda*:*Cuda*:*CUDA*:EndToEnd.*'; fi
step tests_other $other_cap "$tests" --gtest_filter="$other_filter" --gtest_output="xml:$res/tests_other.xml"
no_device_check tests_other
if ! wanted chart; then
  record chart "skipped (not in --only $only)" 0
elif [ -n "$python" ] && "$python" -c 'import matplotlib' 2>/dev/null; then
  jsons=()
  if [ -s "$res/kernels_vs_cpu.json" ]; then jsons+=("$res/kernels_vs_cpu.json"); elif [ -s "$res/kernels.json" ]; then jsons+=("$res/kernels.json"); fi
  [ -s "$res/models.json" ] && jsons+=("$res/models.json")
  if [ ${#jsons[@]} -gt 0 ]; then
    step chart 30 "$python" "$root/tools/bench_chart.py" "${jsons[@]}" -o "$res/chart.png" \
      --title "cudl gpu-check, ${gpu_name:-CPU} ($(date +%F))"
  fi
else
  record chart "skipped (no matplotlib for ${python:-python3})" 0
fi

pack
cat "$out/summary.txt"
echo
say "wrote $out: $(cd "$out" && ls -l | awk 'NR > 1 { printf "%s (%s bytes) ", $9, $5 }')"
exit $failed
