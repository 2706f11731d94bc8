#!/usr/bin/env python3
"""Times the same models in cudl and in PyTorch, in one run on one machine, and prints the ratio.

Both sides run a full training step (forward, softmax cross-entropy, backward, Adam) and
inference on synthetic data of the model's input shape, fp32, NCHW, at the same batch sizes.
cudl's numbers come from `cudl bench --models ... --json`; PyTorch's are measured here with the
same warm-up-then-median method (CUDA events on the GPU).

On the CPU both sides get the same number of threads: --threads N (default: every core,
os.cpu_count()) goes to torch.set_num_threads and, as OMP_NUM_THREADS and OPENBLAS_NUM_THREADS,
to cudl (some PyTorch builds, Debian's among them, default to one thread, which is not a fair race).

  bench/compare_torch.py --device cpu --models mnist_cnn --batch-sizes 128
  bench/compare_torch.py --device cpu --threads 1 --models mnist_cnn --batch-sizes 128
  bench/compare_torch.py --device cuda --models vgg19,mnist_cnn --json out.json
  bench/compare_torch.py --device cuda --models vgg19 --precision tf32 --conv-algo heuristic

On the GPU both sides get the same numerics and algorithm policy, each flag mirrored:
--precision fp32|tf32 (cudl --precision; torch allow_tf32 for cuDNN and matmul), --conv-algo
measured|heuristic (cudl --conv-algo; torch.backends.cudnn.benchmark on|off) and --deterministic
true|false (cudl --deterministic; torch.backends.cudnn.deterministic). The defaults, fp32, measured
and false, are each engine's fastest strict-fp32 settings.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

try:
    import torch
    import torch.nn as nn
except ImportError:
    sys.exit("compare_torch: PyTorch is not installed (Debian: apt-get install python3-torch; run with /usr/bin/python3)")

VGG_CFGS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def make_model(name):
    """The PyTorch twin of cudl's model zoo (models/zoo.cpp); returns (model, input shape per sample)."""
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10)), (1, 28, 28)
    if name == "mnist_cnn":
        return nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.25),
            nn.Flatten(), nn.Linear(4608, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10)), (1, 28, 28)
    if name.startswith("vgg"):
        depth = int(name[3:5])
        bn = name.endswith("_bn")
        cifar = name.endswith("_cifar")
        layers, c = [], 3
        for v in VGG_CFGS[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1)] + ([nn.BatchNorm2d(v)] if bn else []) + [nn.ReLU()]
                c = v
        if cifar:
            head = [nn.Flatten(), nn.Linear(512, 10)]
            shape = (3, 32, 32)
        else:
            head = [nn.Flatten(), nn.Linear(512 * 49, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(),
                    nn.Dropout(), nn.Linear(4096, 1000)]
            shape = (3, 224, 224)
        return nn.Sequential(*layers, *head), shape
    raise SystemExit(f"compare_torch: unknown model {name}")


def time_ms(fn, device, repeat):
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def torch_numbers(name, batch, device, repeat):
    torch.manual_seed(1)
    model, shape = make_model(name)
    model = model.to(device)
    x = torch.rand(batch, *shape, device=device)
    y = torch.arange(batch, device=device) % 10
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = nn.CrossEntropyLoss()

    def train_step():
        model.train()
        opt.zero_grad(set_to_none=False)
        loss_fn(model(x), y).backward()
        opt.step()

    def inference():
        model.eval()
        with torch.no_grad():
            model(x)

    return {"train_step": time_ms(train_step, device, repeat), "inference": time_ms(inference, device, repeat)}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cudl", default=os.path.join(here, "..", "build", "cudl"), help="the cudl binary")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--models", default="mnist_cnn")
    ap.add_argument("--batch-sizes", default="", help="comma-separated (default: 128; 1,32,64 for VGG)")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="CPU threads for both sides (default: os.cpu_count(), here %(default)s)")
    ap.add_argument("--json", help="write the comparison here")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "tf32"], help="both sides (GPU only)")
    ap.add_argument("--conv-algo", default="measured", choices=["measured", "heuristic"],
                    help="both sides: time cuDNN's algorithms once per shape, or take its guess (GPU only)")
    ap.add_argument("--deterministic", default="false", choices=["true", "false"],
                    help="both sides: deterministic cuDNN algorithms only (GPU only)")
    args = ap.parse_args()
    if args.device == "cuda":
        tf32 = args.precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = args.conv_algo == "measured"
        torch.backends.cudnn.deterministic = args.deterministic == "true"
    device = torch.device(args.device)
    if args.threads < 1:
        ap.error("--threads must be at least 1")
    env = dict(os.environ)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
        env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = str(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cudl.json")
        cmd = [args.cudl, "bench", "--device", args.device, "--models", args.models, "--repeat", str(2 * args.repeat),
               "--json", out]
        if args.batch_sizes:
            cmd += ["--batch-sizes", args.batch_sizes]
        if args.device == "cuda":
            cmd += ["--precision", args.precision, "--conv-algo", args.conv_algo, "--deterministic", args.deterministic]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
        with open(out) as f:
            ours = json.load(f)["results"]

    rows = []
    if args.device == "cpu":
        print(f"PyTorch {torch.__version__} vs cudl on the CPU ({os.cpu_count()} cores): "
              f"PyTorch {torch.get_num_threads()} threads (torch.set_num_threads), "
              f"cudl {env['OMP_NUM_THREADS']} threads (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS)")
    else:
        print(f"PyTorch {torch.__version__} vs cudl on {torch.cuda.get_device_name()}: both {args.precision}, "
              f"conv algorithms {args.conv_algo}, deterministic {args.deterministic}")
    print(f"{'model':<12} {'batch':>5} {'what':<11} {'cudl ms':>9} {'torch ms':>9} {'cudl img/s':>11} "
          f"{'torch img/s':>11} {'torch/cudl time':>16}")
    torch_cache = {}
    for r in ours:
        key = (r["model"], r["batch"])
        if key not in torch_cache:
            torch_cache[key] = torch_numbers(r["model"], r["batch"], device, args.repeat)
        theirs = torch_cache[key][r["op"]]
        ratio = theirs / r["median_ms"]
        rows.append({"model": r["model"], "batch": r["batch"], "what": r["op"], "cudl_ms": r["median_ms"],
                     "torch_ms": theirs, "speed_ratio_cudl_over_torch": ratio})
        print(f"{r['model']:<12} {r['batch']:>5} {r['op']:<11} {r['median_ms']:>9.2f} {theirs:>9.2f} "
              f"{1e3 * r['batch'] / r['median_ms']:>11.1f} {1e3 * r['batch'] / theirs:>11.1f} {ratio:>15.2f}x")
    print("torch/cudl time > 1 means cudl is faster.")
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            doc = {"device": args.device, "torch": torch.__version__, "rows": rows}
            if args.device == "cuda":
                doc["settings"] = {"precision": args.precision, "conv_algo": args.conv_algo,
                                   "deterministic": args.deterministic == "true"}
            if args.device == "cpu":
                doc["threads"] = {"torch": torch.get_num_threads(), "cudl": int(env["OMP_NUM_THREADS"])}
            json.dump(doc, f, indent=2)
        os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
    main()
