"""An attribute predictor for SynthFaces-like images, shipped like the part segmenter: trained on SynthFaces'
per-image attributes in minutes on a CPU and cached in the run directory. InterFaceGAN needs attribute scores
of generated images; users of the original code could not get its predictor.

Binary attributes (smile, mouth open, eyes open, glasses, long hair) are predicted as probabilities; the
continuous ones (hair colour, skin tone, pose) as values in their own units.
"""
import os
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..data import ATTRIBUTES, SynthFaces
from ..metrics._cache import load_or_train, train_on_synthfaces

BINARY = ("smile", "mouth_open", "eyes_open", "glasses", "long_hair")
_IS_BINARY = torch.tensor([a in BINARY for a in ATTRIBUTES])


class AttributeClassifier(nn.Module):
    """images [B, 3, S, S] in [-1, 1] -> raw outputs [B, len(ATTRIBUTES)]; `scores` maps them to
    probabilities (binary attributes) or values (continuous ones)."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(True), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(True), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(True), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(4 * w, len(ATTRIBUTES))

    def forward(self, x):
        return self.head(self.features(x).flatten(1))

    @torch.no_grad()
    def scores(self, x) -> torch.Tensor:
        out = self(x)
        return torch.where(_IS_BINARY.to(out.device), torch.sigmoid(out), out)


def _loss(out, target):
    b = _IS_BINARY.to(out.device)
    return F.binary_cross_entropy_with_logits(out[:, b], target[:, b]) + F.mse_loss(out[:, ~b], target[:, ~b]) * 10


def train_attribute_classifier(size: int, steps: int = 800, batch_size: int = 64, lr: float = 3e-3, device="cpu",
                               seed: int = 0, progress: bool = True) -> AttributeClassifier:
    torch.manual_seed(seed)
    return train_on_synthfaces(AttributeClassifier(), size, steps, lambda out, _, attrs: _loss(out, attrs),
                               batch_size=batch_size, lr=lr, data_seed=seed + 2000, device=device, progress=progress,
                               desc="attributes")


@torch.no_grad()
def evaluate_attribute_classifier(model: AttributeClassifier, size: int, n: int = 512, seed: int = 54321,
                                  device="cpu") -> dict:
    """Held-out accuracy of each binary attribute and R^2 of each continuous one."""
    data = SynthFaces(size, n=n, seed=seed)
    x, _ = data.render(torch.arange(n), device=device)
    pred, target = model.scores(x).cpu(), data.attributes()
    out = {}
    for i, a in enumerate(ATTRIBUTES):
        if a in BINARY:
            out[a] = {"accuracy": float(((pred[:, i] > 0.5).float() == target[:, i]).float().mean())}
        else:
            ss = ((target[:, i] - target[:, i].mean()) ** 2).sum()
            out[a] = {"r2": float(1 - ((pred[:, i] - target[:, i]) ** 2).sum() / ss.clamp_min(1e-12))}
    return out


def load_or_train_attribute_classifier(cache_dir: Optional[str], size: int, device="cpu", steps: int = 800,
                                       progress: bool = True):
    """(classifier, held-out scores), cached as `cache_dir/attributes_{size}px.pt`."""
    return load_or_train(
        os.path.join(cache_dir, f"attributes_{size}px.pt") if cache_dir else None, steps,
        build=lambda saved: AttributeClassifier(),
        train=lambda: train_attribute_classifier(size, steps=steps, device=device, progress=progress),
        evaluate=lambda m: evaluate_attribute_classifier(m, size, device=device), device=device)
