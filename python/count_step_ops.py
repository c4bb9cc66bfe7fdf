"""How many ops one training step dispatches, part by part, and which.

    python python/count_step_ops.py [--size 64 --width 64 --batch-size 64] [--baseline] [--data-on-device on]
                                    [--device cpu] [--json out.json]

On a GPU every op is a kernel launch plus the host's work to issue it, and a training step there is bound by the
host, not by the device (bench/results/README.md: the H100 idle ~70% of a step). So the number of ops a step
dispatches is what host-side changes should lower, and it can be counted on any device, the CPU included: this
counts every op that reaches the dispatcher (a TorchDispatchMode), split by the trainer's timed parts (D,
Langevin, W, G; "data+other" is the rest: the real batch, z, the loss read-back). The step is a usual one: after
the first (which fits the GMM), and one that refits nothing. The trainer is bench_train.py's, with its options.

Each optimizer step is one op: the trainer's Adam is torch's fused kernel (interpgan_ext/optim.py), on the CPU as on
a GPU.
"""
import argparse
import collections
import json
import os
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, ".."))
sys.path.insert(0, _HERE)
from bench_train import make_trainer  # noqa: E402

_ENTER = torch.ops.profiler._record_function_enter_new.default
_EXIT = torch.ops.profiler._record_function_exit._RecordFunction
_PART_PREFIX = "interpgan::"  # the trainer's parts are profiler ranges named interpgan::PART (trainer._Timer)


class CountOps(TorchDispatchMode):
    """Counts the ops dispatched inside it, by the trainer part whose profiler range is open."""

    def __init__(self):
        super().__init__()
        self.ops = collections.defaultdict(collections.Counter)  # part -> op name -> count
        self._open = []  # names of the ranges entered and not yet left (they nest: with-blocks)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is _ENTER:
            self._open.append(args[0])
        elif func is _EXIT:
            self._open.pop()
        else:
            parts = [n[len(_PART_PREFIX):] for n in self._open if n.startswith(_PART_PREFIX)]
            self.ops[parts[-1] if parts else "data+other"][str(func.overloadpacket.__name__)] += 1
        return out


def count_step_ops(args):
    """{part: Counter of op names} for one step of the trainer args describe."""
    overrides = {"data_on_device": args.data_on_device, "langevin_graph": args.langevin_graph}
    trainer, step = make_trainer(args, not args.baseline, overrides)
    step()  # the first step fits the partition; the counted one refits nothing
    with CountOps() as counter:
        step()
    return dict(counter.ops)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="dcgan")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--layer", default=None)
    ap.add_argument("--data", default="synth-faces")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--n-groups", type=int, default=8)
    ap.add_argument("--langevin-steps", type=int, default=5)
    ap.add_argument("--gmm-images", type=int, default=64)
    ap.add_argument("--baseline", action="store_true", help="the plain GAN (lambda0 = 0)")
    ap.add_argument("--data-on-device", default="auto", help="TrainConfig.data_on_device: auto | on | off")
    ap.add_argument("--langevin-graph", default="off",
                    help="TrainConfig.langevin_graph: on replays the Langevin chain as a CUDA graph (GPU only)")
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--top", type=int, default=6, help="most frequent ops shown per part")
    ap.add_argument("--json", default=None, help="also write the counts here")
    args = ap.parse_args(argv)
    ops = count_step_ops(args)
    total = sum(sum(c.values()) for c in ops.values())
    kind = "baseline" if args.baseline else "interpretable"
    print(f"ops dispatched by one {kind} step: {args.arch} {args.size}px width {args.width}, batch {args.batch_size}, "
          f"{args.device}, data_on_device={args.data_on_device}"
          + (", langevin_graph=on" if args.langevin_graph == "on" else "") + f": {total}")
    for part, counts in sorted(ops.items(), key=lambda kv: -sum(kv[1].values())):
        top = ", ".join(f"{name} {n}" for name, n in counts.most_common(args.top))
        print(f"  {part:<11} {sum(counts.values()):6d}   {top}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"config": vars(args), "total": total, "ops": {p: dict(c) for p, c in ops.items()}}, fh, indent=1)
    return ops


if __name__ == "__main__":
    main()
