"""The energy-based model of SPEC §3 and the losses of SPEC §5 that involve W.

    log P_W(f_G(z) | q) = g_W(f_G(z)) - ||z||^2 / 2 + const
"""
from typing import Sequence, Union

import torch
from torch import nn

from .ops import group_energy


def _weights_for(f: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """W in a dtype the op accepts with f: float32 W serves float32 and half/bfloat16 features."""
    return W.to(f.dtype) if f.dtype in (torch.float32, torch.float64) else W.float()


class EnergyModel(nn.Module):
    """Holds W [M, C, K] and computes g_W through the fused op. W is kept in [0, w_max] by `project_()`."""

    def __init__(self, n_filters: int, n_groups: int, spatial: Union[int, Sequence[int]], w_max: float = 1.0,
                 init_scale: float = 0.01, seed: int = 0):
        super().__init__()
        K = spatial if isinstance(spatial, int) else int(torch.tensor(spatial).prod())
        if min(n_filters, n_groups, K) < 1:
            raise ValueError(f"EnergyModel: sizes must be >= 1, got M={n_filters}, C={n_groups}, K={K}")
        gen = torch.Generator().manual_seed(seed)
        self.W = nn.Parameter(init_scale * torch.rand(n_filters, n_groups, K, generator=gen))
        self.w_max = w_max

    @property
    def n_filters(self):
        return self.W.shape[0]

    @property
    def n_groups(self):
        return self.W.shape[1]

    def forward(self, f: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """g_W(f) per sample [B]."""
        return group_energy(f, _weights_for(f, self.W), q)

    @torch.no_grad()
    def project_(self):
        """Projection after each W step (SPEC §5 choice): L_interp is linear in W, so W needs a box."""
        self.W.clamp_(0.0, self.w_max)

    # -- losses ---------------------------------------------------------------------------------------
    def loss_cd(self, f_pos: torch.Tensor, f_neg: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Contrastive divergence for W: mean g_W(f-) - mean g_W(f+) (features detached from G)."""
        return self(f_neg.detach(), q).mean() - self(f_pos.detach(), q).mean()

    def loss_real(self, f: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Realism term for G: -mean g_W(f_G(z)), with W held fixed."""
        return -group_energy(f, _weights_for(f, self.W.detach()), q).mean()

    def loss_interp(self, q: torch.Tensor, lambda1: float = 1.0) -> torch.Tensor:
        """(-sum_{q_j = c} W + lambda1 * sum_{q_j != c} W) / (M * K): W rewards a filter's own group only."""
        M, _, K = self.W.shape
        if q.shape != (M,):
            raise ValueError(f"loss_interp: expected q of shape [M={M}] (a group id per filter), got {list(q.shape)}")
        own = torch.nn.functional.one_hot(q, self.n_groups).to(self.W.dtype)[:, :, None]  # [M, C, 1]
        return (-(self.W * own).sum() + lambda1 * (self.W * (1 - own)).sum()) / (M * K)
