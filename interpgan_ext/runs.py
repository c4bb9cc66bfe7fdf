"""A trained run directory (written by `interpgan train` / `Trainer`), loaded for editing, metrics and reports."""
import json
import os
import pickle
import warnings
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from .data import is_synth_faces
from .energy import EnergyModel
from .partition import FilterPartition


@dataclass
class Run:
    """What the tools after training need: G (its EMA by default), the target layer, W, q, the config."""

    path: str
    G: nn.Module
    layer: str
    energy: Optional[EnergyModel]   # None for a baseline run (lambda0 = 0 trains no W)
    q: Optional[torch.Tensor]       # the partition; None for a baseline run
    config: dict
    meta: dict
    step: int
    D: Optional[nn.Module] = None   # the discriminator, when the run's architecture is known (for realism scores)

    @property
    def interpretable(self) -> bool:
        return self.q is not None

    @property
    def z_dim(self) -> int:
        return int(self.config["z_dim"])

    @property
    def n_groups(self) -> int:
        return int(self.config["n_groups"])

    @property
    def device(self) -> torch.device:
        return next(self.G.parameters()).device

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.path))

    @property
    def data(self) -> str:
        """What the run trained on: synth-faces, lfw or a folder's path."""
        return self.meta.get("data", "synth-faces")

    @property
    def on_synth_faces(self) -> bool:
        """Trained on SynthFaces, the only data with part labels and attributes to measure against."""
        return is_synth_faces(self.data)

    def latents(self, n: int, seed: int = 0) -> torch.Tensor:
        return torch.randn(n, self.z_dim, generator=torch.Generator().manual_seed(seed)).to(self.device)

    def log(self) -> list:
        """The rows of log.jsonl (loss terms and throughput over steps)."""
        path = os.path.join(self.path, "log.jsonl")
        rows, torn = read_log_rows(path)
        if torn:
            warnings.warn(f"{path}: skipped {torn} unreadable line(s), as a crash while writing leaves", RuntimeWarning,
                          stacklevel=2)
        return rows


def read_log_rows(path: str):
    """The rows of a log.jsonl (none if it does not exist), and how many lines were unreadable: a crash while
    writing leaves the last line cut short."""
    rows, n_torn = [], 0
    if os.path.exists(path):
        with open(path) as fh:
            for line in fh:
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError:
                        n_torn += 1
    return rows, n_torn


def read_config(path: str) -> dict:
    """A run's config.json. A damaged one (edited by hand, or cut short by a copy) is a ValueError naming the file."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); it is the run's config, which the trainer writes whole: "
                         "restore it from a copy of the run") from None


def read_checkpoint(path: str, device) -> dict:
    """A checkpoint.pt. The trainer writes it atomically, so an unreadable one was damaged afterwards (a copy cut
    short, a full disk): a ValueError naming the file, not the zip reader's error."""
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as e:  # a cut zip, or no zip at all
        reason = str(e).split(". ")[0].splitlines()[0]
        raise ValueError(f"{path} cannot be read as a checkpoint ({reason}); it was damaged "
                         "after it was written, or is not a checkpoint: restore it from a copy of the run") from None


def resolve_device(device="auto") -> torch.device:
    """"auto" is CUDA when there is a GPU, else the CPU. A device that cannot be used here is a ValueError that
    says why, not torch's driver error at the first tensor moved there."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r}: {e}") from None
    if dev.type not in ("cpu", "cuda"):  # mps, xpu, ...: the trainer and the tools are written and tested for these two
        raise ValueError(f"device {device!r} is not supported: interpgan_ext runs on 'cpu' and 'cuda' devices "
                         "(on a Mac, use 'cpu')")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
            raise ValueError(f"device {device!r} asked for, but no CUDA GPU is usable here (torch {torch.__version__}, "
                             f"{build}); use 'cpu' or 'auto'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} asked for, but there are {torch.cuda.device_count()} GPUs")
    return dev


def load_run(path: str, device: str = "auto", ema: bool = True, G: Optional[nn.Module] = None) -> Run:
    """Load `path`/checkpoint.pt. The generator is rebuilt from the run's architecture (config.json); for a
    generator of your own, pass an instance as `G` and its weights are loaded into it."""
    ckpt_path = os.path.join(path, "checkpoint.pt")
    cfg_path = os.path.join(path, "config.json")
    for p in (ckpt_path, cfg_path):
        if not os.path.exists(p):
            raise FileNotFoundError(f"load_run: {path} is not a run directory (no {os.path.basename(p)})")
    saved = read_config(cfg_path)
    dev = resolve_device(device)
    state = read_checkpoint(ckpt_path, dev)
    cfg, meta = state["config"], state["meta"]
    if G is None:
        if "arch" not in saved:
            raise ValueError(f"load_run: {path} was trained with a custom generator; pass it as load_run(..., G=G)")
        from .models import build

        G, D = build(saved["arch"], saved["size"], z_dim=cfg["z_dim"], width=saved["width"])
        D.load_state_dict(state["D"])
        D = D.to(dev).eval().requires_grad_(False)
    else:
        D = None
    G.load_state_dict(state["G_ema" if ema else "G"])
    G = G.to(dev).eval().requires_grad_(False)
    energy, q = None, state.get("q")
    if q is not None:
        H, W = meta["spatial"]
        energy = EnergyModel(meta["n_filters"], cfg["n_groups"], H * W, w_max=cfg["w_max"]).to(dev)
        energy.load_state_dict(state["energy"])
        energy.requires_grad_(False)
        q = q.to(dev)
    return Run(path=path, G=G, layer=meta["layer"], energy=energy, q=q, config=cfg,
               meta={**meta, **{k: saved[k] for k in ("arch", "size", "width", "data") if k in saved}},
               step=int(state["step"]), D=D)



def load_baseline(path: str, run: Run, device: str = "auto") -> Run:
    """The run at `path`, as the plain GAN that `run` is measured against (eval, compare, report). Their numbers
    compare only if both trained on the same data, at the same image size, with the same architecture: else
    ValueError, naming what differs. One that is itself interpretable (lambda0 > 0) is compared, with a warning."""
    base = load_run(path, device=device)

    def setup(r):
        return {"data": r.data, "size": r.meta.get("size"), "arch": r.meta.get("arch")}

    mine, theirs = setup(run), setup(base)
    differ = [f"{k} {theirs[k]} (the run's: {mine[k]})" for k in mine if theirs[k] != mine[k]]
    if differ:
        raise ValueError(f"{path} cannot be {run.name}'s baseline: it differs in {'; '.join(differ)}, so their "
                         "numbers would not compare. Train the baseline with the run's options and --baseline.")
    if base.interpretable:
        warnings.warn(f"{path} is an interpretable run (lambda0 > 0), not a plain-GAN baseline; it is compared as "
                      "one", UserWarning, stacklevel=2)
    return base

def partition_of(run: Run, n_images: int = 256, seed: int = 0, batch_size: int = 64) -> torch.Tensor:
    """A run's q; for a baseline run (no q), a GMM with the same C fitted after training on the layer's
    filter descriptors: the paper's feature-collaging comparison."""
    if run.q is not None:
        return run.q
    from .partition import filter_descriptors
    from .sampler import FeatureExtractor

    ext = FeatureExtractor(run.G, run.layer)
    z = run.latents(n_images, seed)
    with torch.no_grad():
        f = torch.cat([ext.features(zb).float() for zb in z.split(batch_size)])
    part = FilterPartition(run.n_groups, seed=seed).fit(filter_descriptors(f))
    return part.q.to(run.device)
