"""Concept editing (SPEC §6): swap a filter group's feature maps between two images, and Langevin refinement.

Edits act inside G's forward through a hook on the target layer, so they work on any generator the trainer
accepts. Stochastic layers (StyleGAN2's noise inputs) are switched off while editing, so that an original and
its edit differ only by the edit.
"""
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from .sampler import FeatureExtractor, LangevinSampler


@contextmanager
def deterministic(G: nn.Module):
    """G in eval mode with noise inputs off (modules with a `noise_mode`, as in StyleGAN2), restored afterwards."""
    was_training = G.training
    noisy = [(m, m.noise_mode) for m in G.modules() if hasattr(m, "noise_mode")]
    G.eval()
    for m, _ in noisy:
        m.noise_mode = "none"
    try:
        yield G
    finally:
        G.train(was_training)
        for m, mode in noisy:
            m.noise_mode = mode


def group_channels(q: torch.Tensor, groups: Sequence[int]) -> torch.Tensor:
    """Indices of the filters in any of `groups` under partition q."""
    q = torch.as_tensor(q)
    groups = [int(c) for c in groups]
    if not groups:
        raise ValueError("group_channels: give at least one group")
    C = int(q.max()) + 1 if q.numel() else 0
    bad = [c for c in groups if c < 0]
    if bad:
        raise ValueError(f"group_channels: group ids must be >= 0, got {bad}")
    chans = torch.nonzero(torch.isin(q, torch.tensor(groups, device=q.device))).flatten()
    if chans.numel() == 0:
        raise ValueError(f"group_channels: groups {groups} hold no filters (the partition has groups 0..{C - 1}, "
                         f"sizes {torch.bincount(q, minlength=C).tolist()})")
    return chans


def replace_channels(donor: torch.Tensor, channels: torch.Tensor) -> Callable:
    """An edit for the target layer: channels `channels` of its output are replaced by `donor`'s."""
    channels = torch.as_tensor(channels).long()

    def edit(f):
        if donor.shape[0] != f.shape[0] or donor.shape[2:] != f.shape[2:]:
            raise ValueError(f"replace_channels: donor features {list(donor.shape)} do not fit the layer's "
                             f"output {list(f.shape)}")
        out = f.clone()
        idx = channels.to(f.device)
        out[:, idx] = donor[:, idx].to(f.dtype)
        return out

    return edit


def generate(G: nn.Module, layer: str, z: torch.Tensor, edit: Optional[Callable] = None):
    """(images, target-layer features) of G(z), with `edit` applied to the layer's output inside the forward."""
    ext = FeatureExtractor(G, layer)
    store = {}
    with ext._hook(store, stop=False, edit=edit):
        x = G(z)
    return x, store["f"]


@dataclass
class SwapResult:
    a: torch.Tensor         # originals G(z_a)
    b: torch.Tensor         # originals G(z_b)
    edited_a: torch.Tensor  # G(z_a) with the channels taken from z_b
    edited_b: torch.Tensor  # G(z_b) with the channels taken from z_a
    channels: torch.Tensor
    features_a: torch.Tensor  # the target layer's output for z_a and z_b (before the swap)
    features_b: torch.Tensor


@torch.no_grad()
def swap_concept(G: nn.Module, layer: str, z_a: torch.Tensor, z_b: torch.Tensor, groups: Sequence[int] = (),
                 q: Optional[torch.Tensor] = None, channels: Optional[torch.Tensor] = None) -> SwapResult:
    """Exchange the feature maps of every filter in `groups` (under partition q) between G(z_a) and G(z_b)
    at `layer`. Several groups at once swap a whole region. `channels` names the filters directly instead."""
    if z_a.shape != z_b.shape:
        raise ValueError(f"swap_concept: z_a {list(z_a.shape)} and z_b {list(z_b.shape)} differ in shape")
    if channels is None:
        if q is None:
            raise ValueError("swap_concept: give the partition q (with groups) or the channels to swap")
        channels = group_channels(q, groups)
    channels = torch.as_tensor(channels).long()
    with deterministic(G):
        x_a, f_a = generate(G, layer, z_a)
        x_b, f_b = generate(G, layer, z_b)
        M = f_a.shape[1]
        if channels.numel() and (channels.min() < 0 or channels.max() >= M):
            raise ValueError(f"swap_concept: channels must lie in [0, {M}) for layer {layer!r}")
        e_a, _ = generate(G, layer, z_a, edit=replace_channels(f_b, channels))
        e_b, _ = generate(G, layer, z_b, edit=replace_channels(f_a, channels))
    return SwapResult(x_a, x_b, e_a, e_b, channels, f_a, f_b)


def refine(G: nn.Module, layer: str, energy, z: torch.Tensor, q: torch.Tensor, edit: Optional[Callable] = None,
           steps: int = 10, step_size: float = 0.05, prior_weight: float = 1.0, drift_clip: Optional[float] = 1.0,
           generator: Optional[torch.Generator] = None):
    """Langevin refinement (SPEC §6): `steps` steps on z under g_W, with `edit` applied inside G's forward so
    the energy is that of the edited features. Returns (refined z, images G(z') with the edit applied)."""
    with deterministic(G):
        sampler = LangevinSampler(G, layer, energy, steps, step_size, prior_weight, drift_clip)
        z_new = sampler.sample(z, q, generator=generator, edit=edit)
        with torch.no_grad():
            x, _ = generate(G, layer, z_new, edit=edit)
    return z_new, x
