#!/usr/bin/env python3
"""Draws a PNG chart from `cudl bench --json` output (one file or several, merged).

Kernel rows: one panel with each op's median time per backend (log scale, CPU vs GPU side by
side) and one with its share of the backend's peak measured in the same run (SGEMM for
GFLOP/s, a copy for GB/s). Model rows (rate_unit "img/s", from `cudl bench --models`), when
present, get a third panel: images per second per model, batch and step.

  build/cudl bench --device cpu --sizes small --json bench.json
  tools/bench_chart.py bench.json -o bench.png --title "cudl bench, my machine"

Needs matplotlib (Debian: apt-get install python3-matplotlib); draws with the Agg backend, so
no display is needed.
"""
import argparse
import json
import sys

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.exit("bench_chart: matplotlib is not installed (Debian: apt-get install python3-matplotlib)")

COLORS = {"cpu": "#4c72b0"}  # GPUs (cuda:N) get the next colours in turn
PALETTE = ["#dd8452", "#55a868", "#c44e52", "#8172b3"]


def load(paths):
    rows = []
    for path in paths:
        with open(path) as f:
            doc = json.load(f)
        rows += doc["results"] if isinstance(doc, dict) else doc
    return rows


def ordered(values):
    """Unique values in first-seen order."""
    seen = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen


def color(backend, backends):
    if backend in COLORS:
        return COLORS[backend]
    gpus = [b for b in backends if b not in COLORS]
    return PALETTE[gpus.index(backend) % len(PALETTE)]


def grouped_barh(ax, labels, backends, value, fmt):
    """Horizontal bars: one group per label, one bar per backend; value(label, backend) or None."""
    height = 0.8 / max(1, len(backends))
    for i, backend in enumerate(backends):
        ys, xs = [], []
        for j, label in enumerate(labels):
            v = value(label, backend)
            if v is not None:
                ys.append(j + (i - (len(backends) - 1) / 2) * height)
                xs.append(v)
        bars = ax.barh(ys, xs, height=height, label=backend, color=color(backend, backends))
        ax.bar_label(bars, labels=[fmt(x) for x in xs], fontsize=7, padding=2)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="+", help="`cudl bench --json` output files")
    ap.add_argument("-o", "--output", required=True, help="the PNG to write")
    ap.add_argument("--title", default="cudl bench", help="the figure's title")
    args = ap.parse_args()

    rows = load(args.json)
    kernels = [r for r in rows if r.get("rate_unit") != "img/s"]
    models = [r for r in rows if r.get("rate_unit") == "img/s"]
    if not rows:
        sys.exit("bench_chart: no results in " + ", ".join(args.json))

    panels = (2 if kernels else 0) + (1 if models else 0)
    n_kernel = len(ordered((r["op"], r["shape"]) for r in kernels))
    n_model = len(ordered((r["model"], r["batch"], r["op"]) for r in models))
    height = max(3.0, 0.32 * max(n_kernel, n_model) * max(1, len(ordered(r["backend"] for r in rows))) + 1.5)
    fig, axes = plt.subplots(1, panels, figsize=(7.5 * panels, height), squeeze=False)
    axes = list(axes[0])

    if kernels:
        backends = ordered(r["backend"] for r in kernels)
        keys = ordered((r["op"], r["shape"]) for r in kernels)
        by = {(r["op"], r["shape"], r["backend"]): r for r in kernels}
        labels = [f"{op}\n{shape}" for op, shape in keys]
        lookup = dict(zip(labels, keys))

        def field(name, scale=1.0):
            def get(label, backend):
                r = by.get((*lookup[label], backend))
                return None if r is None else r[name] * scale
            return get

        ax = axes.pop(0)
        grouped_barh(ax, labels, backends, field("median_ms"), lambda v: f"{v:.3g} ms")
        ax.set_xscale("log")
        ax.set_xlabel("median time per run, ms (log scale, shorter is faster)")
        ax.set_title("kernels: median time")

        ax = axes.pop(0)
        grouped_barh(ax, labels, backends, field("peak_share", 100.0), lambda v: f"{v:.0f}%")
        ax.axvline(100, color="black", lw=0.8, ls="--")
        ax.set_xlabel("% of the peak measured in the same run (SGEMM GFLOP/s or copy GB/s)")
        peaks = []
        for b in backends:
            r = next(r for r in kernels if r["backend"] == b)
            peaks.append(f"{b}: {r['peak_gflops']:.0f} GFLOP/s, {r['peak_gbps']:.0f} GB/s")
        ax.set_title("kernels: share of peak (" + "; ".join(peaks) + ")", fontsize=9)
        if any(r.get("fits_in_cache") for r in kernels):
            ax.text(0.99, 0.01, "above 100% of copy bandwidth: the data fits in cache", transform=ax.transAxes,
                    ha="right", va="bottom", fontsize=7)

    if models:
        backends = ordered(r["backend"] for r in models)
        keys = ordered((r["model"], r["batch"], r["op"]) for r in models)
        by = {(r["model"], r["batch"], r["op"], r["backend"]): r for r in models}
        labels = [f"{m} batch {b}\n{op}" for m, b, op in keys]
        lookup = dict(zip(labels, keys))

        def rate(label, backend):
            r = by.get((*lookup[label], backend))
            return None if r is None else r["rate"]

        ax = axes.pop(0)
        grouped_barh(ax, labels, backends, rate, lambda v: f"{v:.3g}")
        rates = [r["rate"] for r in models]
        if max(rates) > 50 * min(rates):  # log scale only where the rates span orders of magnitude
            ax.set_xscale("log")
            ax.set_xlabel("images per second (log scale, longer is faster)")
        else:
            ax.set_xlabel("images per second (longer is faster)")
        ax.set_title("models: train step and inference")

    fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"bench_chart: wrote {args.output}")


if __name__ == "__main__":
    main()
