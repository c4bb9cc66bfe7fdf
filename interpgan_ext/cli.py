"""Command line: `interpgan train ...`, `interpgan info`."""
import argparse
import json
import os
import sys

import torch

from . import _backend


def _init_distributed():
    """Under torchrun (WORLD_SIZE > 1): one process per rank, NCCL on GPUs, gloo on CPUs."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))


def _train(args):
    from .data import build_dataset
    from .models import build
    from .trainer import TrainConfig, Trainer

    ckpt = os.path.join(args.out, "checkpoint.pt")
    if args.resume:
        if not os.path.exists(ckpt):
            sys.exit(f"interpgan train: --resume given but there is no checkpoint at {ckpt}")
        with open(os.path.join(args.out, "config.json")) as fh:
            saved = json.load(fh)
        cfg = TrainConfig.from_dict(saved["config"])
        cfg.steps = args.steps or cfg.steps
        arch, size, width, data_name = saved["arch"], saved["size"], saved["width"], saved["data"]
    else:
        if os.path.exists(ckpt) and not args.overwrite:
            sys.exit(f"interpgan train: {args.out} already holds a run; use --resume to continue it or --overwrite")
        overrides = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__ and v is not None}
        if args.baseline:
            overrides["lambda0"] = 0.0
        cfg = TrainConfig(**overrides)
        arch, size, width, data_name = args.arch, args.size, args.width, args.data
    _init_distributed()
    data = build_dataset(data_name, size, n=args.n_images, seed=cfg.seed)
    torch.manual_seed(cfg.seed)
    G, D = build(arch, size, z_dim=cfg.z_dim, width=width)
    layer = args.layer or G.default_layer
    meta = {"arch": arch, "size": size, "width": width, "data": data_name}
    trainer = Trainer(G, D, layer, data, cfg, out_dir=args.out, extra_meta=meta)
    if args.resume:
        trainer.load_checkpoint(ckpt)
        print(f"resuming {args.out} at step {trainer.step}")
    kind = "interpretable" if cfg.interpretable else "baseline (lambda0 = 0)"
    print(f"training {kind} {arch} at {size}px on {data_name} ({len(data)} images), target layer {layer!r} "
          f"[{trainer.n_filters} filters, C={cfg.n_groups}], {cfg.steps} steps on {trainer.device}, "
          f"ops backend: {_backend.backend_name(trainer.device)}")
    logs = trainer.fit(progress=not args.no_progress)
    print(f"done: {args.out} (samples/, log.jsonl, checkpoint.pt). Last: "
          + ", ".join(f"{k}={v:.4g}" for k, v in logs.items() if isinstance(v, float)))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="interpgan", description="Interpretable GANs (Li et al., AAAI 2022)")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="which backend runs the ops, and how the extension was built")

    tr = sub.add_parser("train", help="train an interpretable GAN (or, with --baseline, the plain GAN)",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    tr.add_argument("--data", default="synth-faces", help="synth-faces | lfw | a folder of images")
    tr.add_argument("--size", type=int, default=32, help="image size: 16, 32, 64 or 128")
    tr.add_argument("--arch", default="dcgan", help="generator family: dcgan | stylegan2")
    tr.add_argument("--width", type=int, default=32, help="base channel width of G and D")
    tr.add_argument("--layer", default=None, help="target layer (module path); default: the architecture's own")
    tr.add_argument("--steps", type=int, default=None, help="total steps (default 1500)")
    tr.add_argument("--out", default="runs/synth-faces", help="run directory")
    tr.add_argument("--baseline", action="store_true", help="lambda0 = 0: the plain GAN, same code path")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    tr.add_argument("--overwrite", action="store_true", help="start afresh even if --out holds a run")
    tr.add_argument("--n-images", type=int, default=20000, help="SynthFaces: number of distinct images")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    for name, typ in (("batch_size", int), ("n_groups", int), ("lambda0", float), ("lambda2", float),
                      ("lambda3", float), ("lambda_gmm", float), ("langevin_steps", int), ("langevin_step_size", float),
                      ("gmm_every", int), ("seed", int), ("lr_g", float), ("lr_d", float), ("device", str)):
        tr.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None)
    tr.add_argument("--amp", action="store_true", default=None, help="bf16 autocast on CUDA")
    args = ap.parse_args(argv)
    if args.command == "info":
        print(_backend.info())
        print(f"cuda_available       : {torch.cuda.is_available()}")
    elif args.command == "train":
        _train(args)


if __name__ == "__main__":
    main()
