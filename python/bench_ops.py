"""Benchmark of the fused ops against eager PyTorch, torch.einsum and torch.compile, in one run.

    python python/bench_ops.py [--device cpu|cuda] [--out bench/results/ops_cpu.json] [--quick]

For every op and shape it prints the median time of each version, the fused op's speed-up over each
(ratios are what to compare across machines), and the roofline floor: the fewest bytes the op must move
over the memory bandwidth measured in this run, and its FLOPs over the float32 matrix-product rate
measured in this run. On a GPU, group_energy is timed twice: as called from Python (what a caller waits for,
host work included), and as CUDA graph replays, mode "(graph)" (the device's work alone, which is what the
floor bounds). Results go to a JSON file too, and a chart of the speed-ups beside it (a PNG of the same
name; `--plot JSON` draws it again from a saved run).
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import interpgan_ext as ig  # noqa: E402
from interpgan_ext.ops.group_energy import group_means  # noqa: E402


# ----------------------------------------------------------------------------- timing
def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn, device):
    """Seconds of one fn() call: CUDA events on GPU, perf_counter on CPU."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median_times(versions, device, reps, warmup=3, min_seconds=1.0, block_seconds=0.01):
    """Median seconds of each version's fn() ({name: fn} -> {name: s}), timed in interleaved rounds, so that a
    slow spell of a noisy machine hits every version rather than the one timed then (the ratios are the result).
    A round runs each version for a block of about block_seconds. A block's first call is not recorded: it finds
    the caches and threads as the other versions left them, while every version is timed in the steady state of
    repeated calls. (A call longer than a block is one block, recorded.) Rounds go on until every version has at
    least reps runs and at least min_seconds of them (capped at 100 * reps): sub-millisecond calls get hundreds."""
    per_call = {}
    for name, fn in versions.items():
        for _ in range(warmup):
            fn()
        per_call[name] = time_once(fn, device)
    times = {name: [] for name in versions}

    def done(ts):
        return len(ts) >= reps and (sum(ts) >= min_seconds or len(ts) >= 100 * reps)

    while not all(done(ts) for ts in times.values()):
        for name, fn in versions.items():
            if per_call[name] >= block_seconds:
                times[name].append(time_once(fn, device))
                continue
            fn()
            sync(device)
            for _ in range(max(1, int(block_seconds / max(per_call[name], 1e-7)))):
                times[name].append(time_once(fn, device))
    return {name: statistics.median(ts) for name, ts in times.items()}


def as_graph_replays(fn, n_sets):
    """fn's next n_sets calls captured as CUDA graphs; the function returned replays them in turn. A replay skips
    the host's part of a call (Python, dispatch, autograd's bookkeeping, the launches), so it times the device's
    work alone: what the roofline floor bounds, and what a training step sees when its GPU has a queue."""
    side = torch.cuda.Stream()  # warm-up on a side stream, as capture wants (autograd, cuBLAS and cuDNN set up)
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(n_sets):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graphs = []
    for _ in range(n_sets):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        graphs.append(graph)
    state = {"i": 0}

    def replay():
        graphs[state["i"] % n_sets].replay()
        state["i"] += 1

    return replay


def median_time(fn, device, reps, warmup=3, min_seconds=1.0):
    return median_times({"fn": fn}, device, reps, warmup, min_seconds)["fn"]


def measure_ceilings(device, quick):
    """Memory bandwidth (bytes read + written by a large copy) and float32 matrix-product FLOP/s."""
    n = (1 << 26) if device.type == "cuda" else (1 << 25)
    src = torch.randn(n, device=device)
    dst = torch.empty_like(src)
    t = median_time(lambda: dst.copy_(src), device, reps=5 if quick else 20)
    bandwidth = 2 * src.numel() * 4 / t
    m = 8192 if device.type == "cuda" else 1536
    prev_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # the kernels use plain float32 arithmetic
    a, b = torch.randn(m, m, device=device), torch.randn(m, m, device=device)
    t = median_time(lambda: a @ b, device, reps=3 if quick else 10)
    torch.backends.cuda.matmul.allow_tf32 = prev_tf32
    return bandwidth, 2 * m**3 / t


# ----------------------------------------------------------------------------- group_energy versions
def energy_broadcast(f, W, groups):
    """Eager PyTorch written as the formula reads: materialises [B, M, C, K]."""
    fk = f.flatten(2)
    fbar = group_means(fk, groups, W.shape[1])
    return (W[None] * fk[:, :, None] * fbar[:, None]).sum(dim=(1, 2, 3))


def energy_einsum(f, W, groups):
    fk = f.flatten(2)
    fbar = group_means(fk, groups, W.shape[1])
    return torch.einsum("jck,bjk,bck->b", W, fk, fbar)


def with_cuda_products(kernels, fn):
    """fn with the CUDA products' kernels set to `kernels` (INTERPGAN_CUDA_PRODUCTS) for the call: the candidate
    staged kernels are timed beside the default ones. Costs two environment writes a call (~µs)."""
    def call(*args):
        old = os.environ.get("INTERPGAN_CUDA_PRODUCTS")
        os.environ["INTERPGAN_CUDA_PRODUCTS"] = kernels
        try:
            return fn(*args)
        finally:
            if old is None:
                del os.environ["INTERPGAN_CUDA_PRODUCTS"]
            else:
                os.environ["INTERPGAN_CUDA_PRODUCTS"] = old
    return call


def bench_group_energy(shape, device, reps, peak_bw, peak_flops, skip_broadcast_bytes):
    B, M, H, Wd, C = shape
    K = H * Wd
    n_sets = 3  # rotate inputs so that repeated runs do not just measure the cache
    sets = []
    for _ in range(n_sets):
        f = torch.randn(B, M, H, Wd, device=device, requires_grad=True)
        W = torch.randn(M, C, K, device=device, requires_grad=True)
        sets.append((f, W, torch.randint(0, C, (M,), device=device)))
    compiled = torch.compile(energy_einsum, dynamic=False)
    versions = {"fused": ig.ops.group_energy, "einsum": energy_einsum, "compiled_einsum": compiled}
    if device.type == "cuda" and ig._backend.has_cuda_kernels():
        # the candidate kernels; a speed-up of fused under 1 over them means they are the faster
        versions["fused_staged"] = with_cuda_products("staged", ig.ops.group_energy)
    if B * M * C * K * 4 <= skip_broadcast_bytes:
        versions["eager_broadcast"] = energy_broadcast
    elem = 4
    fwd_bytes = (B * M * K + M * C * K + B) * elem
    fwd_flops = 2 * B * M * C * K + 3 * B * M * K
    fb_bytes = 2 * (B * M * K + M * C * K) * elem + 2 * B * elem
    fb_flops = 4 * fwd_flops
    rows = []
    for mode, n_bytes, flops in (("forward", fwd_bytes, fwd_flops), ("forward+backward", fb_bytes, fb_flops)):
        runs = {}
        for name, fn in versions.items():
            state = {"i": 0}

            def run(fn=fn, mode=mode, state=state):
                f, W, groups = sets[state["i"] % n_sets]
                state["i"] += 1
                if mode == "forward":
                    with torch.no_grad():
                        return fn(f, W, groups)
                g = fn(f, W, groups)
                return torch.autograd.grad(g.sum(), (f, W))

            runs[name] = run
        times = median_times(runs, device, reps)
        rows.append(make_row("group_energy", shape, mode, times, n_bytes, flops, peak_bw, peak_flops))
        if device.type == "cuda":  # the same calls again, as graph replays: the device's time alone
            replays = {name: as_graph_replays(run, n_sets) for name, run in runs.items()}
            times = median_times(replays, device, reps)
            rows.append(make_row("group_energy", shape, mode + " (graph)", times, n_bytes, flops, peak_bw,
                                 peak_flops))
    return rows


# ----------------------------------------------------------------------------- langevin_step versions
def langevin_eager(z, grad, step, noise=None):
    return ig.ops.langevin_step_reference(z, grad, step, 1.0, 1.0, noise)


def bench_langevin(shape, device, reps, peak_bw, peak_flops):
    z = torch.randn(shape, device=device)
    grad = torch.randn(shape, device=device)
    compiled = torch.compile(langevin_eager, dynamic=False)
    gen = torch.Generator(device).manual_seed(0)
    versions = {
        "fused": lambda: ig.ops.langevin_step(z, grad, 0.1, 1.0, 1.0, generator=gen),
        "eager": lambda: langevin_eager(z, grad, 0.1),
        "compiled": lambda: compiled(z, grad, 0.1),
    }
    times = median_times(versions, device, reps)
    n = z.numel()
    return [make_row("langevin_step", list(shape), "update", times, 3 * n * 4, 8 * n, peak_bw, peak_flops)]


def make_row(op, shape, mode, times, n_bytes, flops, peak_bw, peak_flops):
    floor = max(n_bytes / peak_bw, flops / peak_flops)
    fused = times["fused"]
    return {
        "op": op,
        "shape": list(shape),
        "mode": mode,
        "median_s": times,
        "speedup_of_fused": {k: v / fused for k, v in times.items() if k != "fused"},
        "roofline_floor_s": floor,
        "fused_over_floor": fused / floor,
        "bytes": n_bytes,
        "flops": flops,
    }


def print_table(rows):
    print()
    print(f"{'op':14} {'shape':22} {'mode':25} {'fused':>10} | speed-up of fused over: {'':>28} | x floor")
    for r in rows:
        sp = "  ".join(f"{k}={v:6.2f}x" for k, v in r["speedup_of_fused"].items())
        print(
            f"{r['op']:14} {str(r['shape']):22} {r['mode']:25} {r['median_s']['fused'] * 1e3:8.3f}ms | "
            f"{sp:52} | {r['fused_over_floor']:6.2f}"
        )


def plot(result, path):
    """The fused op's speed-up over each other version, per op, shape and mode, on a log scale (a PNG)."""
    from interpgan_ext.viz import speedup_chart

    groups = [(f"{r['op']} {r['mode']}\n{r['shape']}", r["speedup_of_fused"])
              for r in result["rows"]]
    title = (f"speed-up of the fused ops, {result['device']}, {result['threads']} threads, torch {result['torch']} "
             "(dashed: 5x)")
    return speedup_chart(groups, path, title=title, target=5.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None, help="JSON path (default: bench/results/ops_<device>.json)")
    ap.add_argument("--quick", action="store_true", help="few repetitions and the small shapes only")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--ops", nargs="+", choices=["group_energy", "langevin_step"],
                    default=["group_energy", "langevin_step"], help="which ops to time")
    ap.add_argument("--plot", metavar="JSON", default=None, help="only draw the chart of an earlier run's JSON")
    args = ap.parse_args()
    if args.plot:
        with open(args.plot) as fh:
            print(f"wrote {plot(json.load(fh), os.path.splitext(args.plot)[0] + '.png')}")
        return
    device = torch.device(args.device)
    reps = args.reps or (3 if args.quick else (50 if device.type == "cuda" else 7))
    torch.manual_seed(0)
    print(ig.info())
    peak_bw, peak_flops = measure_ceilings(device, args.quick)
    print(f"\nmeasured: memory bandwidth {peak_bw / 1e9:.1f} GB/s, float32 matmul {peak_flops / 1e12:.2f} TFLOP/s")
    energy_shapes = [(8, 64, 8, 8, 8), (64, 512, 16, 16, 24)]
    langevin_shapes = [(64, 512), (64, 512, 16, 16)]
    if args.quick:
        energy_shapes, langevin_shapes = energy_shapes[:1], langevin_shapes[:1]
    skip_bytes = 4 << 30 if device.type == "cuda" else 1 << 30
    rows = []
    if "group_energy" not in args.ops:
        energy_shapes = []
    if "langevin_step" not in args.ops:
        langevin_shapes = []
    for shape in energy_shapes:
        rows += bench_group_energy(shape, device, reps, peak_bw, peak_flops, skip_bytes)
    for shape in langevin_shapes:
        rows += bench_langevin(shape, device, reps, peak_bw, peak_flops)
    print_table(rows)
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "backend": ig.info()["backend_" + ("cuda" if device.type == "cuda" else "cpu")],
        "measured_bandwidth_Bps": peak_bw,
        "measured_fp32_flops": peak_flops,
        "rows": rows,
    }
    out = args.out or os.path.join("bench", "results", f"ops_{device.type}.json")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(f"\nwrote {out} and {plot(result, os.path.splitext(out)[0] + '.png')}")


if __name__ == "__main__":
    main()
