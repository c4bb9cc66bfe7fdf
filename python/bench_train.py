"""Training throughput: how fast an interpretable GAN trains, where a step's time goes, and what the fused ops buy.

    python python/bench_train.py [--arch dcgan] [--size 32] [--batch-size 32] [--steps 20] [--repeats 3]
                                 [--variants baseline,fused,reference] [--trace DIR] [--out FILE.json]

Variants, each in a fresh process (the backend is chosen at import) and timed in interleaved rounds, so that a
slow spell of a noisy machine hits every variant rather than the one running then:
  baseline    the plain GAN (lambda0 = 0) on the same code path: the cost of GAN training alone;
  fused       the interpretable GAN with the compiled ops (what `interpgan train` runs);
  reference   the interpretable GAN with the pure-PyTorch reference ops (INTERPGAN_BACKEND=reference);
  fused-drawn (not in the default list) `fused` with each real batch drawn from the dataset, not from its images
              held on the device (TrainConfig.data_on_device="off"): on a GPU, what holding them saves;
  fused-graphed (not in the default list) `fused` with the Langevin chain replayed as one CUDA graph
              (TrainConfig.langevin_graph="on"; the same as `fused` on the CPU): what the launches cost.

For each it prints the median step time, images/s, and the step split into the trainer's parts (D, GMM, Langevin,
W, G, data and the rest). The GMM refit runs every gmm_every steps, so it is timed on its own and charged at
1/gmm_every per step. Ratios are the result (these machines are noisy): the interpretable step over the baseline's,
and the reference step over the fused one. Writes a JSON file and a stacked-bar PNG beside it. A variant whose
process fails is named with its error and left out; the others are still timed and written (exit status 1).

--trace DIR also records a few steps of each variant with torch.profiler: DIR/trace_VARIANT.json (open it in
https://ui.perfetto.dev or chrome://tracing; the parts are the ranges interpgan::D, ::GMM, ::Langevin, ::W, ::G)
and DIR/profile_VARIANT.txt (the top ops by self time).
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
from interpgan_ext.report import STEP_PARTS  # noqa: E402

VARIANTS = {  # name: (interpretable, environment of its process, TrainConfig fields)
    "baseline": (False, {}, {}),
    "fused": (True, {}, {}),
    "reference": (True, {"INTERPGAN_BACKEND": "reference"}, {}),
    "fused-drawn": (True, {}, {"data_on_device": "off"}),
    "fused-graphed": (True, {}, {"langevin_graph": "on"}),
}
PARTS = STEP_PARTS + ["data+other"]  # the trainer's timed parts, and the rest of the step


# ----------------------------------------------------------------------------- one variant, in its own process
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device):
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


def make_trainer(args, interpretable: bool, overrides=None):
    """The benchmark's Trainer for args (architecture, size, batch...), and a function that runs its next step. Its
    steps refit no GMM (gmm_every is out of reach), so that each is alike; the refit is timed on its own."""
    from interpgan_ext.data import build_dataset
    from interpgan_ext.models import build
    from interpgan_ext.trainer import Trainer, TrainConfig

    cfg = TrainConfig(steps=10**9, batch_size=args.batch_size, n_groups=args.n_groups,
                      lambda0=1.0 if interpretable else 0.0, langevin_steps=args.langevin_steps,
                      gmm_every=10**9, gmm_images=args.gmm_images, amp=args.amp, device=args.device, seed=0,
                      **(overrides or {}))
    data = build_dataset(args.data, args.size, n=2000, seed=0, progress=False)
    torch.manual_seed(0)
    G, D = build(args.arch, args.size, z_dim=cfg.z_dim, width=args.width)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(G, D, args.layer or G.default_layer, data, cfg, out_dir=tmp)

    def step():
        logs = trainer.train_step()
        trainer.step += 1
        return logs

    return trainer, step


def run_variant(args, interpretable: bool, trace_dir=None, overrides=None):
    """Trains args.warmup + args.steps steps of one variant; returns its per-step times (seconds)."""
    from interpgan_ext import _backend
    from interpgan_ext.trainer import step_generator

    trainer, step = make_trainer(args, interpretable, overrides)
    dev = trainer.device
    for _ in range(args.warmup):  # the first step also fits the partition
        step()
    steps, parts = [], []
    for _ in range(args.steps):
        seconds, logs = _timed(step, dev)
        steps.append(seconds)
        parts.append(logs["time"])
    refits = []
    if interpretable:
        for i in range(args.refits):
            refits.append(_timed(lambda: trainer.refit_partition(step_generator(0, 10**6 + i, 1)), dev)[0])
    if trace_dir:
        _trace(trainer, step, dev, interpretable, trace_dir, args)
    return {"backend": _backend.backend_name(dev), "device": str(dev), "layer": trainer.layer,
            "data_held_bytes": trainer.meta["data_held_bytes"],
            "n_filters": int(trainer.n_filters), "spatial": trainer.meta["spatial"],
            "step_s": steps, "parts_s": parts, "refit_s": refits,
            "langevin_graph": trainer.sampler.uses_cuda_graph}  # the chain ran as a CUDA graph (not eagerly)


def _trace(trainer, step, dev, interpretable, trace_dir, args):
    """A torch.profiler record of a refit (interpretable variants) and args.trace_steps steps."""
    from torch.profiler import ProfilerActivity, profile

    from interpgan_ext.trainer import step_generator

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=activities) as prof:
        if interpretable:
            with torch.profiler.record_function("interpgan::GMM"):
                trainer.refit_partition(step_generator(0, 2 * 10**6, 1))
        for _ in range(args.trace_steps):
            step()
        _sync(dev)
    os.makedirs(trace_dir, exist_ok=True)
    prof.export_chrome_trace(os.path.join(trace_dir, f"trace_{args.worker}.json"))
    sort = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    with open(os.path.join(trace_dir, f"profile_{args.worker}.txt"), "w") as fh:
        fh.write(prof.key_averages().table(sort_by=sort, row_limit=30))


# ----------------------------------------------------------------------------- the driver
def _worker_command(args, variant, repeat):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", variant]
    for name in ("arch", "size", "width", "batch_size", "n_groups", "langevin_steps", "gmm_images", "steps", "warmup",
                 "refits", "device", "data", "trace_steps"):
        cmd += ["--" + name.replace("_", "-"), str(getattr(args, name))]
    if args.layer:
        cmd += ["--layer", args.layer]
    if args.amp:
        cmd.append("--amp")
    if args.trace and repeat == 0:
        cmd += ["--trace", args.trace]
    return cmd


def run_all(args):
    """Every variant args.repeats times, in interleaved rounds: ({variant: [result of each repeat]}, {variant: why it
    failed}). A variant whose process fails is left out of the later rounds; the others go on (on a GPU, a variant
    that crashes must not cost the numbers of the rest)."""
    from interpgan_ext._progress import progress_bar

    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        sys.exit(f"bench_train: unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    results, failed = {v: [] for v in variants}, {}
    bar = progress_bar(len(variants) * args.repeats, "bench_train", not args.no_progress, unit="run")
    for repeat in range(args.repeats):
        for v in variants:
            if v in failed:
                continue
            bar.set_postfix({"variant": v, "round": repeat + 1})
            env = {**os.environ, **VARIANTS[v][1]}
            proc = subprocess.run(_worker_command(args, v, repeat), env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                failed[v] = f"exit {proc.returncode}: {proc.stderr[-4000:]}"
                print(f"bench_train: variant {v!r} failed ({failed[v]})", file=sys.stderr)
                del results[v]
            else:
                results[v].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            bar.update(1)
    bar.close()
    return results, failed


def summarise(results, gmm_every):
    """Per variant: the median over repeats of each repeat's median step and parts, in milliseconds."""
    summary = {}
    for v, reps in results.items():
        step_ms = statistics.median(1e3 * statistics.median(r["step_s"]) for r in reps)
        parts = {}
        for p in STEP_PARTS:  # the GMM refit is not in the timed steps: it is charged below
            parts[p] = statistics.median(1e3 * statistics.median(s.get(p, 0.0) for s in r["parts_s"]) for r in reps)
        refits = [1e3 * statistics.median(r["refit_s"]) for r in reps if r["refit_s"]]
        parts["GMM"] = statistics.median(refits) / gmm_every if refits else 0.0
        step_ms += parts["GMM"]  # the refit, charged per step
        parts["data+other"] = max(0.0, step_ms - sum(parts.values()))
        summary[v] = {"backend": reps[0]["backend"], "step_ms": step_ms, "parts_ms": {p: parts[p] for p in PARTS},
                      "gmm_refit_ms": statistics.median(refits) if refits else None}
    return summary


def ratios(summary):
    out = {}
    if "baseline" in summary:
        for v in ("fused", "reference"):
            if v in summary:
                out[f"{v}_step_over_baseline"] = summary[v]["step_ms"] / summary["baseline"]["step_ms"]
    for v in ("fused-drawn", "fused-graphed"):
        if "fused" in summary and v in summary:
            out[f"{v.replace('-', '_')}_step_over_fused"] = summary[v]["step_ms"] / summary["fused"]["step_ms"]
    if "fused" in summary and "reference" in summary:
        out["reference_step_over_fused"] = summary["reference"]["step_ms"] / summary["fused"]["step_ms"]
        for p in ("Langevin", "W", "G"):
            fused = summary["fused"]["parts_ms"][p]
            if fused > 0:
                out[f"reference_{p}_over_fused"] = summary["reference"]["parts_ms"][p] / fused
    return out


def print_table(summary, batch_size):
    head = f"{'variant':<13} {'backend':<10} {'ms/step':>9} {'images/s':>9}  " + " ".join(f"{p:>10}" for p in PARTS)
    print(head)
    print("-" * len(head))
    for v, s in summary.items():
        cells = " ".join(f"{s['parts_ms'][p]:>10.2f}" for p in PARTS)
        print(f"{v:<13} {s['backend']:<10} {s['step_ms']:>9.2f} {1e3 * batch_size / s['step_ms']:>9.1f}  {cells}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="dcgan")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--layer", default=None, help="target layer; default: the architecture's own")
    ap.add_argument("--data", default="synth-faces")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--n-groups", type=int, default=8)
    ap.add_argument("--langevin-steps", type=int, default=5)
    ap.add_argument("--gmm-images", type=int, default=64)
    ap.add_argument("--gmm-every", type=int, default=100, help="refit period the GMM's cost is charged at")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (the first one fits the GMM)")
    ap.add_argument("--refits", type=int, default=2, help="timed GMM refits per run")
    ap.add_argument("--repeats", type=int, default=3, help="rounds over the variants")
    ap.add_argument("--variants", default="baseline,fused,reference")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    ap.add_argument("--trace", default=None, metavar="DIR", help="torch.profiler traces of each variant, into DIR")
    ap.add_argument("--trace-steps", type=int, default=3)
    ap.add_argument("--out", default=None, help="JSON path (default: bench/results/train_<device>.json)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    for name in ("steps", "repeats", "batch_size"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")

    if args.worker:  # one variant in this process; its result is the last line of stdout
        interpretable, _, overrides = VARIANTS[args.worker]
        print(json.dumps(run_variant(args, interpretable, args.trace, overrides)))
        return

    import interpgan_ext as ig

    results, failed = run_all(args)
    if not results:
        sys.exit(f"bench_train: every variant failed: {failed}")
    summary = summarise(results, args.gmm_every)
    first = next(iter(results.values()))[0]
    device = first["device"].split(":")[0]
    print(f"{args.arch} {args.size}px, batch {args.batch_size}, target {first['layer']} "
          f"[{first['n_filters']} filters, {first['spatial'][0]}x{first['spatial'][1]}], C={args.n_groups}, "
          f"T={args.langevin_steps}; {device}, {torch.get_num_threads()} threads; "
          f"median of {args.repeats} runs x {args.steps} steps; GMM refit charged at 1/{args.gmm_every}")
    print_table(summary, args.batch_size)
    rat = ratios(summary)
    for k, v in rat.items():
        print(f"{k:<32} {v:.2f}x")
    graphed = results.get("fused-graphed")
    if graphed and not all(r["langevin_graph"] for r in graphed):
        print("fused-graphed: the Langevin chain ran eagerly (no CUDA graph on this device, or its capture failed)")
    for v, why in failed.items():
        print(f"{v}: FAILED, {why.strip().splitlines()[-1] if why.strip() else why}")

    out = args.out or os.path.join(ROOT, "bench", "results", f"train_{device}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    record = {"config": {k: v for k, v in vars(args).items() if k not in ("worker", "out", "no_progress")},
              "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                          "gpu": torch.cuda.get_device_name() if device == "cuda" else None},
              "summary": summary, "ratios": rat, "runs": results, "failed": failed, "info": dict(ig.info())}
    with open(out, "w") as fh:
        json.dump(record, fh, indent=1)
    from interpgan_ext.viz import stacked_bar_chart

    png = os.path.splitext(out)[0] + ".png"
    stacked_bar_chart([[s["parts_ms"][p] for p in PARTS] for s in summary.values()],
                      [f"{v} [{s['backend']}]" for v, s in summary.items()], PARTS, png,
                      title=f"ms per training step, {args.arch} {args.size}px, batch {args.batch_size}, {device}",
                      unit="ms")
    print(f"wrote {out} and {png}" + (f"; traces in {args.trace}" if args.trace else ""))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
