"""GAN Dissection's causal side (Bau et al. 2019): ablate units (force them to 0) or insert them (force them to
a value, e.g. their mean activation where a concept is present) at chosen feature-map pixels, and measure the
effect on a concept: ACE = E[s_c(x_insert)] - E[s_c(x_ablate)]. Units are ranked by ACE; "artifact" units are
those whose ablation most improves a realism score."""
from typing import Callable, Optional, Sequence

import torch

from ..edit import deterministic, generate


def _set_units(units, value, mask):
    """An edit that sets channels `units` to `value` (a scalar, or one per unit) where `mask` [h, w] is True."""
    units = torch.as_tensor(units).long()

    def edit(f):
        out = f.clone()
        idx = units.to(f.device)
        v = torch.as_tensor(value, dtype=f.dtype, device=f.device).reshape(-1, 1, 1).expand(len(idx), *f.shape[2:])
        where = torch.ones(f.shape[2:], dtype=torch.bool, device=f.device) if mask is None else mask.to(f.device).bool()
        out[:, idx] = torch.where(where, v, out[:, idx])
        return out
    return edit


def ablate_units(units, mask: Optional[torch.Tensor] = None) -> Callable:
    """An edit for the target layer: `units` set to 0 (at the feature pixels in `mask` [h, w], else everywhere)."""
    return _set_units(units, 0.0, mask)


def insert_units(units, values: torch.Tensor, mask: Optional[torch.Tensor] = None) -> Callable:
    """An edit for the target layer: `units` set to `values` [len(units)] at the pixels in `mask`."""
    return _set_units(units, torch.as_tensor(values, dtype=torch.float32), mask)


@torch.no_grad()
def _mean_score(G, layer, z, edit, score_fn, batch_size):
    total, n = 0.0, 0
    with deterministic(G):
        for zb in z.split(batch_size):
            x, _ = generate(G, layer, zb, edit=edit)
            s = score_fn(x)
            total, n = total + float(s.sum()), n + len(s)
    return total / n


@torch.no_grad()
def average_causal_effect(G, layer: str, units, concept_score: Callable, z: torch.Tensor, insert_values: torch.Tensor,
                          mask: Optional[torch.Tensor] = None, batch_size: int = 64) -> float:
    """E[s_c(G with units inserted)] - E[s_c(G with units ablated)]; concept_score(images) -> [B] (e.g. the
    share of pixels a segmenter labels as the concept)."""
    ins = _mean_score(G, layer, z, insert_units(units, insert_values, mask), concept_score, batch_size)
    abl = _mean_score(G, layer, z, ablate_units(units, mask), concept_score, batch_size)
    return ins - abl


@torch.no_grad()
def rank_units_by_ace(G, layer: str, concept_score: Callable, z: torch.Tensor, insert_values: torch.Tensor,
                      units: Optional[Sequence[int]] = None, mask: Optional[torch.Tensor] = None,
                      batch_size: int = 64):
    """(units sorted by ACE, descending; their ACE). insert_values [M]: the value to insert per unit."""
    if units is None:
        units = range(len(insert_values))
    units = list(units)
    ace = torch.tensor([average_causal_effect(G, layer, [u], concept_score, z, insert_values[u:u + 1], mask,
                                              batch_size) for u in units])
    order = torch.argsort(ace, descending=True)
    return torch.tensor(units)[order], ace[order]


@torch.no_grad()
def artifact_units(G, layer: str, realism_score: Callable, z: torch.Tensor, units: Sequence[int], top: int = 10,
                   batch_size: int = 64):
    """(units whose ablation most raises the mean realism score (e.g. D's logit), that gain), best first."""
    base = _mean_score(G, layer, z, None, realism_score, batch_size)
    gain = torch.tensor([_mean_score(G, layer, z, ablate_units([u]), realism_score, batch_size) - base for u in units])
    order = torch.argsort(gain, descending=True)[:top]
    return torch.tensor(list(units))[order], gain[order]
