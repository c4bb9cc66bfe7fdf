"""The interpretable-GAN training loop of SPEC §5, for any generator with a named target layer.

Per step: a D step; every `gmm_every` steps an EM refit of the partition (Theta, q); a W step by
contrastive divergence against Langevin negatives plus L_interp, then W's projection; a G step on
L_GAN + lambda0 * (lambda_gmm * L_gmm + lambda2 * L_real). With lambda0 = 0 the same loop is the plain GAN
baseline (no partition, no W, no Langevin).

Every random draw of step t comes from generators seeded by (seed, t), so a run resumed from a checkpoint
continues exactly as the uninterrupted run would.

Multi-process (torchrun; gloo on CPU, NCCL on GPU): when torch.distributed is initialised, G and D train under
DistributedDataParallel, W's gradient is all-reduced, each rank draws its own batch, and the GMM is fitted on
descriptors gathered from all ranks (each computes its share of the gmm_images), so q is the same everywhere.
Rank 0 alone writes logs, samples and checkpoints. When training is over, drop the trainers and call
end_distributed() on every rank.

Loss weights are per element (a deliberate choice on top of SPEC §5, made after a measurement): g_W sums
M*C*K terms and L_gmm a log-density over D = N*K' dimensions, so with raw weights one lambda cannot serve layers
of different sizes. A 64 px run with lambda2 = 1e-3 on the raw energy (M*K = 65536) let the energy term
outweigh the GAN loss 50 to 1 and collapsed the colours (bench/results/gpu_train/). So the trainer applies
lambda2 to L_cd / (M*K) and L_real / (M*K), and lambda_gmm to L_gmm / D. The logged L_cd, L_real and L_gmm are
the SPEC's raw values.

`gmm_relative_reg` (default 0, the SPEC's plain EM) floors the GMM's variances. L_gmm with refitted variances
tightens the groups at every refit; see FilterPartition.relative_reg and bench/results/README.md.
`gmm_loss="posterior"` replaces L_gmm by -(1/M) sum_j log P_T(q_j | F^j), the posterior of each filter's group
tempered at T = D (FilterPartition.log_posterior), closer to the paper's "sum of posteriors": it pulls a filter
towards its group and away from the others only while they are confusable, so it stops pulling once groups are
apart, instead of pulling filters into copies. It is already per dimension, so lambda_gmm applies to it as is.
`gmm_min_group_size` (default 0, plain EM) keeps every group at that many filters or more at each refit
(FilterPartition.min_group_size); each log row has the partition's `group_sizes`.
"""
import copy
import gc
import json
import math
import os
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, fields
from typing import Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ._atomic import atomic_save, atomic_write_json, atomic_write_text
from .data import SynthFaces
from .data.resident import MODES as RESIDENT_MODES, ResidentImages, should_hold
from .energy import EnergyModel
from ._interrupt import StopRequests
from ._progress import progress_bar
from .ops import check_partition
from .optim import adam, load_optimizer_state
from .partition import FilterPartition, filter_descriptors
from .runs import read_checkpoint, read_log_rows, resolve_device
from .sampler import FeatureExtractor, LangevinSampler
from .viz import save_image_grid


@dataclass
class TrainConfig:
    steps: int = 1500
    batch_size: int = 32
    z_dim: int = 128
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    lr_w: float = 1e-2
    beta1: float = 0.5
    beta2: float = 0.999
    n_groups: int = 8              # C
    lambda0: float = 1.0           # weight of the interpretability terms in G's loss; 0 = plain GAN baseline
    lambda1: float = 1.0           # off-group weight in L_interp
    lambda2: float = 1.0           # realism: energy terms (L_cd for W, L_real for G), per filter-position (see below)
    lambda3: float = 1.0           # L_interp for W
    lambda_gmm: float = 1.0        # L_gmm for G, per descriptor dimension (see below)
    langevin_steps: int = 5        # T
    langevin_step_size: float = 0.1  # delta
    drift_clip: float = 1.0
    gmm_every: int = 100
    gmm_images: int = 64           # N images per filter descriptor
    gmm_backend: str = "torch"
    gmm_relative_reg: float = 0.0  # variance floor of the GMM, relative (see FilterPartition.relative_reg)
    gmm_loss: str = "likelihood"   # L_gmm: "likelihood" (SPEC §5) or "posterior" (tempered; module docstring)
    gmm_min_group_size: int = 0    # every group keeps >= this many filters; 0 = plain EM (FilterPartition)
    w_max: float = 1.0
    gan_loss: str = "logistic"     # or "hinge"
    r1_gamma: float = 0.0
    ema_decay: float = 0.999
    seed: int = 0
    log_every: int = 10
    image_every: int = 250
    ckpt_every: int = 250
    ckpt_minutes: float = 10.0     # and at least this often in wall time (a hard kill loses less); 0 = by steps only
    amp: bool = False              # bf16 autocast on CUDA
    mirror: bool = False           # flip each real image left-right with probability 1/2 (random_mirror)
    data_on_device: str = "auto"   # hold the real images on the device: auto | on | off (data/resident.py)
    langevin_graph: str = "off"    # on: on a GPU, the Langevin chain runs as one captured CUDA graph (sampler_graph.py)
    device: str = "auto"

    def __post_init__(self):
        if self.gan_loss not in ("logistic", "hinge"):
            raise ValueError(f"TrainConfig.gan_loss must be 'logistic' or 'hinge', got {self.gan_loss!r}")
        if self.gmm_loss not in ("likelihood", "posterior"):
            raise ValueError(f"TrainConfig.gmm_loss must be 'likelihood' or 'posterior', got {self.gmm_loss!r}")
        for name in ("steps", "batch_size", "n_groups", "gmm_every", "gmm_images", "log_every", "image_every",
                     "ckpt_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.data_on_device not in RESIDENT_MODES:
            raise ValueError(f"TrainConfig.data_on_device must be one of {', '.join(RESIDENT_MODES)}, "
                             f"got {self.data_on_device!r}")
        if self.langevin_graph not in ("off", "on"):
            raise ValueError(f"TrainConfig.langevin_graph must be 'off' or 'on', got {self.langevin_graph!r}")
        if self.gmm_min_group_size < 0:
            raise ValueError(f"TrainConfig.gmm_min_group_size must be >= 0, got {self.gmm_min_group_size}")
        if not self.ckpt_minutes >= 0:
            raise ValueError(f"TrainConfig.ckpt_minutes must be >= 0, got {self.ckpt_minutes}")

    @property
    def interpretable(self) -> bool:
        return self.lambda0 > 0

    @classmethod
    def from_dict(cls, d):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class TrainingDiverged(RuntimeError):
    pass


class TrainingInterrupted(KeyboardInterrupt):
    """fit() stopped on SIGINT or SIGTERM at the end of a step, after saving a checkpoint of that step."""

    def __init__(self, step: int, signal_name: str, checkpoint: str):
        super().__init__(f"{signal_name}: training stopped after step {step}; the checkpoint {checkpoint} holds that "
                         "step, and resuming from it (`interpgan train --out RUN --resume`, or "
                         "Trainer.load_checkpoint() then fit()) continues as if uninterrupted.")
        self.step, self.signal_name, self.checkpoint = step, signal_name, checkpoint


@contextmanager
def frozen_batchnorm_stats(model: nn.Module):
    """Forwards in train mode that leave BatchNorm running statistics untouched: momentum 0, and no count of batches
    (a forward would still add 1 to it: for a BatchNorm with momentum=None, which averages over that count, that
    skews every later update; on a GPU each add is one more launch)."""
    saved = [(m, m.momentum, m.num_batches_tracked) for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m, _, _ in saved:
        m.momentum, m.num_batches_tracked = 0.0, None
    try:
        yield
    finally:
        for m, momentum, count in saved:
            m.momentum, m.num_batches_tracked = momentum, count


def diversity(images: torch.Tensor) -> float:
    """Mean over pixels and channels of the standard deviation across images, for images in [-1, 1]: 0 when every
    image is the same."""
    return float(images.detach().float().std(dim=0).mean())


def update_ema(ema: nn.Module, model: nn.Module, weight: float) -> None:
    """ema's parameters move `weight` of the way to model's; its buffers (batch-norm statistics) become model's.
    One multi-tensor op for each, not one op per tensor: on a GPU every op is a launch from the host."""
    params, buffers = (list(ema.parameters()), list(model.parameters())), (list(ema.buffers()), list(model.buffers()))
    if params[0]:
        torch._foreach_lerp_(*params, weight)
    if buffers[0]:
        torch._foreach_copy_(*buffers)


def step_generator(seed: int, step: int, salt: int, device="cpu") -> torch.Generator:
    return torch.Generator(device).manual_seed((seed * 1_000_003 + step * 7919 + salt) % (2**63 - 1))


def sample_real(data, n: int, gen: torch.Generator, device="cpu") -> torch.Tensor:
    idx = torch.randint(len(data), (n,), generator=gen)
    if isinstance(data, SynthFaces):
        return data.render(idx, device=device)[0]  # drawn where it is used
    if hasattr(data, "render"):
        return data.render(idx)[0]
    items = [data[int(i)] for i in idx]
    return torch.stack([it[0] if isinstance(it, (tuple, list)) else it for it in items])


def random_mirror(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image of [B, C, H, W] flipped left-right with probability 1/2 (draws from `gen`, a CPU generator, so a
    resumed run flips the same ones). Doubles a small dataset, such as LFW's 100 faces, for D; faces are
    near-symmetric, so the flips are faces too."""
    flip = (torch.rand(len(images), generator=gen) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def check_data(data, G: nn.Module, z_dim: int, device) -> None:
    """Real images must look like G's: the same [C, S, S], floating, finite, in [-1, 1]. Checked on a few items
    before training, since a mismatch otherwise fails deep inside D, or trains on garbage without an error."""
    if len(data) == 0:
        raise ValueError("Trainer: the dataset is empty")
    with torch.no_grad(), frozen_batchnorm_stats(G):
        fake_shape = tuple(G(torch.randn(2, z_dim, device=device)).shape[1:])
    real = sample_real(data, min(8, len(data)), torch.Generator().manual_seed(0), device)
    if not torch.is_floating_point(real):
        raise TypeError(f"Trainer: dataset items must be floating images in [-1, 1], got {real.dtype} "
                        "(for uint8 pixels, use x.float() / 127.5 - 1)")
    if tuple(real.shape[1:]) != fake_shape:
        raise ValueError(f"Trainer: dataset items are {list(real.shape[1:])} but G makes {list(fake_shape)} images; "
                         "build the dataset at G's size (e.g. ImageFolder(path, size=...))")
    if not torch.isfinite(real).all():
        raise ValueError("Trainer: dataset items contain NaN or inf")
    lo, hi = real.min().item(), real.max().item()
    if lo < -1.01 or hi > 1.01:
        raise ValueError(f"Trainer: dataset items must lie in [-1, 1], as generated images do, got values in "
                         f"[{lo:.3g}, {hi:.3g}]; scale pixels in [0, 1] with x * 2 - 1, in [0, 255] with x / 127.5 - 1")
    if lo >= 0:
        warnings.warn(f"Trainer: the dataset's values lie in [{lo:.3g}, {hi:.3g}], none below 0: images in [0, 1]? "
                      "G's images are in [-1, 1]; scale with x * 2 - 1", RuntimeWarning, stacklevel=3)


@dataclass
class _Timer:
    """Seconds of each named part of a step, summed in `totals` by `read()`. On the CPU, wall seconds. On CUDA, the
    span between two events queued on the device's stream around the part: it never waits for the GPU, so the
    host queues the next part while the GPU runs this one. (Synchronising around every part left an H100 idle
    ~70% of a step: bench/results/README.md, session 14.) The span is the part's GPU time when the GPU is the
    bottleneck, and the host's time to queue it when the host is."""
    device: torch.device
    totals: dict = field(default_factory=dict)
    _spans: list = field(default_factory=list)

    @contextmanager
    def __call__(self, name):
        # The range is named in torch.profiler traces too (python/bench_train.py --trace), as interpgan::NAME.
        with torch.profiler.record_function(f"interpgan::{name}"):
            if self.device.type == "cuda":
                stream = torch.cuda.current_stream(self.device)
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record(stream)
                yield
                end.record(stream)
                self._spans.append((name, start, end))
            else:
                t0 = time.perf_counter()
                yield
                self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - t0

    def read(self) -> dict:
        """totals, with the CUDA spans added (waiting for their end events: call it once the step is queued)."""
        for name, start, end in self._spans:
            end.synchronize()
            self.totals[name] = self.totals.get(name, 0.0) + start.elapsed_time(end) / 1e3
        self._spans.clear()
        return self.totals


class Trainer:
    """Trains G (and D, W, q) so that filter groups of G's `layer` draw consistent concepts.

    G maps z [B, z_dim] to images; `layer` is the dotted module path of the target conv layer.
    """

    def __init__(self, G: nn.Module, D: nn.Module, layer: str, data, config: TrainConfig = None,
                 out_dir: str = "runs/default", extra_meta: Optional[dict] = None):
        self.cfg = config or TrainConfig()
        cfg = self.cfg
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        self.is_main = self.rank == 0
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda" and self.device.index is None and self.distributed:
            self.device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
        torch.manual_seed(cfg.seed)
        # Train mode, as any training loop sets it: a G loaded from a checkpoint and left in eval mode would otherwise
        # train with BatchNorm's running statistics and without its dropout, silently.
        self.G, self.D, self.layer, self.data = G.to(self.device).train(), D.to(self.device).train(), layer, data
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.extractor = FeatureExtractor(self.G, layer)
        with torch.no_grad(), frozen_batchnorm_stats(self.G):
            _, probe = self.extractor.images_and_features(torch.randn(2, cfg.z_dim, device=self.device))
        if probe.dim() != 4:
            raise ValueError(f"target layer {layer!r} must output [B, M, H, W] feature maps, got {list(probe.shape)}")
        self.n_filters, H, W = probe.shape[1:]
        check_data(data, self.G, cfg.z_dim, self.device)
        if cfg.n_groups > self.n_filters:
            raise ValueError(f"n_groups={cfg.n_groups} exceeds the {self.n_filters} filters of layer {layer!r}")
        self.energy = EnergyModel(self.n_filters, cfg.n_groups, H * W, w_max=cfg.w_max, seed=cfg.seed).to(self.device)
        self.energy_scale = 1.0 / (self.n_filters * H * W)  # lambda2 weighs the energy per filter-position
        if cfg.gmm_min_group_size * cfg.n_groups > self.n_filters:
            raise ValueError(f"gmm_min_group_size={cfg.gmm_min_group_size} for {cfg.n_groups} groups needs "
                             f"{cfg.gmm_min_group_size * cfg.n_groups} filters; layer {layer!r} has {self.n_filters}")
        # where each step's real batch comes from: the dataset, or its images held on the device (checked first)
        self.real_data = data
        if should_hold(data, self.device, cfg.data_on_device):
            self.real_data = ResidentImages(data, self.device, progress=self.is_main)
        self.partition = FilterPartition(cfg.n_groups, backend=cfg.gmm_backend, relative_reg=cfg.gmm_relative_reg,
                                         min_group_size=cfg.gmm_min_group_size, seed=cfg.seed)
        self.sampler = LangevinSampler(self.G, layer, self.energy, cfg.langevin_steps, cfg.langevin_step_size,
                                       prior_weight=1.0, drift_clip=cfg.drift_clip,
                                       cuda_graph=cfg.langevin_graph == "on")
        betas = (cfg.beta1, cfg.beta2)
        # The modules that run the D and G steps: DDP wrappers around the same G and D when distributed.
        self.G_train, self.D_train = self.G, self.D
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.G_train = DistributedDataParallel(self.G, device_ids=ids)
            self.D_train = DistributedDataParallel(self.D, device_ids=ids)
            with torch.no_grad():  # W starts equal on every rank
                dist.broadcast(self.energy.W.data, 0)
        self.opt_G = adam(self.G.parameters(), cfg.lr_g, betas)
        self.opt_D = adam(self.D.parameters(), cfg.lr_d, betas)
        self.opt_W = adam(self.energy.parameters(), cfg.lr_w, betas)
        self.q: Optional[torch.Tensor] = None
        self.z_gmm: Optional[torch.Tensor] = None
        self.group_sizes: Optional[list] = None  # the partition's, logged with every row until the next refit
        self.step = 0
        self.out_dir = out_dir
        self.z_fixed = torch.randn(32, cfg.z_dim, generator=torch.Generator().manual_seed(cfg.seed + 99)).to(self.device)
        held = isinstance(self.real_data, ResidentImages)
        meta = {"layer": layer, "n_filters": int(self.n_filters), "spatial": [int(H), int(W)],
                "world_size": self.world, "data_held_bytes": self.real_data.nbytes if held else 0,
                **(extra_meta or {})}
        if self.is_main:
            os.makedirs(out_dir, exist_ok=True)
            atomic_write_json({"config": asdict(cfg), **meta}, os.path.join(out_dir, "config.json"))
        self.meta = meta
        self._data_diversity, self._warned_collapse = None, False

    # -- pieces of a step --------------------------------------------------------------------------
    @property
    def _amp(self) -> bool:
        return self.cfg.amp and self.device.type == "cuda"

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self._amp else nullcontext()

    def _d_loss(self, real, fake):
        d = self.D_train(torch.cat([real, fake]))  # one forward: DDP expects one per backward
        d_real, d_fake = d[: len(real)], d[len(real):]
        if self.cfg.gan_loss == "hinge":
            return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean(), d_real
        return F.softplus(d_fake).mean() + F.softplus(-d_real).mean(), d_real

    def _g_gan_loss(self, fake):
        d_fake = self.D_train(fake)
        return -d_fake.mean() if self.cfg.gan_loss == "hinge" else F.softplus(-d_fake).mean()

    def refit_partition(self, gen: torch.Generator):
        """The max over (Theta, q): EM on descriptors of gmm_images fresh samples (kept as z_gmm for L_gmm).

        Distributed, each rank computes the features of its share of the (common) latents and all ranks
        gather them, so every rank fits the same GMM on all gmm_images."""
        z = torch.randn(self.cfg.gmm_images, self.cfg.z_dim, generator=gen).to(self.device)
        shares = [z[r::self.world] for r in range(self.world)]
        self.z_gmm = torch.cat(shares)  # rank order, matching the gathered features
        with torch.no_grad(), frozen_batchnorm_stats(self.G):
            f = self.extractor.features(shares[self.rank]).float()
            if self.distributed:
                parts = [f.new_empty((len(sh),) + f.shape[1:]) for sh in shares]
                dist.all_gather(parts, f.contiguous())
                f = torch.cat(parts)
        self.partition.fit(filter_descriptors(f))
        self.q = self.partition.q.to(self.device)
        check_partition(self.q, self.cfg.n_groups)
        self.group_sizes = self.partition.group_sizes().tolist()

    def train_step(self):
        cfg, dev, t = self.cfg, self.device, self.step
        timer = _Timer(dev)
        logs = {}
        gen = step_generator(cfg.seed, t, 1000 * self.rank)  # each rank its own batch
        z = torch.randn(cfg.batch_size, cfg.z_dim, generator=gen).to(dev)
        real = sample_real(self.real_data, cfg.batch_size, gen, dev).to(dev)
        if cfg.mirror:
            real = random_mirror(real, gen)
        # One forward of G serves the D step (its images, detached) and the G step (through the updated D): G's
        # weights do not change in between, as the D and W steps update D and W only. Each step used to run G on z
        # twice, once without a graph for D; it also counted the batch twice in BatchNorm's running statistics.
        # In float32 the same forward also gives the Langevin chain its first gradient (d g_W / dz at z): z needs grad.
        chain_from_forward = cfg.interpretable and cfg.langevin_steps > 0 and not self._amp
        with timer("G"):
            with self._autocast():
                x, f = self.extractor.images_and_features(z.requires_grad_(chain_from_forward), model=self.G_train)
        # D step
        with timer("D"):
            self.D.requires_grad_(True)
            if cfg.r1_gamma > 0:
                real.requires_grad_(True)
            with self._autocast():
                loss_D, d_real = self._d_loss(real, x.detach().float())
            if cfg.r1_gamma > 0:
                (g_real,) = torch.autograd.grad(d_real.float().sum(), real, create_graph=True)
                loss_D = loss_D + 0.5 * cfg.r1_gamma * g_real.pow(2).sum(dim=(1, 2, 3)).mean()
            self.opt_D.zero_grad(set_to_none=True)
            loss_D.backward()
            self.opt_D.step()
        losses = {"loss_D": loss_D}  # read to the host once, at the end: each read waits for the GPU
        if cfg.interpretable:
            if self.q is None or t % cfg.gmm_every == 0:
                with timer("GMM"):
                    self.refit_partition(step_generator(cfg.seed, t, 1))
            # W step: contrastive divergence between G's features and Langevin negatives, plus L_interp
            with frozen_batchnorm_stats(self.G):
                with timer("Langevin"):
                    # The positives are f at z: the G forward's (same weights, same batch statistics), unless it
                    # ran under bf16 autocast; the negatives are float32, so then the positives are too.
                    if not self._amp:
                        f_pos = f.detach()
                    else:
                        with torch.no_grad():
                            f_pos = self.extractor.features(z)
                    lgen = step_generator(cfg.seed, t, 2 + 1000 * self.rank, dev)
                    first = self.sampler.energy_grad_of(f, z, self.q) if chain_from_forward else None
                    z_neg = self.sampler.sample(z, self.q, generator=lgen, first=first)
                    with torch.no_grad():
                        f_neg = self.extractor.features(z_neg)
                with timer("W"):
                    L_cd = self.energy.loss_cd(f_pos.float(), f_neg.float(), self.q)
                    L_interp = self.energy.loss_interp(self.q, cfg.lambda1)
                    loss_W = cfg.lambda2 * self.energy_scale * L_cd + cfg.lambda3 * L_interp
                    self.opt_W.zero_grad(set_to_none=True)
                    loss_W.backward()
                    if self.distributed:
                        dist.all_reduce(self.energy.W.grad)
                        self.energy.W.grad /= self.world
                    self.opt_W.step()
                    self.energy.project_()
            losses.update(L_cd=L_cd, L_interp=L_interp)
        # G step
        with timer("G"):
            self.D.requires_grad_(False)
            with self._autocast():
                loss_gan = self._g_gan_loss(x)
            loss_G = loss_gan.float()
            if cfg.interpretable:
                with frozen_batchnorm_stats(self.G), self._autocast():
                    f_ref = self.extractor.features(self.z_gmm)
                desc = filter_descriptors(f_ref.float())
                if cfg.gmm_loss == "posterior":
                    L_gmm = -self.partition.log_posterior(desc, temperature=desc.shape[1]).mean()
                    gmm_term = L_gmm
                else:
                    L_gmm = -self.partition.log_likelihood(desc).mean()
                    gmm_term = L_gmm / desc.shape[1]
                L_real = self.energy.loss_real(f.float(), self.q)
                loss_G = loss_G + cfg.lambda0 * (cfg.lambda_gmm * gmm_term + cfg.lambda2 * self.energy_scale * L_real)
                losses.update(L_gmm=L_gmm, L_real=L_real, energy=-L_real)
            self.opt_G.zero_grad(set_to_none=True)
            loss_G.backward()
            self.opt_G.step()
            with torch.no_grad():
                # warm-up: early on the average follows G closely, so that a short run's G_ema is not
                # dominated by the random initial weights (0.999 ** 1500 = 22% of them after 1500 steps)
                decay = min(cfg.ema_decay, (1 + t) / (10 + t))
                update_ema(self.G_ema, self.G, 1 - decay)
        losses.update(loss_G=loss_G, loss_G_gan=loss_gan)
        values = torch.stack([v.detach().reshape(()).double() for v in losses.values()]).tolist()
        logs.update(zip(losses, values))
        bad = [k for k, v in logs.items() if not math.isfinite(v)]
        if self.distributed:  # stop on every rank together, not leave the others waiting in a collective
            flag = torch.tensor([float(len(bad))], device=dev)
            dist.all_reduce(flag)
            if flag.item() > 0 and not bad:
                bad = ["loss on another rank"]
        if bad:
            raise TrainingDiverged(
                f"step {t}: non-finite {', '.join(bad)} ({ {k: logs.get(k) for k in bad} }); training stopped. "
                f"The last good checkpoint is kept at {self.checkpoint_path}. Try a lower learning rate, a smaller "
                "langevin_step_size, or a smaller lambda0."
            )
        logs["time"] = timer.read()
        if cfg.interpretable:
            logs["group_sizes"] = self.group_sizes
        return logs

    # -- checkpoints ---------------------------------------------------------------------------------
    @property
    def checkpoint_path(self):
        return os.path.join(self.out_dir, "checkpoint.pt")

    def state_dict(self):
        return {
            "step": self.step, "config": asdict(self.cfg), "meta": self.meta,
            "G": self.G.state_dict(), "G_ema": self.G_ema.state_dict(), "D": self.D.state_dict(),
            "energy": self.energy.state_dict(), "partition": self.partition.state_dict() if self.q is not None else None,
            "q": self.q, "z_gmm": self.z_gmm,
            "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(), "opt_W": self.opt_W.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        }

    def save_checkpoint(self):
        atomic_save(self.state_dict(), self.checkpoint_path)

    def load_checkpoint(self, path: Optional[str] = None):
        state = read_checkpoint(path or self.checkpoint_path, self.device)
        if state["meta"]["layer"] != self.layer:  # same shape would load, and train another layer's filters
            own_run = os.path.abspath(path or self.checkpoint_path) == os.path.abspath(self.checkpoint_path)
            if self.is_main and own_run:  # this Trainer wrote its config.json over the run's: put the run's back
                atomic_write_json({"config": state["config"], **state["meta"]}, os.path.join(self.out_dir, "config.json"))
            raise ValueError(f"load_checkpoint: the checkpoint's target layer is {state['meta']['layer']!r}, this "
                             f"Trainer's {self.layer!r}; build the Trainer on the run's layer to resume it")
        self.G.load_state_dict(state["G"])
        self.G_ema.load_state_dict(state["G_ema"])
        self.D.load_state_dict(state["D"])
        self.energy.load_state_dict(state["energy"])
        for name in ("opt_G", "opt_D", "opt_W"):
            load_optimizer_state(getattr(self, name), state[name])
        if state["partition"] is not None:
            self.partition.load_state_dict(state["partition"])
        self.q, self.z_gmm, self.step = state["q"], state["z_gmm"], state["step"]
        if self.q is not None:
            self.group_sizes = torch.bincount(self.q, minlength=self.cfg.n_groups).tolist()
        torch.set_rng_state(state["rng"]["torch"])
        if state["rng"]["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        if self.is_main:
            self._drop_log_rows_after(self.step)
        return state

    def _drop_log_rows_after(self, step: int):
        """A run that crashed after logging steps past its last checkpoint would log them again when resumed. Keep
        the rows up to the checkpoint's step (and drop a line torn by the crash), so log.jsonl has each step once."""
        path = os.path.join(self.out_dir, "log.jsonl")
        rows, n_torn = read_log_rows(path)
        keep = [row for row in rows if row.get("step", 0) <= step]
        if n_torn or len(keep) < len(rows):
            atomic_write_text("".join(json.dumps(row) + "\n" for row in keep), path)

    # -- the loop --------------------------------------------------------------------------------------
    def save_samples(self, name=None) -> float:
        """Write the G_ema grid of the fixed latents; returns the grid's diversity (see `diversity`)."""
        with torch.no_grad():
            x = self.G_ema(self.z_fixed)
        path = os.path.join(self.out_dir, "samples", name or f"step_{self.step:06d}.png")
        save_image_grid(x, path, nrow=8, scale=max(1, 96 // x.shape[-1]))
        return self.check_diversity(x)

    def check_diversity(self, x: torch.Tensor) -> float:
        """Warns (once) when, after the first 500 steps, the samples' diversity is below a quarter of the data's:
        the sign of a collapse, such as every sample taking one colour scheme (seen in an interpretable 64 px run).
        Earlier, G_ema's samples are alike because training has barely started."""
        d = diversity(x)
        if self._data_diversity is None:
            real = sample_real(self.real_data, len(x), torch.Generator().manual_seed(self.cfg.seed + 7), self.device)
            self._data_diversity = diversity(real)
        if self.step >= 500 and d < 0.25 * self._data_diversity and not self._warned_collapse:
            self._warned_collapse = True
            warnings.warn(f"step {self.step}: the samples' diversity {d:.3f} is below a quarter of the data's "
                          f"({self._data_diversity:.3f}); G may be collapsing (see samples/). Lower lambda0 or "
                          f"lambda2, or resume from an earlier checkpoint.", RuntimeWarning, stacklevel=2)
        return d

    def _checkpoint_overdue(self, saved_at: float) -> bool:
        """ckpt_minutes have passed since the last checkpoint: a slow run (a big model, a CPU) is saved by the clock
        too, so that a hard kill (out of memory, a lost machine) costs minutes, not ckpt_every steps."""
        return self.cfg.ckpt_minutes > 0 and time.monotonic() - saved_at >= 60 * self.cfg.ckpt_minutes

    def _stop_agreed(self, stop: StopRequests) -> bool:
        """Whether to stop after this step. Distributed, the ranks agree (any rank's request stops all of them at
        the same step), so none is left waiting in a collective."""
        if not self.distributed:
            return stop.requested
        flag = torch.tensor([float(stop.requested)], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return flag.item() > 0

    def fit(self, steps: Optional[int] = None, progress: bool = True):
        """Train until `steps` (default: config.steps) total steps are done; returns the last logs.

        Ctrl-C or SIGTERM stops it at the end of the current step: the checkpoint is saved there and
        TrainingInterrupted (a KeyboardInterrupt) is raised. A second Ctrl-C stops at once, without saving."""
        total = steps or self.cfg.steps
        main = self.is_main
        writer = _tensorboard(self.out_dir) if main else None
        bar = progress_bar(total, "train", progress and main, initial=self.step)
        logs, t0, n_images, part_seconds = {}, time.perf_counter(), 0, {}
        saved_at = time.monotonic()
        log_path = os.path.join(self.out_dir, "log.jsonl") if main else os.devnull
        try:
            with open(log_path, "a") as log_file, StopRequests() as stop:
                while self.step < total:
                    logs = self.train_step()
                    self.step += 1
                    n_images += self.cfg.batch_size * self.world
                    for part, seconds in logs["time"].items():
                        part_seconds[part] = part_seconds.get(part, 0.0) + seconds
                    if main and (self.step % self.cfg.image_every == 0 or self.step == total):
                        logs["sample_diversity"] = self.save_samples()
                    if self.step % self.cfg.log_every == 0 or self.step == total:
                        elapsed = time.perf_counter() - t0
                        n_steps = n_images // (self.cfg.batch_size * self.world)
                        # each part's mean seconds per step since the last row (so the rare GMM refit is counted)
                        logs["time"] = {part: v / n_steps for part, v in part_seconds.items()}
                        logs.update(step=self.step, images_per_s=n_images / max(elapsed, 1e-9))
                        log_file.write(json.dumps(logs) + "\n")
                        log_file.flush()
                        if writer is not None:
                            for k, v in logs.items():
                                if isinstance(v, float):
                                    writer.add_scalar(k, v, self.step)
                        t0, n_images, part_seconds = time.perf_counter(), 0, {}
                    if main and (self.step % self.cfg.ckpt_every == 0 or self.step == total
                                 or self._checkpoint_overdue(saved_at)):
                        self.save_checkpoint()
                        saved_at = time.monotonic()
                    bar.update(1)
                    bar.set_postfix({k: f"{logs[k]:.3g}" for k in ("loss_D", "loss_G_gan", "energy", "L_interp")
                                     if k in logs})
                    if self._stop_agreed(stop) and self.step < total:
                        if main:
                            self.save_checkpoint()
                        if self.distributed:
                            dist.barrier()  # no rank exits while rank 0 is still writing
                        raise TrainingInterrupted(self.step, stop.signal_name or "a stop on another rank",
                                                  self.checkpoint_path)
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        return logs


def end_distributed() -> None:
    """Every rank meets, then leaves torch.distributed's default process group while Python is still whole.

    Call it once training is over on every rank, after dropping the Trainers: their DDP wrappers hold the group.
    A group left for interpreter exit to destroy can abort a rank there, after training has finished (gloo:
    SIGABRT, "terminate called without an active exception"): 9 in 30 two-rank `torchrun ... train` runs on a 2-core
    CPU before the CLI called this, none in 60 since.
    """
    if dist.is_available() and dist.is_initialized():
        gc.collect()  # DDP wrappers caught in reference cycles still hold the group
        dist.barrier()
        dist.destroy_process_group()


def _tensorboard(out_dir):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard is optional
        return None
    return SummaryWriter(os.path.join(out_dir, "tb"))
