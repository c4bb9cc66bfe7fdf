"""A part segmenter for generated faces: a small U-Net trained on SynthFaces (image -> PARTS labels).

The metrics need to know where the parts of a *generated* image are; SynthFaces knows them for its own
images, so a segmenter learnt from it labels G's. `load_or_train_segmenter` trains one in minutes on a CPU
and caches it (weights and held-out scores) in the run directory. On other data, plug in any callable that
maps images [B, 3, S, S] in [-1, 1] to label maps [B, S, S].
"""
import os
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..data import PARTS, SynthFaces
from ._cache import load_or_train, train_on_synthfaces

MIN_MIOU = 0.9  # below this the segmenter's labels are not trusted for measurement


def _block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))


class PartSegmenter(nn.Module):
    """U-Net with two down/up stages: images [B,3,S,S] in [-1,1] -> logits [B, n_parts, S, S]."""

    def __init__(self, n_parts: int = len(PARTS), width: int = 32):
        super().__init__()
        w = width
        self.enc1, self.enc2, self.enc3 = _block(3, w), _block(w, 2 * w), _block(2 * w, 4 * w)
        self.up2, self.dec2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, 2), _block(4 * w, 2 * w)
        self.up1, self.dec1 = nn.ConvTranspose2d(2 * w, w, 2, 2), _block(2 * w, w)
        self.head = nn.Conv2d(w, n_parts, 1)
        self.feature_dim = 4 * w + 2 * w

    def _encode(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        return e1, e2, e3

    def forward(self, x):
        e1, e2, e3 = self._encode(x)
        d2 = self.dec2(torch.cat([self.up2(e3), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.head(d1)

    @torch.no_grad()
    def encode(self, x) -> torch.Tensor:
        """Global features [B, feature_dim] (pooled bottleneck and mid level): the domain extractor for FID."""
        _, e2, e3 = self._encode(x)
        return torch.cat([e3.mean((2, 3)), e2.mean((2, 3))], 1)

    @torch.no_grad()
    def segment(self, x) -> torch.Tensor:
        return self(x).argmax(1)

    __call__ = nn.Module.__call__


def segmentation_scores(pred: torch.Tensor, labels: torch.Tensor, n_parts: int = len(PARTS)) -> dict:
    """Pixel accuracy, per-part IoU and their mean over the parts present in `labels` or `pred`."""
    pred, labels = pred.flatten(), labels.flatten()
    conf = torch.bincount(labels * n_parts + pred, minlength=n_parts * n_parts).reshape(n_parts, n_parts).double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
    return {"pixel_accuracy": float(tp.sum() / conf.sum()), "miou": float(iou[~iou.isnan()].mean()),
            "iou": {PARTS[i] if n_parts == len(PARTS) else str(i): float(v) for i, v in enumerate(iou)}}


@torch.no_grad()
def evaluate_segmenter(model: PartSegmenter, size: int, n: int = 512, seed: int = 12345, device="cpu") -> dict:
    """Scores on held-out SynthFaces (a seed the training never uses)."""
    data = SynthFaces(size, n=n, seed=seed)
    model.eval()
    preds, labs = [], []
    for idx in torch.arange(n).split(128):
        x, lab = data.render(idx, device=device)
        preds.append(model.segment(x).cpu())
        labs.append(lab.cpu())
    return segmentation_scores(torch.cat(preds), torch.cat(labs))


def train_segmenter(size: int, steps: int = 1500, batch_size: int = 32, width: int = 32, lr: float = 3e-3,
                    device="cpu", seed: int = 0, progress: bool = True) -> PartSegmenter:
    """Train on freshly rendered SynthFaces (every batch new, so it cannot overfit)."""
    torch.manual_seed(seed)
    return train_on_synthfaces(PartSegmenter(width=width), size, steps, lambda out, labels, _: F.cross_entropy(out, labels),
                               batch_size=batch_size, lr=lr, data_seed=seed + 1000, device=device, progress=progress,
                               desc="segmenter")


def load_or_train_segmenter(cache_dir: Optional[str], size: int, device="cpu", steps: int = 1500,
                            progress: bool = True, **train_kw):
    """(segmenter, held-out scores). Loads `cache_dir/segmenter_{size}px.pt` if present, else trains and saves
    it there (atomically). `cache_dir=None` trains without caching."""
    width = train_kw.get("width", 32)
    return load_or_train(
        os.path.join(cache_dir, f"segmenter_{size}px.pt") if cache_dir else None, steps,
        build=lambda saved: PartSegmenter(width=saved["width"]),
        train=lambda: train_segmenter(size, steps=steps, device=device, progress=progress, **train_kw),
        evaluate=lambda m: evaluate_segmenter(m, size, device=device), device=device,
        extra={"width": width, "size": size})
