#!/usr/bin/env bash
# Data parallel on CPU ranks against one process (issue 27's targets), on real MNIST:
#   1 process x 1 thread, 2 MPI ranks x 1 thread (buckets under backward, --bucket-mb 25 and a
#   small 0.5 MB, the latter also with --shard-update false: every rank running the whole optimizer
#   step after an all-reduce), 1 process x 2 threads, and the machine's ceiling for two ranks: two independent
#   1-thread processes at once, each with a rank's share (batch 64, half the images), no
#   communication, their img/s summed (what two ranks could reach if the all-reduce and the
#   lock-step cost nothing: on a VM whose two CPUs share a core's caches or memory bandwidth it is
#   below 2x); MODEL (default mnist_cnn; any --model, e.g. vgg11_cifar on
#   data/cifar10), --subset IMAGES, one epoch, global batch 128.
# Prints each run's training images/s (the epoch line) and rank 0's all-reduce wait.
#   bash bench/dp_cpu.sh [CUDL] [DATA] [IMAGES] [REPEAT] [MODEL] > OUT.txt
set -euo pipefail
cudl=${1:-build/cudl} data=${2:-data/mnist} images=${3:-12800} repeat=${4:-2} model=${5:-mnist_cnn}
common=(train --model "$model" --data "$data" --device cpu --epochs 1 --subset "$images" --batch-size 128 --seed 1)
root=$([ "$(id -u)" = 0 ] && echo --allow-run-as-root || true)
echo "model: $model; machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); commit $(git rev-parse --short HEAD 2>/dev/null || echo ?)"
run() {
  local name=$1; shift
  local load; load=$(cut -d' ' -f1-3 /proc/loadavg)
  local out; out=$("$@" 2>&1)
  local ips; ips=$(grep -o 'epoch   1: .*' <<<"$out" | grep -o '[0-9.]* s, [0-9]* img/s' | head -1 || true)
  local wait; wait=$(grep -o 'rank 0 waited .*' <<<"$out" || true)
  echo "$name | load before $load | ${ips:-?} | ${wait:--}"
}
# Two independent processes at once, each a rank's share of the work; prints their summed img/s.
ceiling() {
  local load; load=$(cut -d' ' -f1-3 /proc/loadavg)
  local half=(train --model "$model" --data "$data" --device cpu --epochs 1 --subset $((images / 2)) --batch-size 64)
  local a b; a=$(mktemp) b=$(mktemp)
  OMP_NUM_THREADS=1 "$cudl" "${half[@]}" --seed 1 --threads 1 >"$a" 2>&1 &
  OMP_NUM_THREADS=1 "$cudl" "${half[@]}" --seed 2 --threads 1 >"$b" 2>&1 &
  wait
  local ia ib; ia=$(grep -o 'epoch   1: .*' "$a" | grep -o '[0-9]* img/s' | head -1 | cut -d' ' -f1)
  ib=$(grep -o 'epoch   1: .*' "$b" | grep -o '[0-9]* img/s' | head -1 | cut -d' ' -f1)
  rm -f "$a" "$b"
  echo "ceiling: 2 independent processes x 1 thread, batch 64 each | load before $load | ${ia:-?} + ${ib:-?} = $(( ${ia:-0} + ${ib:-0} )) img/s | -"
}
for r in $(seq "$repeat"); do
  run "1 process x 1 thread" env OMP_NUM_THREADS=1 "$cudl" "${common[@]}" --threads 1
  run "2 ranks x 1 thread, --bucket-mb 25" mpirun -np 2 $root -x OMP_NUM_THREADS=1 "$cudl" "${common[@]}" --threads 1
  run "2 ranks x 1 thread, --bucket-mb 0.5" mpirun -np 2 $root -x OMP_NUM_THREADS=1 "$cudl" "${common[@]}" --threads 1 --bucket-mb 0.5
  run "2 ranks x 1 thread, --bucket-mb 0.5 --shard-update false" mpirun -np 2 $root -x OMP_NUM_THREADS=1 "$cudl" "${common[@]}" --threads 1 --bucket-mb 0.5 --shard-update false
  run "1 process x 2 threads" "$cudl" "${common[@]}" --threads 2
  ceiling
done
