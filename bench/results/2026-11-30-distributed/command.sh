#!/usr/bin/env bash
# One epoch of mnist_cnn on real MNIST (tools/fetch-mnist.sh), the same command as 1 process x 2
# OpenMP threads and as 2 MPI ranks x 1 thread; the load average is recorded before and after each.
# Usage: bench/results/2026-11-30-distributed/command.sh [BUILD_DIR] [DATA_DIR] [reverse]
# (reverse: the two ranks first, into files named *-second.txt: a second pair, the other order)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cudl=${1:-build-cpu}/cudl
data=${2:-data/mnist}
order=${3:-}
tag=; [ "$order" = reverse ] && tag=-second
root=()
[ "$(id -u)" -eq 0 ] && root=(--allow-run-as-root)
args=(train --model mnist_cnn --data "$data" --device cpu --epochs 1 --batch-size 128 --seed 1)
run() {  # NAME COMMAND...
  local name=$1; shift
  echo "=== $name: $*" | tee "$here/$name.txt"
  echo "loadavg before: $(cat /proc/loadavg)" | tee -a "$here/$name.txt"
  /usr/bin/time -f "elapsed %e s, max RSS %M KiB (per process)" "$@" --save "/tmp/$name.st" \
    >> "$here/$name.txt" 2> "$here/$name.progress.txt" || { tail -5 "$here/$name.progress.txt"; exit 1; }
  tail -1 "$here/$name.progress.txt" >> "$here/$name.txt"
  echo "loadavg after: $(cat /proc/loadavg)" | tee -a "$here/$name.txt"
}
one() { run one-process-2-threads$tag env OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 "$cudl" "${args[@]}"; }
two() {
  run two-ranks-1-thread$tag mpirun "${root[@]}" --oversubscribe -np 2 -x OMP_NUM_THREADS=1 -x OPENBLAS_NUM_THREADS=1 \
    "$cudl" "${args[@]}"
}
if [ "$order" = reverse ]; then two; one; else one; two; fi
