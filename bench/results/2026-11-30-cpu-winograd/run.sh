#!/usr/bin/env bash
# Quiet-machine CPU comparison against PyTorch, all targets of issue 15, one run.
set -euo pipefail
out=$1; cudl=${2:-build-cpu/cudl}
mkdir -p "$out"
log() { echo "$(date -u +%T) loadavg $(cut -d' ' -f1-3 /proc/loadavg) $*" | tee -a "$out/meta.txt"; }
{ echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, $(free -g | awk '/Mem/{print $2}') GiB";
  echo "cudl commit $(git rev-parse --short HEAD)"; echo "threads: 2 each (compare_torch --threads 2)";
  $cudl info | grep -i "dnn\|blas"; } > "$out/meta.txt"
log "start compare vgg19 b1"
/usr/bin/python3 bench/compare_torch.py --cudl $cudl --device cpu --threads 2 --models vgg19 --batch-sizes 1 --json "$out/compare_vgg19.json" | tee "$out/compare_vgg19.txt"
log "start compare vgg11_cifar b64"
/usr/bin/python3 bench/compare_torch.py --cudl $cudl --device cpu --threads 2 --models vgg11_cifar --batch-sizes 64 --json "$out/compare_vgg11_cifar.json" | tee "$out/compare_vgg11_cifar.txt"
log "start compare mlp,mnist_cnn b128"
/usr/bin/python3 bench/compare_torch.py --cudl $cudl --device cpu --threads 2 --models mlp,mnist_cnn --batch-sizes 128 --json "$out/compare_small.json" | tee "$out/compare_small.txt"
log "start compare style 128,512"
/usr/bin/python3 bench/compare_torch.py --cudl $cudl --device cpu --threads 2 --models "" --style 128,512 --style-optimizers adam,lbfgs --json "$out/compare_style.json" | tee "$out/compare_style.txt"
log "start kernels vgg"
OMP_NUM_THREADS=2 $cudl bench --device cpu --sizes vgg --ops gemm,conv2d_fwd,conv2d_bwd_data,conv2d_bwd_filter --repeat 3 --json "$out/kernels_vgg.json" | tee "$out/kernels_vgg.txt"
log "done"
