"""Command line: `interpgan train | swap | visualize | eval | table | report | info`, and the analysis verbs\n`sefa | ganspace | latent-shift | invert | ace` (interpgan_ext/analysis/cli.py)."""
import argparse
import json
import os
import sys

import torch

from . import _backend
from ._cli_args import FRACTION, NON_NEGATIVE, POSITIVE, POSITIVE_REAL, at_least, real_in
from .metrics.segmenter import DEFAULT_STEPS as SEG_STEPS


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default where it has one worth showing (not None, not a bare flag's False)."""

    def _get_help_string(self, action):
        if any(action.default is v for v in (None, False, argparse.SUPPRESS)) or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


# `interpgan train` flags that set a TrainConfig field: (type, help). Their argparse default is None, so that
# --resume changes only what is given; the help shows TrainConfig's default instead.
_TRAIN_FLAGS = {
    "batch_size": (POSITIVE, "images per step (per rank under torchrun)"),
    "n_groups": (POSITIVE, "C, the filter groups (concepts) of the target layer"),
    "lambda0": (real_in(0), "weight of the interpretability terms in G's loss; 0 = the plain GAN"),
    "lambda2": (real_in(0), "weight of the energy terms L_cd (W) and L_real (G), per filter-position"),
    "lambda3": (real_in(0), "weight of L_interp in W's loss"),
    "lambda_gmm": (real_in(0), "weight of L_gmm in G's loss, per descriptor dimension"),
    "langevin_steps": (NON_NEGATIVE, "T, Langevin steps per negative sample"),
    "langevin_step_size": (real_in(0), "delta, the Langevin step size"),
    "gmm_every": (POSITIVE, "steps between refits of the GMM filter partition"),
    "gmm_relative_reg": (real_in(0), "GMM variance floor, relative to the descriptors' mean variance; 0 = plain EM"),
    "gmm_loss": (str, "L_gmm: likelihood (SPEC) | posterior (tempered)"),
    "gmm_min_group_size": (NON_NEGATIVE, "every group keeps at least this many filters; 0 = plain EM"),
    "seed": (int, "seeds every draw of every step; a resumed run goes on as the uninterrupted one"),
    "ckpt_every": (POSITIVE, "steps between checkpoints"),
    "ckpt_minutes": (real_in(0), "and minutes between them at most (a hard kill loses less); 0 = by steps only"),
    "lr_g": (POSITIVE_REAL, "G's Adam learning rate"),
    "lr_d": (POSITIVE_REAL, "D's Adam learning rate"),
    "device": (str, "auto | cpu | cuda | cuda:N"),
    "data_on_device": (str, "hold the real images on the device: auto (on a GPU, when they take at most a quarter "
                            "of its free memory) | on | off"),
    "langevin_graph": (str, "on: on a GPU, run the Langevin chain as one captured CUDA graph (fewer launches) | off"),
}


# What a bad argument raises (an unknown layer, a missing folder, a value out of range): the CLI prints the message
# on one line instead of a traceback.
USER_ERRORS = (ValueError, KeyError, FileNotFoundError)


def _said(e: Exception) -> str:
    return e.args[0] if isinstance(e, KeyError) and e.args else str(e)  # str() of a KeyError quotes its message


def _init_distributed() -> bool:
    """Under torchrun (WORLD_SIZE > 1): one process per rank, NCCL on GPUs, gloo on CPUs. True on the rank that
    talks (rank 0, or the only process)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


# What a new run is when these options are not given (their parser default is None: given or not is known).
_RUN_DEFAULTS = {"data": "synth-faces", "size": 32, "arch": "dcgan", "width": 32}
SYNTH_FACES_IMAGES = 20000
# Where and how a run executes and how often it is saved, not what it trains: --resume may change these, and --steps.
_RUNTIME_OPTIONS = ("device", "data_on_device", "langevin_graph", "ckpt_every", "ckpt_minutes")


def _n_images(args, data: str):
    """--n-images, else SynthFaces' default count; for a folder (or lfw), None: all its images."""
    from .data import is_synth_faces

    return args.n_images or (SYNTH_FACES_IMAGES if is_synth_faces(data) else None)


def _run_setup(args) -> dict:
    """A new run's data, size, arch, width, target layer (None: the architecture's own) and image count."""
    run = {k: d if getattr(args, k) is None else getattr(args, k) for k, d in _RUN_DEFAULTS.items()}
    run["layer"] = args.layer
    run["n_images"] = _n_images(args, run["data"])
    return run


def _resumed_setup(args, saved: dict, given: dict) -> dict:
    """The saved run's setup. An option that would change what it trains is refused, not ignored (it was: a resumed
    run quietly went back to the default target layer and 20000 SynthFaces images)."""
    from .trainer import TrainConfig

    saved_cfg = TrainConfig.from_dict(saved["config"])  # an older run's config lacks newer fields: their defaults
    run = {k: saved[k] for k in _RUN_DEFAULTS}
    run["layer"] = saved["layer"]
    # a run from before n_images was saved: what the CLI used then, --n-images or its default
    run["n_images"] = saved["n_images"] if "n_images" in saved else _n_images(args, run["data"])
    changed = [f"--{k.replace('_', '-')} {v} (the run's: {getattr(saved_cfg, k)})" for k, v in given.items()
               if k not in _RUNTIME_OPTIONS and getattr(saved_cfg, k) != v]
    changed += [f"--{k.replace('_', '-')} {getattr(args, k)} (the run's: {run[k]})" for k in run
                if getattr(args, k) is not None and getattr(args, k) != run[k]]
    if changed:
        sys.exit(f"interpgan train: --resume continues {args.out} as it was set up, and these options would change "
                 f"it: {'; '.join(changed)}. Leave them out (--steps, --device, --data-on-device, --langevin-graph, "
                 "--ckpt-every and --ckpt-minutes may change), or start a new run in another --out.")
    return run


def _build_trainer(args):
    """The Trainer that `interpgan train` runs (a new run, or --resume), and its dataset."""
    from .data import build_dataset
    from .models import build
    from .runs import read_config
    from .trainer import TrainConfig, Trainer

    ckpt = os.path.join(args.out, "checkpoint.pt")
    given = {k: v for k, v in vars(args).items()
             if k in TrainConfig.__dataclass_fields__ and k != "steps" and v is not None}
    if args.baseline:
        given["lambda0"] = 0.0
    if args.resume:
        if not os.path.exists(ckpt):
            sys.exit(f"interpgan train: --resume given but there is no checkpoint at {ckpt}")
        saved = read_config(os.path.join(args.out, "config.json"))
        run = _resumed_setup(args, saved, given)
        runtime = {k: v for k, v in given.items() if k in _RUNTIME_OPTIONS}
        cfg = TrainConfig.from_dict({**saved["config"], **runtime, "steps": args.steps or saved["config"]["steps"]})
    else:
        if os.path.exists(ckpt) and not args.overwrite:
            sys.exit(f"interpgan train: {args.out} already holds a run; use --resume to continue it or --overwrite")
        run = _run_setup(args)
        cfg = TrainConfig(**given, **({"steps": args.steps} if args.steps else {}))
    speaks = _init_distributed()
    data = build_dataset(run["data"], run["size"], n=run["n_images"], seed=cfg.seed,
                         progress=speaks and not args.no_progress, max_images=run["n_images"])
    torch.manual_seed(cfg.seed)
    G, D = build(run["arch"], run["size"], z_dim=cfg.z_dim, width=run["width"])
    meta = {k: run[k] for k in (*_RUN_DEFAULTS, "n_images")}
    trainer = Trainer(G, D, run["layer"] or G.default_layer, data, cfg, out_dir=args.out, extra_meta=meta)
    if args.resume:
        trainer.load_checkpoint(ckpt)
    return trainer, data


def _train(args):
    from .trainer import TrainingInterrupted, end_distributed

    try:
        trainer, data = _build_trainer(args)
    except USER_ERRORS as e:  # what the user asked for cannot be built: say why
        sys.exit(f"interpgan train: {_said(e)}")
    cfg, meta = trainer.cfg, trainer.meta
    say = print if trainer.is_main else (lambda *a, **k: None)  # under torchrun, rank 0 speaks for all
    if getattr(data, "cache_file", None):  # an image folder: say where its decoded copy lives
        how = "read from the cache" if data.from_cache else "decoded and cached"
        say(f"data: {len(data)} images of {meta['data']}, {how} ({data.cache_file}; INTERPGAN_CACHE=off disables)")
    if args.resume:
        say(f"resuming {args.out} at step {trainer.step}")
    kind = "interpretable" if cfg.interpretable else "baseline (lambda0 = 0)"
    say(f"training {kind} {meta['arch']} at {meta['size']}px on {meta['data']} ({len(data)} images), target layer "
        f"{trainer.layer!r} [{trainer.n_filters} filters, C={cfg.n_groups}], {cfg.steps} steps on {trainer.device}, "
        f"ops backend: {_backend.backend_name(trainer.device)}")
    if meta["data_held_bytes"]:
        say(f"data: held on {trainer.device} ({meta['data_held_bytes'] / 1e6:.0f} MB; --data-on-device off draws each "
            "batch from the dataset instead)")
    if cfg.langevin_graph == "on" and cfg.interpretable:
        say("Langevin chain: replayed as one CUDA graph (--langevin-graph off runs it eagerly)"
            if trainer.device.type == "cuda" else
            f"--langevin-graph on: no effect on {trainer.device} (CUDA graphs need a GPU); the chain runs eagerly")
    stop = None
    try:
        logs = trainer.fit(progress=not args.no_progress)
    except TrainingInterrupted as interrupted:  # every rank stopped after the same step
        stop = interrupted
    del trainer  # its DDP wrappers hold the process group
    end_distributed()
    if stop is not None:
        say(f"interrupted by {stop.signal_name} after step {stop.step}; checkpoint saved: {stop.checkpoint}. "
            f"Continue with: interpgan train --out {args.out} --resume", file=sys.stderr)
        sys.exit(143 if stop.signal_name == "SIGTERM" else 130)  # the shell's codes for these signals
    say(f"done: {args.out} (samples/, log.jsonl, checkpoint.pt). Last: "
        + ", ".join(f"{k}={v:.4g}" for k, v in logs.items() if isinstance(v, float))
        + (f"; filters per group: {logs['group_sizes']}" if "group_sizes" in logs else ""))


def _load(path, device):
    from .runs import load_run

    try:
        return load_run(path, device=device)
    except USER_ERRORS as e:
        sys.exit(f"interpgan: {_said(e)}")


def _swap(args):
    from .edit import refine, replace_channels, swap_concept
    from .runs import partition_of
    from .viz import swap_figure

    run = _load(args.run, args.device)
    q = partition_of(run)
    za, zb = run.latents(args.pairs, args.seed), run.latents(args.pairs, args.seed + 1)
    try:
        res = swap_concept(run.G, run.layer, za, zb, groups=args.group, q=q)
    except USER_ERRORS as e:
        sys.exit(f"interpgan swap: {_said(e)}")
    if args.refine:
        if run.energy is None:
            sys.exit("interpgan swap: --refine needs an interpretable run (a baseline run has no energy model)")
        gen = torch.Generator(run.device).manual_seed(args.seed)
        _, res.edited_a = refine(run.G, run.layer, run.energy, za, q, edit=replace_channels(res.features_b, res.channels),
                                 steps=args.refine, step_size=args.step_size, generator=gen)
    out = args.out or os.path.join(args.run, f"swap_group{'-'.join(map(str, args.group))}.png")
    print(f"wrote {swap_figure(res, out)}: {args.pairs} pairs, groups {args.group} ({len(res.channels)} filters)")


def _visualize(args):
    from .viz import visualize_run

    run = _load(args.run, args.device)
    metrics = None
    mpath = os.path.join(args.run, "metrics.json")
    if os.path.exists(mpath):
        with open(mpath) as fh:
            metrics = json.load(fh)
    elif run.on_synth_faces:  # other data has no parts to chart
        print("note: no metrics.json (interpgan eval writes it); the per-part charts are left out")
    paths = visualize_run(run, args.out or os.path.join(args.run, "figures"), n_images=args.images,
                          n_filters=args.filters, seed=args.seed, metrics=metrics)
    print("wrote " + ", ".join(paths))


def _segmenter_for(run, args):
    from .metrics import load_or_train_segmenter

    if not run.on_synth_faces:
        print("note: the run's data has no part labels; IoU is skipped and locality uses thresholded activations")
        return None, None
    seg, scores = load_or_train_segmenter(args.run, run.meta["size"], device=run.device, steps=args.seg_steps,
                                          progress=not args.no_progress)
    print(f"segmenter ({run.meta['size']} px): held-out pixel accuracy {scores['pixel_accuracy']:.3f}, "
          f"mIoU {scores['miou']:.3f}")
    if scores["miou"] < args.min_seg_miou:
        small = ("" if run.meta["size"] >= 64 else
                 f" At {run.meta['size']} px it levels off below 0.9 however long it trains (the brows are a pixel "
                 f"thick), so there the choice is a run at 64 px, or a lower bar.")
        sys.exit(f"interpgan eval: the part segmenter's held-out mIoU {scores['miou']:.3f} is below "
                 f"--min-seg-miou {args.min_seg_miou}; its labels are not good enough to measure with. Train it "
                 f"longer (--seg-steps N retrains the cached one), or lower the bar knowingly.{small}")
    return seg.segment, scores


def _eval(args):
    from .metrics import default_extractor, evaluate_run
    from .metrics.evaluate import compare_with_baseline
    from .metrics.realism import inception_weights_path
    from .report import format_table, summary_rows
    from .runs import load_baseline

    run = _load(args.run, args.device)
    base = load_baseline(args.baseline, run, args.device) if args.baseline else None  # before the long work
    seg, scores = _segmenter_for(run, args)
    extractor = None
    if seg is not None or inception_weights_path(args.inception):
        extractor = default_extractor(seg.__self__ if seg is not None else None, args.inception, device=run.device)
    else:  # no segmenter's encoder to borrow, and nothing may be downloaded
        print("note: FID/KID skipped: the run's data has no part segmenter whose encoder could serve; give local "
              "Inception-v3 weights (--inception PATH or INTERPGAN_INCEPTION_WEIGHTS)")
    kw = dict(n_images=args.images, n_pairs=args.pairs, batch_size=args.batch_size, seed=args.seed,
              progress=not args.no_progress)
    metrics = evaluate_run(run, segmenter=seg, extractor=extractor, **kw)
    if scores:
        from .metrics._cache import state_fingerprint

        metrics["segmenter"] = {**{k: v for k, v in scores.items() if k != "iou"},
                                "fingerprint": state_fingerprint(seg.__self__)}
    if base is not None:
        if seg is not None:
            metrics["baseline"] = compare_with_baseline(metrics, base, seg, extractor=extractor, **kw)
        else:
            metrics["baseline"] = evaluate_run(base, extractor=extractor, **kw)
    path = os.path.join(args.run, "metrics.json")
    from ._atomic import atomic_write_json

    atomic_write_json(metrics, path)
    names = [run.name] + ([os.path.basename(os.path.normpath(args.baseline))] if args.baseline else [])
    print(format_table(names, summary_rows(metrics, metrics.get("baseline"))))
    print(f"wrote {path}")


def _table(args):
    from .report import runs_table

    named = []
    for path in args.runs:
        file = os.path.join(path, "metrics.json")
        if not os.path.exists(file):
            sys.exit(f"interpgan table: {file} does not exist; run `interpgan eval {path}` first")
        with open(file) as fh:
            named.append((os.path.basename(os.path.normpath(path)), json.load(fh)))
    table, warnings = runs_table(named, markdown=args.markdown)
    print(table)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)


def _report(args):
    from .report import write_report
    from .runs import load_baseline

    run = _load(args.run, args.device)
    base = load_baseline(args.baseline, run, args.device) if args.baseline else None
    print(f"wrote {write_report(run, base, args.out)}")


def _cache(args):
    from .data.image_folder import cache_entries, clear_cache, default_cache_dir

    where = default_cache_dir()
    if where is None:
        print("the image cache is off (INTERPGAN_CACHE=off)")
        return
    if args.clear:
        print(f"deleted {clear_cache(where) / 1e6:.1f} MB from {where}")
        return
    entries = cache_entries(where)
    for e in entries:
        print(f"{e['bytes'] / 1e6:10.1f} MB  {e['n_images']:8d} images at {e['size']:4d} px  {e['path']}")
    total = sum(e["bytes"] for e in entries) / 1e6
    print(f"{len(entries)} cached folder(s), {total:.1f} MB, in {where} (interpgan cache --clear deletes them)")


def build_parser():
    """interpgan's argument parser, and {verb: handler(run, args)} for the analysis verbs."""
    from . import __version__
    from .analysis.cli import add_parsers
    from .trainer import TrainConfig

    ap = argparse.ArgumentParser(prog="interpgan", description="Interpretable GANs (Li et al., AAAI 2022)")
    cuda_kernels = "yes" if _backend.has_cuda_kernels() else "no"
    ap.add_argument("--version", action="version", version=f"interpgan_ext {__version__} (torch {torch.__version__}, "
                    f"ops: {_backend.backend_name('cpu')}, CUDA kernels: {cuda_kernels})")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="which backend runs the ops, and how the extension was built")
    ca = sub.add_parser("cache", help="list (or --clear) the decoded image folders cached on disk")
    ca.add_argument("--clear", action="store_true", help="delete them all")

    tr = sub.add_parser("train", help="train an interpretable GAN (or, with --baseline, the plain GAN)")
    tr.add_argument("--data", default=None,
                    help="synth-faces | lfw | a folder of images (decoded once, then cached; INTERPGAN_CACHE=DIR|off) "
                         f"(default: {_RUN_DEFAULTS['data']})")
    tr.add_argument("--size", type=at_least(8), default=None,
                    help=f"image size: 16, 32, 64 or 128 (default: {_RUN_DEFAULTS['size']})")
    tr.add_argument("--arch", default=None, help=f"generator family: dcgan | stylegan2 (default: {_RUN_DEFAULTS['arch']})")
    tr.add_argument("--width", type=POSITIVE, default=None,
                    help=f"base channel width of G and D (default: {_RUN_DEFAULTS['width']})")
    tr.add_argument("--layer", default=None, help="target layer (module path); by default the architecture's own")
    tr.add_argument("--steps", type=POSITIVE, default=None,
                    help=f"total steps; with --resume, the new total (default: {TrainConfig.steps})")
    tr.add_argument("--out", default="runs/synth-faces", help="run directory")
    tr.add_argument("--baseline", action="store_true", help="lambda0 = 0: the plain GAN, same code path")
    tr.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    tr.add_argument("--overwrite", action="store_true", help="start afresh even if --out holds a run")
    tr.add_argument("--n-images", type=POSITIVE, default=None,
                    help=f"SynthFaces: distinct images (default: {SYNTH_FACES_IMAGES}); a folder: its first N (default: all)")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    for name, (typ, text) in _TRAIN_FLAGS.items():
        tr.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None,
                        help=f"{text} (default: {getattr(TrainConfig, name)})")
    tr.add_argument("--amp", action="store_true", default=None, help="bf16 autocast on CUDA")
    tr.add_argument("--mirror", action="store_true", default=None,
                    help="flip each real image left-right with probability 1/2 (for a small dataset)")

    sw = sub.add_parser("swap", help="swap filter groups between pairs of generated images; writes a PNG grid")
    sw.add_argument("run", help="run directory")
    sw.add_argument("--group", type=int, nargs="+", required=True, help="group id(s); several = a region swap")
    sw.add_argument("--pairs", type=POSITIVE, default=8, help="image pairs (rows of the grid)")
    sw.add_argument("--refine", type=NON_NEGATIVE, default=0, help="Langevin refinement steps on the edited A images")
    sw.add_argument("--step-size", type=POSITIVE_REAL, default=0.05, help="Langevin step size of --refine")
    sw.add_argument("--out", default=None, help="PNG path (default RUN/swap_group<c>.png)")

    vi = sub.add_parser("visualize", help="filter activations, group map and partition charts as PNGs")
    vi.add_argument("run", help="run directory")
    vi.add_argument("--images", type=POSITIVE, default=8, help="generated images shown")
    vi.add_argument("--filters", type=POSITIVE, default=16, help="filters shown")
    vi.add_argument("--out", default=None, help="folder (default RUN/figures)")

    ev = sub.add_parser("eval", help="IoU, locality and FID/KID; writes RUN/metrics.json")
    ev.add_argument("run", help="run directory")
    ev.add_argument("--baseline", default=None, help="a baseline run (lambda0 = 0) to compare with")
    ev.add_argument("--images", type=at_least(2), default=1000, help="generated images for IoU and FID (FID needs 2)")
    ev.add_argument("--pairs", type=POSITIVE, default=64, help="swap pairs per group for locality")
    ev.add_argument("--batch-size", type=POSITIVE, default=64, help="images per forward pass")
    ev.add_argument("--seg-steps", type=POSITIVE, default=SEG_STEPS, help="segmenter training steps (cached in RUN)")
    ev.add_argument("--min-seg-miou", type=FRACTION, default=0.9, help="refuse to measure with a worse segmenter")
    ev.add_argument("--inception", default=None, help="local Inception-v3 weights for FID (else the segmenter's encoder)")
    ev.add_argument("--no-progress", action="store_true", help="no progress bars")

    tb = sub.add_parser("table", help="the metrics.json of several runs side by side (seeds, variants)")
    tb.add_argument("runs", nargs="+", help="run directories, each evaluated by `interpgan eval`")
    tb.add_argument("--markdown", action="store_true", help="a Markdown table")

    rp = sub.add_parser("report", help="a self-contained report.html (run eval first for the metric tables)")
    rp.add_argument("run", help="run directory")
    rp.add_argument("--baseline", default=None, help="a baseline run (lambda0 = 0) to show beside it")
    rp.add_argument("--out", default=None, help="folder (default RUN/report)")

    analysis_verbs, analysis_parsers = add_parsers(sub)
    for p in (sw, vi, ev, rp, *analysis_parsers):
        p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
        p.add_argument("--seed", type=int, default=0, help="random seed: the latents, and what the verb trains")
    for p in sub.choices.values():
        p.formatter_class = _Help
    return ap, analysis_verbs


def main(argv=None):
    ap, analysis_verbs = build_parser()
    args = ap.parse_args(argv)
    if args.command == "info":
        print(_backend.info())
        print(f"cuda_available       : {torch.cuda.is_available()}")
    elif args.command == "cache":
        _cache(args)
    elif args.command in analysis_verbs:
        try:
            analysis_verbs[args.command](_load(args.run, args.device), args)
        except USER_ERRORS as e:
            sys.exit(f"interpgan {args.command}: {_said(e)}")
    elif args.command == "train":
        _train(args)
    else:
        verb = {"swap": _swap, "visualize": _visualize, "eval": _eval, "table": _table, "report": _report}[args.command]
        try:
            verb(args)
        except USER_ERRORS as e:
            sys.exit(f"interpgan {args.command}: {_said(e)}")


if __name__ == "__main__":
    main()
