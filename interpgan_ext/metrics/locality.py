"""Locality of a concept edit (SPEC §7): how much of an edit's change falls outside the concept's region.

    ratio = MSE_out / MSE_in   (original vs edited, RGB; lower is more local)

`in` is the concept's region and `out` the rest of the image. For a swap, the region is the part's mask in
either of the two originals (the concept leaves one place and arrives at the other).
"""
from typing import Callable, Optional

import torch

from ..edit import swap_concept


def mse_in_out(original: torch.Tensor, edited: torch.Tensor, region: torch.Tensor):
    """Per-image (MSE inside region, MSE outside, defined): images [B, 3, S, S], region [B, S, S] bool.
    `defined` is False where the region is empty or covers the whole image."""
    if region.shape != (original.shape[0],) + original.shape[2:]:
        raise ValueError(f"locality: region {list(region.shape)} does not match images {list(original.shape)}")
    err = (edited.float() - original.float()).pow(2).mean(1)  # [B, S, S]
    inside = region.float()
    n_in, n_out = inside.sum((1, 2)), (1 - inside).sum((1, 2))
    mse_in = (err * inside).sum((1, 2)) / n_in.clamp_min(1)
    mse_out = (err * (1 - inside)).sum((1, 2)) / n_out.clamp_min(1)
    return mse_in, mse_out, (n_in > 0) & (n_out > 0)


def locality_ratio(original: torch.Tensor, edited: torch.Tensor, region: torch.Tensor, eps: float = 1e-12):
    """Per-image MSE_out / MSE_in; NaN where the region is empty or the whole image."""
    mse_in, mse_out, ok = mse_in_out(original, edited, region)
    ratio = mse_out / mse_in.clamp_min(eps)
    return torch.where(ok, ratio, torch.full_like(ratio, float("nan")))


@torch.no_grad()
def swap_locality(G, layer: str, channels: torch.Tensor, z_a: torch.Tensor, z_b: torch.Tensor,
                  region_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], batch_size: int = 64,
                  result_hook: Optional[Callable] = None, eps: float = 1e-12) -> dict:
    """Swap `channels` between pairs (z_a[i], z_b[i]) and score both edits. `region_fn(images, features)` gives each
    original's concept region [B, S, S] from its images and target-layer features; the swap's region is the union over the pair. Returns the mean ratio
    over the edits where it is defined, the mean MSE_in and MSE_out, and the number of edits used."""
    mse_in, mse_out, ok = [], [], []
    for za, zb in zip(z_a.split(batch_size), z_b.split(batch_size)):
        res = swap_concept(G, layer, za, zb, channels=channels)
        if result_hook is not None:
            result_hook(res)
        region = region_fn(res.a, res.features_a) | region_fn(res.b, res.features_b)
        for orig, edit in ((res.a, res.edited_a), (res.b, res.edited_b)):
            i, o, d = mse_in_out(orig, edit, region)
            mse_in.append(i), mse_out.append(o), ok.append(d)
    mse_in, mse_out, ok = torch.cat(mse_in), torch.cat(mse_out), torch.cat(ok)
    if not ok.any():
        return {"ratio": float("nan"), "n": 0, "mse_in": float("nan"), "mse_out": float("nan")}
    ratio = mse_out[ok] / mse_in[ok].clamp_min(eps)
    return {"ratio": float(ratio.mean()), "n": int(ok.sum()), "mse_in": float(mse_in[ok].mean()),
            "mse_out": float(mse_out[ok].mean())}
