"""Per-kernel profile of the fused ops (torch.profiler), to see where an op's time goes.

    python python/profile_ops.py [--device cuda] [--shape 64 512 16 16 24]
    INTERPGAN_CUDA_PRODUCTS=staged python python/profile_ops.py      # the candidate CUDA product kernels
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import interpgan_ext as ig  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shape", type=int, nargs=5, default=[64, 512, 16, 16, 24], metavar=("B", "M", "H", "W", "C"))
    ap.add_argument("--iters", type=int, default=20)
    args = ap.parse_args()
    B, M, H, Wd, C = args.shape
    dev = torch.device(args.device)
    f = torch.randn(B, M, H, Wd, device=dev, requires_grad=True)
    W = torch.randn(M, C, H * Wd, device=dev, requires_grad=True)
    q = torch.randint(0, C, (M,), device=dev)
    z = torch.randn(B, 512, device=dev)

    def step():
        g = ig.ops.group_energy(f, W, q)
        torch.autograd.grad(g.sum(), (f, W))
        ig.ops.langevin_step(z, z, 0.1, out=z)

    for _ in range(3):
        step()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if dev.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
        torch.cuda.synchronize()
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(args.iters):
            step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
    key = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=60))


if __name__ == "__main__":
    main()
