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
--precision fp32|tf32|bf16|fp16 (cudl --precision; torch: allow_tf32 for cuDNN and matmul for
tf32; for bf16 and fp16 the mixed precision a PyTorch user would run: torch.autocast(device_type=
"cuda", dtype=...) around forward and loss, channels_last model and input, fp32 master weights and
Adam, and torch.amp.GradScaler in the fp16 train step; TF32 off for what stays fp32), --conv-algo
measured|heuristic (cudl --conv-algo; torch.backends.cudnn.benchmark on|off) and --deterministic
true|false (cudl --deterministic; torch.backends.cudnn.deterministic). The defaults, fp32, measured
and false, are each engine's fastest strict-fp32 settings.

--defaults instead compares what each engine does untouched, as a user first meets it: cudl with
no --precision, --conv-algo or --deterministic (its defaults: fp32, measured with the on-disk
cache, deterministic, fused) and PyTorch without touching torch.backends (its defaults: no
cudnn.benchmark, TF32 allowed in cuDNN convolutions but not in matmuls); the JSON's settings say
"defaults": true.

Each row also records both sides' peak memory of that run: torch.cuda.max_memory_allocated after
torch.cuda.reset_peak_memory_stats() (GPU only), and the peak of cudl's memory pool that
`cudl bench` reports (peak_memory_bytes; both include the parameters and optimizer state).

  bench/compare_torch.py --device cpu --models vgg19 --batch-sizes 1 --style 128,512 --style-optimizers adam,lbfgs

--style SIZES times one neural-style iteration (VGG19 to relu5_1 with random weights, content loss
at relu4_2, Gram style losses at relu1_1..relu5_1, TV loss; one loss+gradient evaluation and one
Adam or L-BFGS step on the image) at each size. cudl runs `cudl style` twice, with W and W+N
iterations, and takes (total(W+N) - total(W)) / N, so set-up and the first (planning) iteration
drop out; PyTorch warms up W iterations and times N more the same way.
"""
import re
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext


def threads_from_argv(argv):
    """--threads N as given (the default: every core), read before argparse runs."""
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return str(os.cpu_count() or 1)


# PyTorch's OpenMP pool sizes itself from OMP_NUM_THREADS when it loads, so the thread count is
# set there before the import as well as through torch.set_num_threads. (Debian's PyTorch 1.13
# MLP train step is bimodal across processes on the 2-core VM whatever the settings tried: 1.3-1.8
# ms or 6.6-8.3 ms per step, its OpenBLAS linear layers the likely cause; compare a few runs.)
os.environ["OMP_NUM_THREADS"] = threads_from_argv(sys.argv)

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


class BasicBlock(nn.Module):
    """torchvision's ResNet-18/34 block (torchvision is not on this machine; the same layers)."""
    expansion = 1

    def __init__(self, cin, width, stride):
        super().__init__()
        out = width * self.expansion
        self.body = nn.Sequential(nn.Conv2d(cin, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, out, 3, 1, 1, bias=False), nn.BatchNorm2d(out))
        self.downsample = (nn.Sequential(nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))
                           if stride != 1 or cin != out else nn.Identity())

    def forward(self, x):
        return torch.relu(self.body(x) + self.downsample(x))


class Bottleneck(BasicBlock):
    """torchvision's ResNet-50 block (v1.5: the stride on the 3x3 convolution)."""
    expansion = 4

    def __init__(self, cin, width, stride):
        super().__init__(cin, width, stride)
        out = width * self.expansion
        self.body = nn.Sequential(nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, out, 1, bias=False), nn.BatchNorm2d(out))


RESNET_CFGS = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]), 50: (Bottleneck, [3, 4, 6, 3])}


def make_resnet(depth):
    block, counts = RESNET_CFGS[depth]
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    c = 64
    for stage, n in enumerate(counts):
        width = 64 << stage
        for i in range(n):
            layers.append(block(c, width, 2 if stage > 0 and i == 0 else 1))
            c = width * block.expansion
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 1000)), (3, 224, 224)


def make_model(name):
    """The PyTorch twin of cudl's model zoo (models/zoo/zoo.cpp); returns (model, input shape per sample)."""
    if name in ("resnet18", "resnet34", "resnet50"):
        return make_resnet(int(name[6:]))
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


HALF_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def torch_numbers(name, batch, device, repeat, precision="fp32"):
    """Median ms and peak memory (bytes, GPU only) of a train step and of inference."""
    torch.manual_seed(1)
    model, shape = make_model(name)
    model = model.to(device)
    x = torch.rand(batch, *shape, device=device)
    y = torch.arange(batch, device=device) % 10
    half = HALF_DTYPES.get(precision)
    if half is not None and len(shape) == 3:
        # The layout cuDNN's half-precision tensor-core kernels (and oneDNN's on the CPU) want
        # (PyTorch's AMP recipe).
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    autocast = (lambda: torch.autocast(device_type=device.type, dtype=half)) if half is not None else nullcontext
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" and device.type == "cuda" else None

    def train_step():
        model.train()
        opt.zero_grad(set_to_none=False)
        with autocast():
            loss = loss_fn(model(x), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    def inference():
        model.eval()
        with torch.no_grad(), autocast():
            model(x)

    out = {}
    for what, fn in (("train_step", train_step), ("inference", inference)):
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        ms = time_ms(fn, device, repeat)
        peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else None
        out[what] = (ms, peak)
    return out


STYLE_LAYERS = {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20, "relu4_2": 22, "relu5_1": 29}


def cudl_style_ms(args, env, size, optimizer, tmp):
    """Per-iteration ms of `cudl style` at this size, the image's (width, height) and the memory
    pool's peak bytes of the longer run."""
    here = os.path.dirname(os.path.abspath(__file__))
    data = os.path.join(here, "..", "tests", "data")
    totals, dims, peak = {}, None, None
    for iters in (args.style_warmup, args.style_warmup + args.style_iters):
        cmd = [args.cudl, "style", "--device", args.device, "--precision", args.precision,
               "--content", os.path.join(data, "chelsea.png"),
               "--style", os.path.join(data, "brick.png"), "--output", os.path.join(tmp, "style.png"),
               "--weights", "random:1", "--size", str(size), "--iters", str(iters), "--optimizer", optimizer,
               "--print-every", "0"] + (["--threads", str(args.threads)] if args.device == "cpu" else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        m = re.search(r"\((\d+)x(\d+)\); ([0-9.]+) ms/iteration", out)
        if not m:
            sys.exit(f"compare_torch: no ms/iteration in cudl style's output:\n{out}")
        dims = (int(m.group(1)), int(m.group(2)))
        totals[iters] = float(m.group(3)) * iters
        p = re.search(r"memory pool peak ([0-9.]+) MiB", out)
        peak = int(float(p.group(1)) * (1 << 20)) if p else None
    ms = (totals[args.style_warmup + args.style_iters] - totals[args.style_warmup]) / args.style_iters
    return ms, dims, peak


def torch_style_ms(args, device, dims, optimizer, precision="fp32"):
    """The same iteration in PyTorch: VGG19 features to relu5_1, random weights, the same losses;
    bf16/fp16 run the network and the Gram matrices under torch.autocast with channels_last (as a
    PyTorch user would), the losses in fp32. Returns ms per iteration and, on a GPU, the peak of
    torch.cuda.max_memory_allocated over the run (None on the CPU)."""
    half = HALF_DTYPES.get(precision)
    autocast = (lambda: torch.autocast(device_type=device.type, dtype=half)) if half is not None else nullcontext
    torch.manual_seed(1)
    layers, c = [], 3
    for v in VGG_CFGS[19][:17]:  # through conv5_1
        layers += [nn.MaxPool2d(2)] if v == "M" else [nn.Conv2d(c, v, 3, padding=1), nn.ReLU()]
        c = v if v != "M" else c
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    memory_format = torch.channels_last if half is not None else torch.contiguous_format
    net = nn.Sequential(*layers[:STYLE_LAYERS["relu5_1"] + 1]).to(device, memory_format=memory_format).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    w, h = dims
    content, style = torch.rand(1, 3, h, w, device=device), torch.rand(1, 3, h, w, device=device)
    taps = sorted(STYLE_LAYERS.values())

    def features(x):
        out = {}
        for i, layer in enumerate(net):
            x = layer(x)
            if i in taps:
                out[i] = x
        return out

    def gram(f):
        _, ch, hh, ww = f.shape
        f = f.reshape(ch, hh * ww)
        return f @ f.t() / (ch * hh * ww)

    with torch.no_grad():
        target_content = features(content)[STYLE_LAYERS["relu4_2"]]
        target_grams = {i: gram(f) for i, f in features(style).items() if i != STYLE_LAYERS["relu4_2"]}
    img = content.clone().contiguous(memory_format=memory_format).requires_grad_(True)
    opt = (torch.optim.LBFGS([img], lr=1, max_iter=1, history_size=100) if optimizer == "lbfgs"
           else torch.optim.Adam([img], lr=0.04))

    def closure():
        opt.zero_grad()
        with autocast():
            f = features(img)
            grams = {i: gram(f[i]) for i in target_grams}
        loss = ((f[STYLE_LAYERS["relu4_2"]].float() - target_content) ** 2).mean()
        loss = loss + 1e6 * sum(((grams[i].float() - g) ** 2).mean() for i, g in target_grams.items())
        tv = ((img[:, :, 1:, :] - img[:, :, :-1, :]) ** 2).sum() + ((img[:, :, :, 1:] - img[:, :, :, :-1]) ** 2).sum()
        loss = loss + 1e-3 * tv
        loss.backward()
        return loss

    for _ in range(args.style_warmup):
        opt.step(closure)
    t0 = time.perf_counter()
    for _ in range(args.style_iters):
        opt.step(closure)
    peak = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    return (time.perf_counter() - t0) * 1e3 / args.style_iters, peak


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
    ap.add_argument("--style", default="", help="comma-separated style sizes (longest side), e.g. 128,512")
    ap.add_argument("--style-optimizers", default="adam,lbfgs")
    ap.add_argument("--style-warmup", type=int, default=2, help="style iterations before timing")
    ap.add_argument("--style-iters", type=int, default=5, help="style iterations timed")
    ap.add_argument("--json", help="write the comparison here")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16", "fp16"],
                    help="both sides (GPU only); bf16/fp16: autocast + channels_last (+ GradScaler for fp16) in "
                         "PyTorch, --precision in cudl")
    ap.add_argument("--conv-algo", default="measured", choices=["measured", "heuristic"],
                    help="both sides: time cuDNN's algorithms once per shape, or take its guess (GPU only)")
    ap.add_argument("--deterministic", default="false", choices=["true", "false"],
                    help="both sides: deterministic cuDNN algorithms only (GPU only)")
    ap.add_argument("--defaults", action="store_true",
                    help="each engine with its own default settings (see above) instead of mirrored flags; "
                         "takes no --precision, --conv-algo or --deterministic")
    raw = sys.argv[1:]
    args = ap.parse_args()
    if args.defaults and any(a.split("=")[0] in ("--precision", "--conv-algo", "--deterministic") for a in raw):
        ap.error("--defaults compares each engine's own settings: leave out --precision, --conv-algo and "
                 "--deterministic")
    if args.device == "cpu" and args.precision not in ("fp32", "bf16"):
        ap.error("--precision on the CPU: fp32 or bf16 (PyTorch's CPU autocast has no fp16)")
    if args.device == "cuda" and not args.defaults:
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

    # On the CPU a half precision is compared with PyTorch's best CPU mode, the faster of its fp32
    # and its torch.autocast("cpu", bfloat16), and with cudl's own fp32.
    cpu_half = args.device == "cpu" and args.precision in HALF_DTYPES
    ours, ours_fp32 = [], {}
    if args.models:
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "cudl.json")
            cmd = [args.cudl, "bench", "--device", args.device, "--models", args.models, "--repeat",
                   str(2 * args.repeat), "--json", out]
            if args.batch_sizes:
                cmd += ["--batch-sizes", args.batch_sizes]
            if args.device == "cuda" and not args.defaults:
                cmd += ["--conv-algo", args.conv_algo, "--deterministic", args.deterministic]
            elif args.device == "cpu":
                cmd += ["--threads", str(args.threads)]  # not --threads auto's guess from the load average
            precision = [] if args.defaults else ["--precision", args.precision]
            subprocess.run(cmd + precision, check=True, stdout=subprocess.DEVNULL, env=env)
            with open(out) as f:
                ours = json.load(f)["results"]
            if cpu_half:  # cudl's own fp32 beside its bf16, in the same run
                subprocess.run(cmd + ["--precision", "fp32"], check=True, stdout=subprocess.DEVNULL, env=env)
                with open(out) as f:
                    ours_fp32 = {(r["model"], r["batch"], r["op"]): r["median_ms"] for r in json.load(f)["results"]}

    rows = []
    if args.device == "cpu":
        print(f"PyTorch {torch.__version__} vs cudl on the CPU ({os.cpu_count()} cores): "
              f"PyTorch {torch.get_num_threads()} threads (torch.set_num_threads), "
              f"cudl {env['OMP_NUM_THREADS']} threads (OMP_NUM_THREADS, OPENBLAS_NUM_THREADS); cudl {args.precision}"
              + (", PyTorch the faster of fp32 and autocast bf16 (channels_last) per row" if cpu_half else ""))
    else:
        extra = (" (torch: autocast, channels_last" + (", GradScaler" if args.precision == "fp16" else "") + ")"
                 if args.precision in HALF_DTYPES else "")
        if args.defaults:
            print(f"PyTorch {torch.__version__} vs cudl on {torch.cuda.get_device_name()}: each with its defaults")
        else:
            print(f"PyTorch {torch.__version__} vs cudl on {torch.cuda.get_device_name()}: both "
                  f"{args.precision}{extra}, conv algorithms {args.conv_algo}, deterministic {args.deterministic}")
    print(f"{'model':<12} {'batch':>5} {'what':<11} {'cudl ms':>9} {'torch ms':>9} {'cudl img/s':>11} "
          f"{'torch img/s':>11} {'torch/cudl time':>16} {'cudl MiB':>9} {'torch MiB':>9}")
    mib = lambda b: f"{b / 2**20:.0f}" if b is not None else "-"
    torch_cache = {}
    for r in ours:
        key = (r["model"], r["batch"])
        if key not in torch_cache:
            torch_cache[key] = {p: torch_numbers(r["model"], r["batch"], device, args.repeat, p)
                                for p in (["fp32", args.precision] if cpu_half else [args.precision])}
        modes = {p: numbers[r["op"]] for p, numbers in torch_cache[key].items()}
        torch_mode = min(modes, key=lambda p: modes[p][0])
        theirs, torch_peak = modes[torch_mode]
        cudl_peak = r.get("peak_memory_bytes")
        ratio = theirs / r["median_ms"]
        row = {"model": r["model"], "batch": r["batch"], "what": r["op"], "cudl_ms": r["median_ms"],
               "torch_ms": theirs, "speed_ratio_cudl_over_torch": ratio, "cudl_peak_memory_bytes": cudl_peak,
               "torch_peak_memory_bytes": torch_peak}
        if cpu_half:
            row.update({"torch_mode": torch_mode, "torch_fp32_ms": modes["fp32"][0],
                        f"torch_{args.precision}_ms": modes[args.precision][0],
                        "cudl_fp32_ms": ours_fp32.get((r["model"], r["batch"], r["op"]))})
            if row["cudl_fp32_ms"]:
                row["speed_ratio_cudl_over_cudl_fp32"] = row["cudl_fp32_ms"] / r["median_ms"]
        rows.append(row)
        print(f"{r['model']:<12} {r['batch']:>5} {r['op']:<11} {r['median_ms']:>9.2f} {theirs:>9.2f} "
              f"{1e3 * r['batch'] / r['median_ms']:>11.1f} {1e3 * r['batch'] / theirs:>11.1f} {ratio:>15.2f}x "
              f"{mib(cudl_peak):>9} {mib(torch_peak):>9}")
    for size in [int(v) for v in args.style.split(",") if v]:
        for optimizer in [v for v in args.style_optimizers.split(",") if v]:
            with tempfile.TemporaryDirectory() as tmp:
                ms, dims, cudl_peak = cudl_style_ms(args, env, size, optimizer, tmp)
                fp32_ms = (cudl_style_ms(argparse.Namespace(**{**vars(args), "precision": "fp32"}), env, size,
                                         optimizer, tmp)[0] if cpu_half else None)
            modes = {p: torch_style_ms(args, device, dims, optimizer, p)
                     for p in (["fp32", args.precision] if cpu_half else [args.precision])}
            torch_mode = min(modes, key=lambda p: modes[p][0])
            theirs, torch_peak = modes[torch_mode]
            ratio = theirs / ms
            what = f"style_{optimizer}"
            row = {"model": f"style{size}", "batch": 1, "what": what, "image": f"{dims[0]}x{dims[1]}",
                   "cudl_ms": ms, "torch_ms": theirs, "speed_ratio_cudl_over_torch": ratio,
                   "cudl_peak_memory_bytes": cudl_peak, "torch_peak_memory_bytes": torch_peak}
            if cpu_half:
                row.update({"torch_mode": torch_mode, "torch_fp32_ms": modes["fp32"][0],
                            f"torch_{args.precision}_ms": modes[args.precision][0], "cudl_fp32_ms": fp32_ms,
                            "speed_ratio_cudl_over_cudl_fp32": fp32_ms / ms})
            rows.append(row)
            print(f"{'style' + str(size):<12} {1:>5} {what:<11} {ms:>9.2f} {theirs:>9.2f} {1e3 / ms:>11.2f} "
                  f"{1e3 / theirs:>11.2f} {ratio:>15.2f}x {mib(cudl_peak):>9} {mib(torch_peak):>9}"
                  f"  ({dims[0]}x{dims[1]}, it/s)")
    print("torch/cudl time > 1 means cudl is faster.")
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            doc = {"device": args.device, "torch": torch.__version__, "rows": rows}
            if args.defaults:
                doc["settings"] = {"defaults": True}
            elif args.device == "cuda":
                doc["settings"] = {"precision": args.precision, "conv_algo": args.conv_algo,
                                   "deterministic": args.deterministic == "true"}
                if args.precision in HALF_DTYPES:
                    doc["settings"]["torch_mixed_precision"] = {
                        "autocast": args.precision, "memory_format": "channels_last",
                        "grad_scaler": args.precision == "fp16"}
            if args.device == "cpu":
                doc["threads"] = {"torch": torch.get_num_threads(), "cudl": int(env["OMP_NUM_THREADS"])}
                doc["settings"] = {"defaults": True} if args.defaults else {"precision": args.precision}
                if cpu_half:
                    doc["settings"]["torch_modes"] = ["fp32", f"autocast {args.precision}, channels_last"]
            json.dump(doc, f, indent=2)
        os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
    main()
