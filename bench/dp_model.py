#!/usr/bin/env python3
"""Data-parallel communication on paper: how much of a training step the gradient all-reduce
adds, for VGG19 and ResNet-50 on 8 and 64 GPUs over NVLink and InfiniBand, with the all-reduce
after the whole backward pass (cudl today) and in buckets that start as soon as backward has
produced them (PyTorch DDP's scheme, issue 27).

What is measured and what is assumed:
- Compute: the per-layer backward times of a measured `cudl bench --profile` run (VGG19 batch 64 on
  an H200, bench/results/2026-11-30-h200-conv-algo/logs/profile_heuristic.log, each layer waited
  for), rescaled so forward + backward equal a measured whole-step time (--step-ms: by default the
  fp32 111 ms and TF32 75 ms steps of the same run with --conv-algo measured; the profile's own
  total includes per-layer waits and heuristic algorithms). ResNet-50 has no cudl measurement: its
  layers take VGG19's measured FLOP rate (backward = 2x forward FLOPs), which flatters ResNet's
  compute and so overstates the share of communication.
- Gradients: fp32 (4 bytes per parameter), parameter counts from the architectures (checked against
  torchvision's totals: 143,667,240 and 25,557,032).
- Network: a ring all-reduce of S bytes over N GPUs takes alpha + 2 (N-1)/N * S / busbw, where busbw
  is the bus bandwidth nccl-tests reports. The fabrics below are assumptions, not measurements:
  NVLink 4 (450 GB/s per direction per GPU) at 370 GB/s busbw; InfiniBand NDR (400 Gb/s, one NIC per
  GPU, rail-optimised) at 45 GB/s busbw, the 64-GPU case being 8 nodes of 8 where the inter-node
  links bound the ring; latencies alpha as listed.
- Buckets: gradients in reverse layer order, cut into --bucket-mb buckets (25 MB, as DDP), each
  sent on one communication stream when its last layer's backward ends, one after another.
  Exposed communication is what ends after the backward pass does.

  python3 bench/dp_model.py [--profile LOG] [--bucket-mb 25] [--json OUT]
"""
import argparse
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PROFILE = os.path.join(HERE, "results", "2026-11-30-h200-conv-algo", "logs", "profile_heuristic.log")

# name, GPUs, bus bandwidth (bytes/s), latency per all-reduce (s)
FABRICS = [
    ("NVLink", 8, 370e9, 15e-6),
    ("NVLink", 64, 370e9, 40e-6),
    ("InfiniBand NDR", 8, 45e9, 30e-6),
    ("InfiniBand NDR", 64, 45e9, 60e-6),
]

VGG19_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


def vgg19_layers():
    """(name, params, forward MACs per image) of every layer with parameters, in forward order."""
    layers, c, side, index = [], 3, 224, 0
    for v in VGG19_CFG:
        if v == "M":
            side //= 2
            index += 1
            continue
        layers.append((f"features.{index}", c * v * 9 + v, c * v * 9 * side * side))
        c = v
        index += 2  # the conv, then its ReLU
    for i, (fan_in, fan_out) in zip((0, 3, 6), ((512 * 7 * 7, 4096), (4096, 4096), (4096, 1000))):
        layers.append((f"classifier.{i}", fan_in * fan_out + fan_out, fan_in * fan_out))
    return layers


def resnet50_layers():
    """(name, params, forward MACs per image) for ResNet-50 at 224 px, torchvision's layer names."""
    layers = []

    def conv(name, cin, cout, k, side_out):
        layers.append((name, cin * cout * k * k, cin * cout * k * k * side_out * side_out))

    def bn(name, ch):
        layers.append((name, 2 * ch, 0))

    conv("conv1", 3, 64, 7, 112)
    bn("bn1", 64)
    cin, side = 64, 56
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        for b in range(blocks):
            stride = 2 if (b == 0 and stage > 1) else 1
            out_side = side // stride
            p = f"layer{stage}.{b}"
            conv(f"{p}.conv1", cin, width, 1, side)
            bn(f"{p}.bn1", width)
            conv(f"{p}.conv2", width, width, 3, out_side)
            bn(f"{p}.bn2", width)
            conv(f"{p}.conv3", width, 4 * width, 1, out_side)
            bn(f"{p}.bn3", 4 * width)
            if b == 0:
                conv(f"{p}.downsample.0", cin, 4 * width, 1, out_side)
                bn(f"{p}.downsample.1", 4 * width)
            cin, side = 4 * width, out_side
    layers.append(("fc", 2048 * 1000 + 1000, 2048 * 1000))
    return layers


def read_profile(path):
    """Per-layer (forward ms, backward ms) of the first train_step profile in a `cudl bench --profile` log."""
    times, inside = {}, False
    with open(path) as f:
        for line in f:
            if "per-layer ms per train_step" in line:
                if times:
                    break
                inside = True
                continue
            if inside:
                m = re.match(r"\s+(\S+)\s+forward\s+([0-9.]+)\s+backward\s+([0-9.]+)", line)
                if not m:
                    break
                times[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    if not times:
        sys.exit(f"dp_model: no per-layer train_step profile in {path}")
    return times


def allreduce_s(nbytes, gpus, busbw, alpha):
    return alpha + 2.0 * (gpus - 1) / gpus * nbytes / busbw


def simulate(backward, params, bucket_bytes, gpus, busbw, alpha):
    """backward: per-layer backward seconds in backward order; params: that layer's parameters.
    Returns (total all-reduce seconds unbucketed, exposed seconds after backward with buckets, buckets)."""
    t, ready, buckets, size = 0.0, [], [], 0
    for seconds, n in zip(backward, params):
        t += seconds
        size += 4 * n
        if size >= bucket_bytes:
            buckets.append((t, size))
            size = 0
    if size:
        buckets.append((t, size))
    end_of_backward = t
    comm_end = 0.0
    for ready_at, nbytes in buckets:
        comm_end = max(comm_end, ready_at) + allreduce_s(nbytes, gpus, busbw, alpha)
    whole = allreduce_s(sum(4 * n for n in params), gpus, busbw, alpha)
    return whole, max(0.0, comm_end - end_of_backward), len(buckets)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default=DEFAULT_PROFILE, help="a `cudl bench --profile` log of VGG19 (train_step)")
    ap.add_argument("--step-ms", default="fp32:111.2,tf32:75.2",
                    help="label:ms of measured whole VGG19 b64 steps the profile is rescaled to")
    ap.add_argument("--bucket-mb", type=float, default=25.0)
    ap.add_argument("--json", help="write the table here")
    args = ap.parse_args()

    profile = read_profile(args.profile)
    vgg = vgg19_layers()
    resnet = resnet50_layers()
    assert sum(p for _, p, _ in vgg) == 143_667_240, "VGG19 parameter count"
    assert sum(p for _, p, _ in resnet) == 25_557_032, "ResNet-50 parameter count"
    missing = [name for name, _, _ in vgg if name not in profile]
    if missing:
        sys.exit(f"dp_model: the profile has no {', '.join(missing)}")
    prof_fwd = sum(f for f, _ in profile.values())
    prof_bwd = sum(b for _, b in profile.values())
    vgg_macs = sum(m for _, _, m in vgg)
    resnet_macs = sum(m for _, _, m in resnet)
    batch = 64

    rows = []
    for label, step_ms in (item.split(":") for item in args.step_ms.split(",")):
        step_s = float(step_ms) / 1e3
        scale = step_s / ((prof_fwd + prof_bwd) / 1e3)
        # VGG19: each layer's measured backward, plus the parameter-free layers' backward folded into
        # the next layer with parameters below them (they run between them).
        order = list(profile.items())[::-1]
        vgg_names = {name: p for name, p, _ in vgg}
        bwd, par, pending = [], [], 0.0
        for name, (_, b) in order:
            pending += b / 1e3 * scale
            if name in vgg_names:
                bwd.append(pending)
                par.append(vgg_names[name])
                pending = 0.0
        bwd[-1] += pending
        vgg_bwd_s = sum(bwd)
        # ResNet-50 at VGG19's measured rate: backward time in proportion to forward MACs.
        rate = vgg_macs * batch / vgg_bwd_s  # backward MACs-equivalents per second
        r_layers = resnet[::-1]
        r_bwd = [max(m, 1) * batch / rate for _, _, m in r_layers]
        r_par = [p for _, p, _ in r_layers]
        r_step_s = step_s * resnet_macs / vgg_macs
        for model, b_s, p, s_s in (("vgg19", bwd, par, step_s), ("resnet50", r_bwd, r_par, r_step_s)):
            for fabric, gpus, busbw, alpha in FABRICS:
                whole, exposed, nb = simulate(b_s, p, args.bucket_mb * 1e6, gpus, busbw, alpha)
                rows.append({"model": model, "compute": label, "batch_per_gpu": batch, "step_ms": s_s * 1e3,
                             "fabric": fabric, "gpus": gpus, "gradient_mb": 4 * sum(p) / 1e6,
                             "allreduce_ms": whole * 1e3, "exposed_after_backward_ms": whole * 1e3,
                             "exposed_bucketed_ms": exposed * 1e3, "buckets": nb,
                             "share_after_backward": whole / (s_s + whole),
                             "share_bucketed": exposed / (s_s + exposed)})

    print(f"profile {os.path.relpath(args.profile)}; buckets of {args.bucket_mb:g} MB; fp32 gradients; "
          f"batch {batch} per GPU")
    print("| model | compute | step ms | fabric | GPUs | gradients MB | all-reduce ms | exposed today (after backward) "
          "| exposed with buckets |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['compute']} | {r['step_ms']:.1f} | {r['fabric']} | {r['gpus']} | "
              f"{r['gradient_mb']:.0f} | {r['allreduce_ms']:.1f} | {r['exposed_after_backward_ms']:.1f} ms "
              f"({100 * r['share_after_backward']:.0f}%) | {r['exposed_bucketed_ms']:.1f} ms "
              f"({100 * r['share_bucketed']:.1f}%) |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"profile": os.path.relpath(args.profile), "bucket_mb": args.bucket_mb,
                       "fabrics": [dict(zip(("fabric", "gpus", "busbw", "alpha_s"), f)) for f in FABRICS],
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
