"""Exercises every CUDA kernel once on small, odd shapes and all dtypes; run under compute-sanitizer:

    compute-sanitizer --tool memcheck  python python/sanitize_ops.py
    compute-sanitizer --tool racecheck python python/sanitize_ops.py
"""
import os

import torch

import interpgan_ext as ig


def main():
    assert ig._backend.has_cuda_kernels(), "the extension has no CUDA kernels"
    dev = "cuda"
    gen = torch.Generator(dev).manual_seed(0)
    for dtype, w_dtype in [(torch.float32, torch.float32), (torch.float64, torch.float64),
                           (torch.float16, torch.float16), (torch.bfloat16, torch.float32)]:
        for B, M, H, W, C in [(5, 7, 3, 5, 3), (1, 1, 1, 1, 1), (6, 33, 4, 9, 5), (3, 12, 1, 1, 12)]:
            f = torch.randn(B, M, H, W, device=dev, dtype=dtype, requires_grad=True)
            Wt = torch.randn(M, C, H * W, device=dev, dtype=w_dtype, requires_grad=True)
            q = torch.randint(0, C, (M,), device=dev)
            g = ig.ops.group_energy(f, Wt, q)  # autograd: the forward saves its stats, the backward reads them
            g.sum().backward()
            gg = torch.randn(B, device=dev, dtype=dtype)
            with torch.no_grad():
                ig.ops.group_energy(f, Wt, q)
                for kernels in ("direct", "staged"):  # both sets of product kernels (INTERPGAN_CUDA_PRODUCTS)
                    os.environ["INTERPGAN_CUDA_PRODUCTS"] = kernels
                    _, stats = torch.ops.interpgan.group_energy_with_stats(f, Wt, q)
                    for mask in ([True, True], [True, False], [False, True]):  # with the stats, and recomputing
                        torch.ops.interpgan.group_energy_backward(gg, f, Wt, q, stats, mask)
                        torch.ops.interpgan.group_energy_backward(gg, f, Wt, q, None, mask)
                os.environ.pop("INTERPGAN_CUDA_PRODUCTS")
        z = torch.randn(5, 7, device=dev, dtype=dtype)
        ig.ops.langevin_step(z, torch.randn_like(z), 0.1, drift_clip=1.0, generator=gen)
        ig.ops.langevin_step(z, torch.randn_like(z), 0.1, out=z)
    torch.cuda.synchronize()
    print("sanitize_ops: all kernels ran")


if __name__ == "__main__":
    main()
