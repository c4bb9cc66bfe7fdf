"""The fused ops in code of your own: the group energy g_W of feature maps, its gradients, and a Langevin chain that
raises it, eagerly and under torch.compile.

    python python/examples/fused_ops.py [--device cpu|cuda] [--no-compile]

g_W(f) = sum_j sum_c w(j, c) <W[j, c], mean of group c's feature maps> scores how well each filter j's map matches
its own group's mean map (SPEC §2). Its gradient drives a Langevin chain on f (SPEC §4):
f <- f + step^2 / 2 * (dg/df - f) + step * noise.
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
import interpgan_ext as ig  # noqa: E402


def chain(f, W, groups, steps, step_size, generator):
    """`steps` Langevin steps on f that raise g_W (W fixed)."""
    for _ in range(steps):
        f = f.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(ig.ops.group_energy(f, W, groups).sum(), f)
        f = ig.ops.langevin_step(f.detach(), grad, step_size, prior_weight=1.0, drift_clip=1.0, generator=generator)
    return f.detach()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile part")
    args = ap.parse_args()
    dev = torch.device(args.device)
    print(f"ops backend on {dev.type}: {ig.info()['backend_' + dev.type]}")

    # A layer of M = 64 filters with 8x8 maps, in C = 4 groups; group 3 is empty, which is allowed (its mean is 0).
    B, M, C, H, Wd = 16, 64, 4, 8, 8
    torch.manual_seed(0)
    groups = (torch.arange(M) % (C - 1)).to(dev)
    W = (0.1 * torch.randn(M, C, H * Wd, device=dev)).requires_grad_(True)
    f = torch.randn(B, M, H, Wd, device=dev, requires_grad=True)

    # 1. Energy and gradients, checked against the float64 reference.
    g = ig.ops.group_energy(f, W, groups)
    g.sum().backward()
    ref = ig.ops.group_energy_reference(f.detach().double(), W.detach().double(), groups)
    print(f"g_W: shape {list(g.shape)}, max |fused - float64 reference| = {(g.double() - ref).abs().max().item():.2e}")
    print(f"gradients: |df| = {f.grad.norm().item():.3f}, |dW| = {W.grad.norm().item():.3f}")

    # 2. A seeded Langevin chain raises the energy; the same seed replays it exactly.
    Wfix = W.detach()
    start = torch.randn(B, M, H, Wd, device=dev)
    t0 = time.perf_counter()
    end = chain(start, Wfix, groups, args.steps, 0.1, torch.Generator(dev).manual_seed(1))
    eager_s = time.perf_counter() - t0
    again = chain(start, Wfix, groups, args.steps, 0.1, torch.Generator(dev).manual_seed(1))
    before, after = (ig.ops.group_energy(x, Wfix, groups).mean().item() for x in (start, end))
    print(f"Langevin, {args.steps} steps: mean g_W {before:.3f} -> {after:.3f}; replay identical: {torch.equal(end, again)}")

    # 3. The ops have fake kernels and registered autograd, so torch.compile traces them without graph breaks, and
    #    backward through the compiled graph runs the fused backward. With the same noise it matches eager mode.
    if not args.no_compile:
        def energy_and_step(f, W, groups, grad, noise):
            g = ig.ops.group_energy(f, W, groups)
            return g, ig.ops.langevin_step(f, grad, 0.1, drift_clip=1.0, noise=noise)

        compiled = torch.compile(energy_and_step, fullgraph=True)
        grad, noise = torch.randn_like(start), torch.randn_like(start)
        results = []
        for fn in (energy_and_step, compiled):
            Wc = Wfix.clone().requires_grad_(True)
            g, stepped = fn(start, Wc, groups, grad, noise)
            g.sum().backward()
            results.append((g.detach(), stepped, Wc.grad))
        diffs = [(a - b).abs().max().item() for a, b in zip(*results)]
        print("torch.compile(fullgraph=True), max |compiled - eager|: energy {:.1e}, Langevin step {:.1e}, "
              "dW {:.1e}".format(*diffs))
    print(f"eager chain: {1e3 * eager_s / args.steps:.2f} ms per step")


if __name__ == "__main__":
    main()
