# shellcheck shell=bash
# Helpers shared by tools/gpu-bench.sh and tools/gpu-check.sh: finding PyTorch's Python, cuDNN and
# cuBLAS (in the CUDA toolkit or in PyTorch's nvidia wheels), the CUDA libraries a binary loads,
# and building against Debian .debs unpacked with `dpkg -x` into a prefix (never into /).
# Sourced, not run: it only defines functions. Callers may set dry_run=1 (commands are printed by
# cudl_run instead of run).

# Runs a command, or prints it when $dry_run is 1.
cudl_run() {
  if [ "${dry_run:-0}" = 1 ]; then echo "  + $*"; else "$@"; fi
}

# Sets $python: the first of $PYTHON, python3, /usr/bin/python3 that imports torch (its wheels may
# hold cuDNN and cuBLAS), else the first that exists, else empty.
cudl_find_python() {
  python=""
  local p
  for p in "${PYTHON:-}" python3 /usr/bin/python3; do
    if [ -z "$p" ] || ! command -v "$p" >/dev/null; then continue; fi
    [ -z "$python" ] && python=$(command -v "$p")
    if "$p" -c 'import torch' 2>/dev/null; then python=$(command -v "$p"); break; fi
  done
}

# The folder whose include/ holds HEADER, searched in the toolkit ($cuda_home) and in PyTorch's
# nvidia wheels (module nvidia.MODULE, then any nvidia/*/include); needs $python (may be empty).
cudl_find_root() {
  local header=$1 module=$2 dir
  for dir in "${cuda_home:-/nonexistent}" "${cuda_home:-/nonexistent}/targets/$(uname -m)-linux"; do
    [ -f "$dir/include/$header" ] && { echo "$dir"; return 0; }
  done
  [ -n "${python:-}" ] || return 1
  # e.g. site-packages/nvidia/cudnn (cuDNN) or nvidia/cublas, nvidia/cu13 (cuBLAS, by wheel version)
  dir=$("$python" -c "import nvidia.$module, os; print(os.path.dirname(nvidia.$module.__file__))" 2>/dev/null || true)
  [ -n "$dir" ] && [ -f "$dir/include/$header" ] && { echo "$dir"; return 0; }
  local base
  for base in $(cudl_nvidia_wheel_bases); do
    dir=$(find "$base" -maxdepth 3 -name "$header" -path '*/include/*' 2>/dev/null | head -1)
    [ -n "$dir" ] && { dirname "$(dirname "$dir")"; return 0; }
  done
  return 1
}

# The folders of the `nvidia` namespace package (PyTorch's CUDA wheels), one a line; needs $python.
cudl_nvidia_wheel_bases() {
  [ -n "${python:-}" ] || return 0
  "$python" -c 'import nvidia; print("\n".join(list(nvidia.__path__)))' 2>/dev/null || true
}

# Folders that may hold the CUDA libraries (cudart, cuDNN, cuBLAS, NCCL, NVRTC), most trusted
# first: $CUDA_HOME, the toolkit in /usr/local, then every lib/ folder of PyTorch's nvidia wheels.
cudl_cuda_lib_candidates() {
  local d base
  for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda $(ls -d /usr/local/cuda-* 2>/dev/null | sort -rV); do
    [ -n "$d" ] || continue
    for sub in lib64 lib "targets/$(uname -m)-linux/lib"; do
      [ -d "$d/$sub" ] && echo "$d/$sub"
    done
  done
  for base in $(cudl_nvidia_wheel_bases); do
    for d in "$base"/*/lib; do [ -d "$d" ] && echo "$d"; done
  done
}

# cudl_resolve_cuda_libs BINARY...: prints the folders to put on LD_LIBRARY_PATH, one a line, so
# that the CUDA libraries the binaries load (and any other library ldd cannot find) resolve:
# each is looked up by file name in cudl_cuda_lib_candidates, first hit wins. Also NVRTC, which
# cuDNN opens at run time for its runtime-compiled engines. Runs ldd with the current
# LD_LIBRARY_PATH plus the folders found so far, three rounds (a found library can need others,
# e.g. cuBLAS needs cuBLASLt). Folders already on LD_LIBRARY_PATH are not printed again.
cudl_resolve_cuda_libs() {
  local -a dirs=() candidates=()
  mapfile -t candidates < <(cudl_cuda_lib_candidates)
  local round name d found
  for round in 1 2 3; do
    local extra
    extra=$(IFS=:; echo "${dirs[*]}")
    local -a wanted=()
    # Every CUDA library the binaries name, found or not (we choose where it comes from), and
    # anything else ldd cannot find.
    mapfile -t wanted < <(
      for b in "$@"; do LD_LIBRARY_PATH="$extra${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$b" 2>/dev/null; done |
        awk '/=>/ { if ($1 ~ /^lib(cudart|cudnn|cublas|cublasLt|nccl|nvrtc|nvJitLink)[._]/ || $3 == "not") print $1 }' |
        sort -u)
    [ "$round" = 1 ] && wanted+=(libnvrtc.so.13)
    local changed=0
    for name in "${wanted[@]}"; do
      found=""
      for d in "${dirs[@]}"; do [ -e "$d/$name" ] && found=$d && break; done
      [ -n "$found" ] && continue
      for d in "${candidates[@]}"; do
        if [ -e "$d/$name" ]; then
          dirs+=("$d"); changed=1; break
        fi
      done
    done
    [ $changed = 1 ] || break
  done
  for d in "${dirs[@]}"; do
    case ":${LD_LIBRARY_PATH:-}:" in *":$d:"*) ;; *) echo "$d" ;; esac
  done
}

# Host headers the build needs, printed when missing from /usr/include and /usr/local/include.
cudl_missing_host_headers() {
  local h f have_cblas=0
  for h in fmt/format.h CLI/CLI.hpp nlohmann/json.hpp gtest/gtest.h png.h jpeglib.h zlib.h; do
    [ -f "/usr/include/$h" ] || [ -f "/usr/local/include/$h" ] || echo "$h"
  done
  for f in /usr/include/cblas.h /usr/include/*/cblas.h /usr/include/*/openblas*/cblas.h /usr/include/openblas/cblas.h; do
    [ -f "$f" ] && have_cblas=1
  done
  [ $have_cblas -eq 1 ] || echo cblas.h
}

# cudl_use_debs DEBS PREFIX: unpacks every .deb in DEBS into PREFIX with dpkg -x, appends the
# CMake arguments that point at it to the array cmake_args, and exports LD_LIBRARY_PATH,
# LIBRARY_PATH and CPATH. Returns 1 (with a message) when DEBS holds no .deb.
cudl_use_debs() {
  local debs=$1 prefix=$2 f
  if ! ls "$debs"/*.deb >/dev/null 2>&1; then
    echo "no .deb files in '$debs' (make them on a Debian 12 machine with tools/fetch-deps-debs.sh)" >&2
    return 1
  fi
  echo "unpacking $(find "$debs" -maxdepth 1 -name '*.deb' | wc -l) .debs from $debs into $prefix (dpkg -x, not into /)"
  cudl_run mkdir -p "$prefix"
  for f in "$debs"/*.deb; do
    [ -f "$f" ] && cudl_run dpkg -x "$f" "$prefix"
  done
  # Debian's -dev links can be absolute (zlib1g-dev: libz.so -> /lib/x86_64-linux-gnu/libz.so.1.2.13),
  # which names the host's file, absent or another version there: point them into the prefix.
  if [ "${dry_run:-0}" != 1 ]; then
    local link target
    while IFS= read -r link; do
      target=$(readlink "$link")
      [ -e "$prefix$target" ] && ln -sfn "$prefix$target" "$link"
    done < <(find "$prefix" -type l -lname '/*')
  fi
  local arch_dir multiarch
  multiarch=$(uname -m)-linux-gnu
  arch_dir=$prefix/usr/lib/$multiarch
  # dpkg -x runs no maintainer scripts, so update-alternatives' libopenblas.so link is absent:
  # name the library itself.
  cmake_args+=("-DCMAKE_PREFIX_PATH=$prefix/usr" "-DOPENBLAS_LIBRARY=$arch_dir/openblas-pthread/libopenblas.so"
               "-DCBLAS_INCLUDE_DIR=$prefix/usr/include/$(uname -m)-linux-gnu/openblas-pthread")
  # zlib1g keeps libz.so.1 in /lib/<multiarch>, not /usr/lib.
  export LD_LIBRARY_PATH="$arch_dir:$arch_dir/openblas-pthread:$prefix/lib/$multiarch${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export LIBRARY_PATH="$arch_dir:$arch_dir/openblas-pthread:$prefix/lib/$multiarch${LIBRARY_PATH:+:$LIBRARY_PATH}"
  # jpeglib.h includes jconfig.h, which Debian keeps in the multiarch include folder.
  CPATH="$prefix/usr/include:$prefix/usr/include/$(uname -m)-linux-gnu${CPATH:+:$CPATH}"
  export CPATH
}
