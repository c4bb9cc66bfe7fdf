"""GAN inversion (as in In-Domain GAN Inversion, Zhu et al. 2020): find z with G(z) ~ x.

- `train_encoder`: E maps images to latents, trained on G's own samples with ||z - E(G(z))||^2 and the image
  reconstruction ||G(E(G(z))) - G(z)||^2.
- `invert`: optimise z from E's guess (or from 0): a pixel loss, a feature loss (any feature extractor, e.g.
  the segmenter's encoder), and a regulariser that keeps z in G's domain: close to E(G(z)) when an encoder
  is given (the in-domain term), and ||z||^2 / 2 (the prior) otherwise.
"""
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .._progress import progress_bar


class Encoder(nn.Module):
    """Images [B, 3, S, S] in [-1, 1] -> latents [B, z_dim]: strided convs, then a linear head."""

    def __init__(self, size: int, z_dim: int, width: int = 32):
        super().__init__()
        layers, c, s = [], 3, size
        while s > 4:
            layers += [nn.Conv2d(c, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
            c, s = width, s // 2
            width = min(width * 2, 256)
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c * s * s, z_dim)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def train_encoder(G: nn.Module, z_dim: int, size: int, steps: int = 500, batch_size: int = 64, lr: float = 1e-3,
                  image_weight: float = 1.0, seed: int = 0, device="cpu", progress: bool = False) -> Encoder:
    from ..edit import deterministic

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    E = Encoder(size, z_dim).to(device)
    opt = torch.optim.Adam(E.parameters(), lr=lr)
    with progress_bar(steps, "encoder", progress) as bar, deterministic(G):
        G.requires_grad_(False)
        for _ in range(steps):
            z = torch.randn(batch_size, z_dim, generator=gen).to(device)
            with torch.no_grad():
                x = G(z)
            z_hat = E(x)
            loss = F.mse_loss(z_hat, z) + image_weight * F.mse_loss(G(z_hat), x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return E.eval().requires_grad_(False)


def invert(G: nn.Module, images: torch.Tensor, z_dim: int, steps: int = 300, lr: float = 0.05,
           encoder: Optional[nn.Module] = None, feature_fn: Optional[Callable] = None, feature_weight: float = 1.0,
           reg_weight: float = 0.01, seed: int = 0):
    """(z [B, z_dim], reconstructions G(z), final per-image pixel MSE)."""
    from ..edit import deterministic

    with deterministic(G):
        G.requires_grad_(False)
        with torch.no_grad():
            z0 = encoder(images) if encoder is not None else \
                torch.zeros(len(images), z_dim, device=images.device)
            target_feats = feature_fn(images) if feature_fn is not None else None
        z = z0.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=lr)
        for _ in range(steps):
            x = G(z)
            loss = F.mse_loss(x, images)
            if feature_fn is not None:
                loss = loss + feature_weight * F.mse_loss(feature_fn(x), target_feats)
            if encoder is not None:  # in-domain: z stays where the encoder would put G(z)
                loss = loss + reg_weight * F.mse_loss(z, encoder(x))
            else:
                loss = loss + reg_weight * 0.5 * z.pow(2).sum(1).mean() / z_dim
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            x = G(z)
            err = (x - images).pow(2).flatten(1).mean(1)
    return z.detach(), x, err
