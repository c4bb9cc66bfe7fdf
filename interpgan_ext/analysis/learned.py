"""Directions learned without supervision, and walks learned from self-supervised edits.

- `learn_directions` (Voynov & Babenko 2020): a matrix of K directions (free unit columns, or orthonormal) and
  a reconstructor that sees G(z) and G(z + eps * d_k) and must tell k and eps. Directions that the
  reconstructor can tell apart are ones that change the image in distinct, recognisable ways.
- `learn_walk` (Jahanian et al. 2020, "steerability"): one direction w such that G(z + alpha * w) matches a
  transformation of G(z) by alpha: zoom, shift, brightness or a colour channel.
"""
from typing import Callable, Dict

import torch
import torch.nn.functional as F
from torch import nn

from .._progress import progress_bar
from ..edit import deterministic


class DirectionMatrix(nn.Module):
    """K directions in a d-dim latent space: "linear" (unit columns, learnt freely) or "ortho" (orthonormal,
    from the QR factor of a free matrix)."""

    def __init__(self, d: int, K: int, kind: str = "ortho"):
        super().__init__()
        if kind not in ("linear", "ortho"):
            raise ValueError(f"DirectionMatrix: kind must be 'linear' or 'ortho', got {kind!r}")
        if kind == "ortho" and K > d:
            raise ValueError(f"DirectionMatrix: {K} orthonormal directions do not fit in {d} dimensions")
        self.kind = kind
        self.raw = nn.Parameter(torch.randn(d, K))

    def forward(self) -> torch.Tensor:
        """[K, d] unit directions."""
        if self.kind == "ortho":
            return torch.linalg.qr(self.raw).Q.T
        return F.normalize(self.raw, dim=0).T


class Reconstructor(nn.Module):
    """(G(z), G(z + eps d_k)) -> (logits over k, eps)."""

    def __init__(self, K: int, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(6, width, 3, 2, 1), nn.LeakyReLU(0.2, True),
                                 nn.Conv2d(width, 2 * width, 3, 2, 1), nn.LeakyReLU(0.2, True),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.cls, self.shift = nn.Linear(2 * width, K), nn.Linear(2 * width, 1)

    def forward(self, x, x_shifted):
        h = self.net(torch.cat([x, x_shifted], 1))
        return self.cls(h), self.shift(h).squeeze(1)


def learn_directions(G: nn.Module, z_dim: int, K: int, steps: int = 500, batch_size: int = 32, kind: str = "ortho",
                     max_shift: float = 6.0, lr: float = 1e-3, shift_weight: float = 0.25, seed: int = 0,
                     device="cpu", progress: bool = False):
    """(directions [K, z_dim], reconstructor, accuracy of telling k over the last 50 steps)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    A, R = DirectionMatrix(z_dim, K, kind).to(device), Reconstructor(K).to(device)
    opt = torch.optim.Adam(list(A.parameters()) + list(R.parameters()), lr=lr)
    hits = []
    with deterministic(G), progress_bar(steps, "directions", progress) as bar:
        G.requires_grad_(False)
        for _ in range(steps):
            z = torch.randn(batch_size, z_dim, generator=gen).to(device)
            k = torch.randint(K, (batch_size,), generator=gen).to(device)
            eps = ((torch.rand(batch_size, generator=gen) * 2 - 1) * max_shift).to(device)
            eps = torch.where(eps.abs() < 0.5, torch.sign(eps + 1e-6) * 0.5, eps)  # no vanishing shifts
            shift = A()[k] * eps[:, None]
            logits, eps_hat = R(G(z), G(z + shift))
            loss = F.cross_entropy(logits, k) + shift_weight * (eps_hat - eps).abs().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            hits.append((logits.argmax(1) == k).float().mean().item())
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", accuracy=f"{hits[-1]:.2f}")
    return A().detach(), R.eval(), sum(hits[-50:]) / len(hits[-50:])


def zoom(x, alpha):
    """Zoom in by exp(alpha) about the centre (alpha < 0 zooms out, padding by replication)."""
    s = float(torch.exp(torch.tensor(-alpha)))
    theta = torch.tensor([[s, 0.0, 0.0], [0.0, s, 0.0]], device=x.device, dtype=x.dtype).expand(len(x), 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


def shift_x(x, alpha):
    """Shift right by alpha (in units of half the image width)."""
    theta = torch.tensor([[1.0, 0.0, -alpha], [0.0, 1.0, 0.0]], device=x.device, dtype=x.dtype).expand(len(x), 2, 3)
    return F.grid_sample(x, F.affine_grid(theta, list(x.shape), align_corners=False), padding_mode="border",
                         align_corners=False)


def brightness(x, alpha):
    return (x + alpha).clamp(-1, 1)


def redness(x, alpha):
    return torch.cat([(x[:, :1] + alpha).clamp(-1, 1), x[:, 1:]], 1)


EDITS: Dict[str, Callable] = {"zoom": zoom, "shift": shift_x, "brightness": brightness, "color": redness}


def learn_walk(G: nn.Module, z_dim: int, edit: str = "brightness", steps: int = 300, batch_size: int = 32,
               max_alpha: float = 0.5, lr: float = 0.05, seed: int = 0, device="cpu", progress: bool = False):
    """(walk w [z_dim], final loss): minimises || G(z + alpha w) - edit(G(z), alpha) ||^2 over z and alpha, with
    alpha uniform in [-max_alpha, max_alpha] (the step in z is alpha * w / max_alpha * 3)."""
    if edit not in EDITS:
        raise ValueError(f"learn_walk: edit must be one of {sorted(EDITS)}, got {edit!r}")
    T = EDITS[edit]
    gen = torch.Generator().manual_seed(seed)
    w = torch.zeros(z_dim, device=device, requires_grad=True)
    opt = torch.optim.Adam([w], lr=lr)
    scale = 3.0 / max_alpha
    with deterministic(G), progress_bar(steps, "walk", progress) as bar:
        G.requires_grad_(False)
        for _ in range(steps):
            z = torch.randn(batch_size, z_dim, generator=gen).to(device)
            alpha = float((torch.rand(1, generator=gen) * 2 - 1) * max_alpha)
            with torch.no_grad():
                target = T(G(z), alpha)
            loss = F.mse_loss(G(z + alpha * scale * w), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update(1)
            if progress:  # .item() waits for a GPU
                bar.set_postfix(loss=f"{loss.item():.4f}")
    return w.detach() * scale, loss.item()
