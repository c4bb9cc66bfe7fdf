"""One Adam step over a generator's and a discriminator's parameters, three ways: torch's per-tensor loop, its
multi-tensor (foreach) path, and its fused kernel, which the trainer uses (interpgan_ext/optim.py).

    python python/bench_optim.py [--device cpu|cuda] [--sizes 32 64] [--width 64] [--seconds 0.5] [--json out.json]

Timed with bench_ops.py's loop (interleaved rounds). Prints the median step and each path's time over the fused one.
"""
import argparse
import json
import os
import sys

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, ".."))
sys.path.insert(0, _HERE)
from bench_ops import median_times  # noqa: E402
from interpgan_ext.models import build  # noqa: E402

PATHS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def adam_step_times(size, width, device, arch="dcgan", min_seconds=0.5):
    """{path: median seconds of one opt.step()} over G and D of `arch` at `size` px, with fixed gradients."""
    steps, n = {}, 0
    for path, flags in PATHS.items():
        G, D = build(arch, size, width=width)
        params = [p for p in (*G.parameters(), *D.parameters())]
        for p in params:
            p.data = p.data.to(device)
            p.grad = torch.randn_like(p)
        n = sum(p.numel() for p in params)
        opt = torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.99), **flags)
        steps[path] = opt.step
    return median_times(steps, torch.device(device), reps=30, min_seconds=min_seconds), n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--width", type=int, default=32, help="the main job's is 32; the GPU job's 64")
    ap.add_argument("--seconds", type=float, default=0.5, help="at least this much timed per path")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    rows = []
    print(f"Adam step over DCGAN G + D, {args.device}, {torch.get_num_threads()} threads")
    for size in args.sizes:
        times, n = adam_step_times(size, args.width, args.device, min_seconds=args.seconds)
        ratios = {path: t / times["fused"] for path, t in times.items()}
        print(f"  {size:3d} px, {n / 1e6:5.1f} M parameters: " + "  ".join(
            f"{path} {t * 1e3:7.3f} ms ({ratios[path]:.2f}x fused)" for path, t in times.items()))
        rows.append({"size": size, "width": args.width, "parameters": n, "median_s": times, "over_fused": ratios})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": args.device, "threads": torch.get_num_threads(), "rows": rows}, fh, indent=1)
    return rows


if __name__ == "__main__":
    main()
