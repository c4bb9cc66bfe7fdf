"""Where one small forward+backward of group_energy spends its time: the ops alone, autograd, and Python.

    python python/profile_call_cost.py [--shape 8 64 8 8 8] [--threads 2] [--json out.json]

At small shapes the fused kernels take microseconds, and a forward+backward through autograd costs several times
more than they do. This prints the median wall time of each piece, so that a change can be put where the time is:
  - the registered ops called directly: forward with saved statistics, and backward;
  - the forward through the autograd wrapper (it saves the statistics and builds the graph node);
  - torch.autograd.grad on a graph built once and retained (the engine, the backward op, Python);
  - the whole step as bench_ops.py times it: forward, .sum(), autograd.grad;
  - the same step with a builtin (x * y).sum() of the same size: the cost every op pays, fused or not.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import interpgan_ext as ig  # noqa: E402


def median_us(fn, calls, blocks=7):
    """Median over `blocks` blocks of the mean time of `calls` calls, in µs, after a warm-up."""
    for _ in range(max(10, calls // 10)):
        fn()
    means = []
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        means.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(means)


def call_costs(shape, calls):
    B, M, H, Wd, C = shape
    f = torch.randn(B, M, H, Wd, requires_grad=True)
    W = torch.randn(M, C, H * Wd, requires_grad=True)
    q = torch.randint(0, C, (M,))
    fd, Wd_ = f.detach(), W.detach()
    ops = torch.ops.interpgan
    costs = {}
    if ig._backend.use_compiled(f):
        _, stats = ops.group_energy_with_stats(fd, Wd_, q)
        ones = torch.ones(B)
        costs["op: forward with statistics"] = median_us(lambda: ops.group_energy_with_stats(fd, Wd_, q), calls)
        costs["op: backward (df and dW)"] = median_us(
            lambda: ops.group_energy_backward(ones, fd, Wd_, q, stats, [True, True]), calls)
    costs["forward through autograd"] = median_us(lambda: ig.ops.group_energy(f, W, q), calls)
    retained = ig.ops.group_energy(f, W, q).sum()
    costs["autograd.grad, retained graph"] = median_us(
        lambda: torch.autograd.grad(retained, (f, W), retain_graph=True), calls)
    costs["step: forward, sum, autograd.grad"] = median_us(
        lambda: torch.autograd.grad(ig.ops.group_energy(f, W, q).sum(), (f, W)), calls)
    x, y = torch.randn(B, 1, requires_grad=True), torch.randn(B, 1, requires_grad=True)
    costs["same step, builtin (x * y).sum()"] = median_us(lambda: torch.autograd.grad((x * y).sum(), (x, y)), calls)
    return costs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=5, default=[8, 64, 8, 8, 8], metavar=("B", "M", "H", "W", "C"))
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--calls", type=int, default=2000, help="calls per timed block (7 blocks)")
    ap.add_argument("--json", default=None, help="also write the medians here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    costs = call_costs(args.shape, args.calls)
    print(f"group_energy {args.shape} on the CPU, backend {ig.info()['backend']}, {torch.get_num_threads()} threads")
    for name, us in costs.items():
        print(f"  {name:38s} {us:8.1f} µs")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"shape": args.shape, "threads": torch.get_num_threads(), "median_us": costs}, fh, indent=1)
    return costs


if __name__ == "__main__":
    main()
