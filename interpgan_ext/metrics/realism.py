"""Realism: FID and KID between two image sets, streamed batch by batch through a pluggable feature extractor.

FID needs only each set's feature mean and covariance, so those are accumulated (float64 sums). KID needs
features, so a uniform random sample of at most `kid_max` of them is kept per set.

Extractors (callables: images [B, 3, S, S] in [-1, 1] -> features [B, D], with a `.label`):
- `InceptionExtractor(weights_path)`: torchvision's Inception-v3 pool features (2048-d), from a local weights
  file: torchvision's, or pytorch-fid's FID Inception state dict (same parameter names; pytorch-fid's own
  blocks pool slightly differently, so its numbers are matched closely, not bit for bit). Nothing is downloaded.
- `DomainExtractor(segmenter)`: the SynthFaces segmenter's encoder. Its FID is only comparable with itself,
  and every output says so through its label.
"""
import os
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ._reservoir import Reservoir


class FeatureStats:
    """Running sums for the mean and covariance of features, plus a bounded random sample for KID."""

    def __init__(self, kid_max: int = 2000, seed: int = 0):
        self.n, self.sum, self.outer = 0, None, None
        self.kid = Reservoir(kid_max, seed)

    def add(self, feats: torch.Tensor):
        x = feats.detach().double().cpu()
        if x.dim() != 2:
            raise ValueError(f"FeatureStats.add: expected features [B, D], got {list(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("FeatureStats.add: features contain NaN or inf")
        if self.sum is None:
            self.sum, self.outer = torch.zeros(x.shape[1], dtype=torch.float64), torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
        self.n += len(x)
        self.sum += x.sum(0)
        self.outer += x.T @ x
        self.kid.add(x.float())

    def mean_cov(self):
        if self.n < 2:
            raise ValueError(f"FeatureStats: need at least 2 images, got {self.n}")
        mu = self.sum / self.n
        cov = (self.outer - self.n * torch.outer(mu, mu)) / (self.n - 1)
        return mu, (cov + cov.T) / 2


def _trace_sqrt_product(s1: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """Tr((S1 S2)^(1/2)) for symmetric PSD S1, S2: the eigenvalues of S1^(1/2) S2 S1^(1/2) (symmetric, so
    eigh is stable where a general matrix square root is not)."""
    w, v = torch.linalg.eigh(s1)
    root = (v * w.clamp_min(0).sqrt()) @ v.T
    m = root @ s2 @ root
    return torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()


def frechet_distance(stats_a: FeatureStats, stats_b: FeatureStats) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))."""
    mu1, s1 = stats_a.mean_cov()
    mu2, s2 = stats_b.mean_cov()
    return float((mu1 - mu2).pow(2).sum() + s1.trace() + s2.trace() - 2 * _trace_sqrt_product(s1, s2))


def kernel_inception_distance(stats_a: FeatureStats, stats_b: FeatureStats, n_subsets: int = 50,
                              subset_size: int = 1000, seed: int = 0) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / D + 1)^3, averaged over subsets."""
    xa, xb = stats_a.kid.rows.double(), stats_b.kid.rows.double()
    m = min(subset_size, len(xa), len(xb))
    if m < 2:
        raise ValueError("kernel_inception_distance: need at least 2 samples per set")
    D = xa.shape[1]
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(n_subsets):
        a = xa[torch.randperm(len(xa), generator=gen)[:m]]
        b = xb[torch.randperm(len(xb), generator=gen)[:m]]
        kaa, kbb, kab = (a @ a.T / D + 1) ** 3, (b @ b.T / D + 1) ** 3, (a @ b.T / D + 1) ** 3
        total += float((kaa.sum() - kaa.diag().sum() + kbb.sum() - kbb.diag().sum()) / (m * (m - 1))
                       - 2 * kab.mean())
    return total / n_subsets


class InceptionExtractor:
    """torchvision Inception-v3 pool3 features from a local weights file (a state dict)."""

    label = "inception-v3"

    def __init__(self, weights_path: str, device="cpu"):
        try:
            from torchvision.models import inception_v3
        except ImportError as e:
            raise ImportError("InceptionExtractor needs torchvision (pip install torchvision)") from e
        if not os.path.exists(weights_path):
            raise FileNotFoundError(f"InceptionExtractor: no weights file at {weights_path}")
        model = inception_v3(weights=None, aux_logits=False, init_weights=False, transform_input=False)
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
        # the classifier heads are not used (pool features only), and differ between checkpoints: pytorch-fid's
        # FID Inception has 1008 classes, torchvision's 1000
        state = {k: v for k, v in state.items() if not k.startswith(("AuxLogits.", "fc."))}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if [k for k in missing if not k.startswith("fc.")] or unexpected:
            raise ValueError(f"InceptionExtractor: {weights_path} is not an Inception-v3 state dict "
                             f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
        model.fc = torch.nn.Identity()
        self.model = model.eval().to(device)
        self.device = device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.float().to(self.device), size=(299, 299), mode="bilinear", align_corners=False)
        return self.model(x)  # inputs in [-1, 1], as the FID Inception expects


class DomainExtractor:
    """The SynthFaces segmenter's pooled encoder features: a domain-specific FID, labelled as such."""

    label = "segmenter-encoder (domain FID: comparable only between runs measured with the same segmenter)"

    def __init__(self, segmenter):
        self.segmenter = segmenter

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.segmenter.encode(images)


def inception_weights_path(inception_weights: Optional[str] = None) -> Optional[str]:
    """The local Inception-v3 weights to use: the path given, else $INTERPGAN_INCEPTION_WEIGHTS, else None."""
    return inception_weights or os.environ.get("INTERPGAN_INCEPTION_WEIGHTS") or None


def default_extractor(segmenter=None, inception_weights: Optional[str] = None, device="cpu"):
    """Inception-v3 from `inception_weights` (or $INTERPGAN_INCEPTION_WEIGHTS) when given; else the segmenter's
    encoder."""
    path = inception_weights_path(inception_weights)
    if path:
        return InceptionExtractor(path, device)
    if segmenter is None:
        raise ValueError("no FID extractor: give Inception-v3 weights or a segmenter")
    return DomainExtractor(segmenter)


@torch.no_grad()
def stream_stats(batches, extractor: Callable, kid_max: int = 2000) -> FeatureStats:
    """FeatureStats over an iterable of image batches."""
    stats = FeatureStats(kid_max)
    for x in batches:
        stats.add(extractor(x))
    return stats


def fid_kid(batches_a, batches_b, extractor: Callable) -> dict:
    sa, sb = stream_stats(batches_a, extractor), stream_stats(batches_b, extractor)
    return {"fid": frechet_distance(sa, sb), "kid": kernel_inception_distance(sa, sb),
            "extractor": getattr(extractor, "label", type(extractor).__name__), "n": [sa.n, sb.n]}
