"""Where one small forward+backward of group_energy spends its time: the ops alone, autograd, and Python.

    python python/profile_call_cost.py [--shape 8 64 8 8 8] [--threads 2] [--json out.json]

At small shapes the fused kernels take microseconds, and a forward+backward through autograd costs several times
more than they do. This prints the median wall time of each piece, so that a change can be put where the time is:
  - the registered ops called directly: forward with saved statistics, and backward;
  - the forward through the autograd wrapper (it saves the statistics and builds the graph node);
  - torch.autograd.grad on a graph built once and retained (the engine, the backward op, Python);
  - the whole step as bench_ops.py times it: forward, .sum(), autograd.grad;
  - the same step with a builtin (x * y).sum() over B values: the cost every op pays, fused or not.
The pieces are timed with bench_ops.py's loop (interleaved rounds, so a slow spell of the machine hits them all).
"""
import argparse
import json
import os
import sys

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, ".."))
sys.path.insert(0, _HERE)
import interpgan_ext as ig  # noqa: E402
from bench_ops import median_times  # noqa: E402


def call_costs(shape, reps=100, min_seconds=0.5):
    """{piece: median µs} for group_energy at shape (B, M, H, W, C) on the CPU."""
    B, M, H, Wd, C = shape
    f = torch.randn(B, M, H, Wd, requires_grad=True)
    W = torch.randn(M, C, H * Wd, requires_grad=True)
    q = torch.randint(0, C, (M,))
    f_data, W_data = f.detach(), W.detach()  # the ops called directly take no part in autograd
    ops = torch.ops.interpgan
    pieces = {}
    if ig._backend.use_compiled(f):
        _, stats = ops.group_energy_with_stats(f_data, W_data, q)
        ones = torch.ones(B)
        pieces["op: forward with statistics"] = lambda: ops.group_energy_with_stats(f_data, W_data, q)
        pieces["op: backward (df and dW)"] = lambda: ops.group_energy_backward(
            ones, f_data, W_data, q, stats, [True, True])
    pieces["forward through autograd"] = lambda: ig.ops.group_energy(f, W, q)
    retained = ig.ops.group_energy(f, W, q).sum()
    pieces["autograd.grad, retained graph"] = lambda: torch.autograd.grad(retained, (f, W), retain_graph=True)
    pieces["step: forward, sum, autograd.grad"] = lambda: torch.autograd.grad(
        ig.ops.group_energy(f, W, q).sum(), (f, W))
    x, y = torch.randn(B, 1, requires_grad=True), torch.randn(B, 1, requires_grad=True)
    pieces["same step, builtin (x * y).sum()"] = lambda: torch.autograd.grad((x * y).sum(), (x, y))
    seconds = median_times(pieces, torch.device("cpu"), reps, min_seconds=min_seconds)
    return {name: s * 1e6 for name, s in seconds.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=5, default=[8, 64, 8, 8, 8], metavar=("B", "M", "H", "W", "C"))
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--seconds", type=float, default=0.5, help="at least this much timed per piece")
    ap.add_argument("--json", default=None, help="also write the medians here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    costs = call_costs(args.shape, min_seconds=args.seconds)
    print(f"group_energy {args.shape} on the CPU, backend {ig.info()['backend']}, {torch.get_num_threads()} threads")
    for name, us in costs.items():
        print(f"  {name:38s} {us:8.1f} µs")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"shape": args.shape, "threads": torch.get_num_threads(), "median_us": costs}, fh, indent=1)
    return costs


if __name__ == "__main__":
    main()
