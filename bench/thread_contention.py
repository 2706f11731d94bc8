#!/usr/bin/env python3
"""Training throughput on a shared CPU: quiet, then beside busy competitors, cudl and PyTorch.

Issue 23's target: with two competing busy processes on the 2-core VM, cudl's default settings
keep at least 40% of its quiet training throughput. Measured here, side by side with PyTorch:

  quiet          nothing else running (the script refuses to start when the 1-minute load average
                 is above --max-load, because then "quiet" would not be)
  N competitors  N processes that each spin one core (a `while True: pass` loop), started before
                 and stopped after each measurement

and, for each condition, these configurations:

  cudl default   `cudl train` as a user runs it: --threads auto, OpenMP's bounded spin
                 (GOMP_SPINCOUNT=30000, then sleep; tools/cudl/threads.hpp)
  cudl passive   issue 23's default: --threads auto, OMP_WAIT_POLICY=passive
  cudl old       what cudl did before issue 23: every core, OpenMP's spinning waits
                 (--threads <cores>, OMP_WAIT_POLICY=active)
  cudl 1 thread  --threads 1
  torch          PyTorch's CPU training of the same network (bench/compare_torch.py's mnist_cnn
                 twin), torch.set_num_threads(<cores>), its default waiting

Throughput is images per second of training steps: for cudl the epoch line's img/s of `cudl train
--model mnist_cnn --subset S --epochs 1` on MNIST (the test pass is not in it); for PyTorch the
same batch size over the same number of steps on the same images, after two warm-up steps.
Each configuration runs --runs times; the median is kept.

  tools/fetch-mnist.sh && tools/build.sh build-cpu -DCUDL_CUDA=OFF
  /usr/bin/python3 bench/thread_contention.py --cudl build-cpu/cudl --data data/mnist \\
      --out bench/results/$(date +%F)-thread-contention

Writes OUT/results.json (the machine, the commit, the load average before each run, every sample)
and OUT/results.md (the table); prints the table.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def load_average():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def start_competitors(n):
    spin = [sys.executable, "-c", "while True: pass"]
    procs = [subprocess.Popen(spin) for _ in range(n)]
    time.sleep(1.0)  # let the scheduler see them
    return procs


def stop(procs):
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait()


def cudl_images_per_second(args, extra, env_extra):
    env = dict(os.environ)
    for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env.pop(k, None)
    env.update(env_extra)
    cmd = [args.cudl, "train", "--model", "mnist_cnn", "--data", args.data, "--epochs", "1", "--subset",
           str(args.subset), "--batch-size", str(args.batch_size), "--device", "cpu"] + extra
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    m = re.search(r"^epoch\s+1: .*\|\s*[\d.]+ s, (\d+) img/s", out, re.M)
    if not m:
        sys.exit("thread_contention: no epoch line in cudl's output:\n" + out)
    return float(m.group(1))


TORCH_SNIPPET = r"""
import sys, time, os
import numpy as np
threads, batch, steps, data = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
import torch, torch.nn as nn
torch.set_num_threads(threads)
torch.manual_seed(1)
with open(os.path.join(data, "train-images-idx3-ubyte"), "rb") as f:
    raw = np.frombuffer(f.read(), dtype=np.uint8, offset=16)
with open(os.path.join(data, "train-labels-idx1-ubyte"), "rb") as f:
    labels = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
n = batch * (steps + 2)
x = torch.from_numpy(raw[: n * 784].astype(np.float32) / 255.0).reshape(n, 1, 28, 28)
y = torch.from_numpy(labels[:n].astype(np.int64))
model = nn.Sequential(
    nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25),
    nn.Flatten(), nn.Linear(4608, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10))
opt = torch.optim.Adam(model.parameters(), lr=3e-3)
loss_fn = nn.CrossEntropyLoss()
model.train()
def step(i):
    xb, yb = x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]
    opt.zero_grad()
    loss_fn(model(xb), yb).backward()
    opt.step()
step(0); step(1)
t0 = time.perf_counter()
for i in range(2, steps + 2):
    step(i)
print(batch * steps / (time.perf_counter() - t0))
"""


def torch_images_per_second(args, threads):
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)  # PyTorch's pool sizes itself from it when it loads
    for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        env.pop(k, None)
    steps = max(1, args.subset // args.batch_size)
    out = subprocess.run([args.python, "-c", TORCH_SNIPPET, str(threads), str(args.batch_size), str(steps), args.data],
                         env=env, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cudl", default=os.path.join(HERE, "..", "build-cpu", "cudl"))
    ap.add_argument("--data", default=os.path.join(HERE, "..", "data", "mnist"), help="MNIST IDX folder")
    ap.add_argument("--python", default="/usr/bin/python3", help="a Python with PyTorch (Debian: python3-torch)")
    ap.add_argument("--competitors", default="0,2", help="comma-separated numbers of busy competitors")
    ap.add_argument("--subset", type=int, default=6400, help="training images per run (50 steps of 128)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3, help="runs per configuration (the median is kept)")
    ap.add_argument("--max-load", type=float, default=1.5,
                    help="refuse to start when the 1-minute load average is above this (the quiet numbers would not be)")
    ap.add_argument("--no-torch", action="store_true", help="cudl only")
    ap.add_argument("--out", help="write results.json and results.md into this folder")
    args = ap.parse_args()

    cores = os.cpu_count() or 1
    before = load_average()
    if before[0] > args.max_load:
        sys.exit(f"thread_contention: the 1-minute load average is {before[0]:.2f} (> --max-load {args.max_load}): "
                 "the machine is not quiet; run again later")
    configs = [
        ("cudl default (--threads auto, bounded spin)", lambda: cudl_images_per_second(args, [], {})),
        ("cudl issue 23 default (--threads auto, OMP_WAIT_POLICY=passive)",
         lambda: cudl_images_per_second(args, [], {"OMP_WAIT_POLICY": "passive"})),
        (f"cudl before issue 23 (--threads {cores}, OMP_WAIT_POLICY=active)",
         lambda: cudl_images_per_second(args, ["--threads", str(cores)], {"OMP_WAIT_POLICY": "active"})),
        ("cudl --threads 1", lambda: cudl_images_per_second(args, ["--threads", "1"], {})),
    ]
    if not args.no_torch:
        configs.append((f"PyTorch (set_num_threads({cores}))", lambda: torch_images_per_second(args, cores)))

    competitors = [int(c) for c in args.competitors.split(",")]
    rows = []
    for name, run in configs:
        for n in competitors:
            samples, loads = [], []
            for _ in range(args.runs):
                procs = start_competitors(n)
                try:
                    loads.append(load_average()[0])
                    samples.append(run())
                finally:
                    stop(procs)
            rows.append({"config": name, "competitors": n, "images_per_second": statistics.median(samples),
                         "samples": samples, "load_average_1min_at_start": loads})
            print(f"{name:<62} {n} competitors: {statistics.median(samples):8.0f} img/s  {samples}", flush=True)

    quiet = {r["config"]: r["images_per_second"] for r in rows if r["competitors"] == 0}
    lines = ["| configuration | " + " | ".join(f"{n} competitors" for n in competitors) + " |",
             "|---|" + "---|" * len(competitors)]
    for name, _ in configs:
        cells = []
        for n in competitors:
            r = next(r for r in rows if r["config"] == name and r["competitors"] == n)
            share = f" ({100 * r['images_per_second'] / quiet[name]:.0f}% of quiet)" if n and name in quiet else ""
            cells.append(f"{r['images_per_second']:.0f} img/s{share}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print()
    print(table)

    if args.out:
        os.makedirs(args.out, exist_ok=True)
        commit = subprocess.run(["git", "-C", HERE, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
        doc = {"machine": {"cpu": cpu, "cores": cores, "load_average_before": before}, "commit": commit,
               "subset": args.subset, "batch_size": args.batch_size, "runs": args.runs, "results": rows}
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        with open(os.path.join(args.out, "results.md"), "w") as f:
            f.write(f"mnist_cnn training throughput, {cores} cores ({cpu}), commit {commit}, load average before "
                    f"{before[0]:.2f}; median of {args.runs} runs of {args.subset} images, batch {args.batch_size}\n\n")
            f.write(table + "\n")
        print(f"wrote {args.out}/results.json and results.md")


if __name__ == "__main__":
    main()
