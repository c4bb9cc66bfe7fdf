"""GAN-Dissection-style agreement between units (filters or filter groups) and part masks (SPEC §7).

A unit's activation map is upsampled to image size and thresholded; its IoU with each part mask is counted
over many images. The threshold for a (unit, part) pair is the candidate that maximises the information
quality ratio IQR = I(U; P) / H(U, P) of the two binary masks (Bau et al.), where the candidates are quantiles
of the unit's activation. Everything streams: quantiles are kept in a fixed-size sample per unit, and the
IoUs come from 2x2 contingency counts, so no image is held after its batch.
"""
import math
from typing import Sequence

import torch
import torch.nn.functional as F

from ._reservoir import Reservoir

# Candidate thresholds: the activation quantiles that leave these shares of pixels above them, a geometric
# grid from 0.1% to 50% (fine enough that a part covering s% of the image has a candidate within 15% of s).
TOP_SHARES = tuple(round(0.001 * 1.3 ** k, 6) for k in range(24))


class RunningQuantile:
    """Approximate per-unit quantiles of a stream, from a uniform random sample of at most `resolution`
    observations (positions), each holding all units."""

    def __init__(self, n_units: int, resolution: int = 4096, seed: int = 0):
        self.n_units = n_units
        self.reservoir = Reservoir(resolution, seed)

    def add(self, values: torch.Tensor):
        """values [U, N]: N new observations of each unit."""
        if values.dim() != 2 or values.shape[0] != self.n_units:
            raise ValueError(f"RunningQuantile.add: expected [{self.n_units}, N] values, got {list(values.shape)}")
        self.reservoir.add(values.detach().float().T)

    def quantiles(self, levels: Sequence[float]) -> torch.Tensor:
        """[U, L] values below which `levels` of each unit's observations lie."""
        if self.reservoir.rows is None:
            raise RuntimeError("RunningQuantile: no data added")
        sample = self.reservoir.rows
        lv = torch.tensor(list(levels), dtype=torch.float32, device=sample.device)
        return torch.quantile(sample, lv, dim=0).T


def information_quality_ratio(tp, fp, fn, tn) -> torch.Tensor:
    """I(U; P) / H(U, P) of two binary masks from their 2x2 contingency counts (elementwise over tensors)."""
    counts = torch.stack([torch.as_tensor(c, dtype=torch.float64) for c in (tp, fp, fn, tn)])
    n = counts.sum(0).clamp_min(1)
    p = counts / n  # joint: (u=1,p=1), (u=1,p=0), (u=0,p=1), (u=0,p=0)
    pu = torch.stack([p[0] + p[1], p[2] + p[3]])  # marginal of the unit mask for each cell's u
    pp = torch.stack([p[0] + p[2], p[1] + p[3]])
    cell_u = [pu[0], pu[0], pu[1], pu[1]]
    cell_p = [pp[0], pp[1], pp[0], pp[1]]
    xlogy = lambda a, b: torch.where(a > 0, a * torch.log(b.clamp_min(1e-300)), torch.zeros_like(a))  # noqa: E731
    mi = sum(xlogy(p[i], p[i] / (cell_u[i] * cell_p[i]).clamp_min(1e-300)) for i in range(4))
    h = -sum(xlogy(p[i], p[i]) for i in range(4))
    return torch.where(h > 0, mi / h.clamp_min(1e-300), torch.zeros_like(h))


def upsample(acts: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(acts.float(), size=(size, size), mode="bilinear", align_corners=False)


class Dissection:
    """Streams unit activations [B, U, h, w] and label maps [B, S, S] in two passes:
    `add_quantiles` over batches, then `add_counts` over (the same or fresh) batches; `result()` gives the
    chosen thresholds and IoUs."""

    def __init__(self, n_units: int, n_parts: int, top_shares: Sequence[float] = TOP_SHARES, resolution: int = 16384,
                 seed: int = 0):
        self.n_units, self.n_parts, self.top_shares = n_units, n_parts, tuple(top_shares)
        self.rq = RunningQuantile(n_units, resolution, seed)
        self.thresholds = None  # [U, L]
        L = len(self.top_shares)
        self.tp = torch.zeros(n_units, n_parts, L, dtype=torch.float64)
        self.unit_pos = torch.zeros(n_units, L, dtype=torch.float64)
        self.part_pos = torch.zeros(n_parts, dtype=torch.float64)
        self.total = 0

    def add_quantiles(self, acts: torch.Tensor, size: int):
        up = upsample(acts, size)
        self.rq.add(up.transpose(0, 1).reshape(self.n_units, -1))

    @torch.no_grad()
    def add_counts(self, acts: torch.Tensor, labels: torch.Tensor):
        if self.thresholds is None:
            self.thresholds = self.rq.quantiles([1 - s for s in self.top_shares])
        S = labels.shape[-1]
        up = upsample(acts, S).transpose(0, 1).reshape(self.n_units, -1)  # [U, N]
        onehot = F.one_hot(labels.reshape(-1).long(), self.n_parts).to(up.dtype)  # [N, P]
        thr = self.thresholds.to(up.device)
        for i in range(len(self.top_shares)):
            mask = (up > thr[:, i:i + 1]).to(up.dtype)
            self.tp[:, :, i] += (mask @ onehot).double().cpu()
            self.unit_pos[:, i] += mask.sum(1).double().cpu()
        self.part_pos += onehot.sum(0).double().cpu()
        self.total += up.shape[1]

    def result(self) -> dict:
        """iou [U, P] at each pair's IQR-chosen threshold; threshold [U, P]; best_part and best_iou per unit."""
        tp = self.tp
        fp = self.unit_pos[:, None, :] - tp
        fn = self.part_pos[None, :, None] - tp
        tn = self.total - tp - fp - fn
        iqr = information_quality_ratio(tp, fp, fn, tn)  # [U, P, L]
        best = iqr.argmax(-1, keepdim=True)
        iou_all = tp / (tp + fp + fn).clamp_min(1)
        iou = iou_all.gather(-1, best).squeeze(-1)
        thr = self.thresholds.cpu()[:, None, :].expand(-1, self.n_parts, -1).gather(-1, best).squeeze(-1)
        best_iou, best_part = iou.max(1)
        return {"iou": iou.float(), "threshold": thr, "iqr": iqr.gather(-1, best).squeeze(-1).float(),
                "best_part": best_part, "best_iou": best_iou.float()}


def group_activations(f: torch.Tensor, q: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Mean feature map of each group: [B, M, h, w] -> [B, C, h, w] (zeros for an empty group)."""
    onehot = F.one_hot(q.long(), n_groups).to(f.dtype)  # [M, C]
    sizes = onehot.sum(0).clamp_min(1)
    return torch.einsum("bmhw,mc->bchw", f, onehot / sizes)


def summarize(group_res: dict, filter_res: dict, q: torch.Tensor, part_names: Sequence[str],
              match_iou: float = 0.1) -> dict:
    """The summary numbers of issue 4: mean best IoU of groups, distinct parts matched (IoU >= match_iou), and
    group purity (share of filters whose own best part is their group's best part)."""
    q = q.cpu()
    g_part, g_iou = group_res["best_part"], group_res["best_iou"]
    sizes = torch.bincount(q, minlength=len(g_part))
    nonempty = sizes > 0
    matched = {int(p) for p, i, ne in zip(g_part, g_iou, nonempty) if ne and i >= match_iou}
    f_part = filter_res["best_part"]
    purity = float((f_part == g_part[q]).float().mean()) if len(q) else math.nan
    return {
        "mean_group_iou": float(g_iou[nonempty].mean()),
        "parts_matched": len(matched),
        "matched_parts": sorted(part_names[p] for p in matched),
        "group_purity": purity,
        "mean_filter_iou": float(filter_res["best_iou"].mean()),
        "groups": [{"group": c, "size": int(sizes[c]), "best_part": part_names[int(g_part[c])],
                    "iou": float(g_iou[c])} for c in range(len(g_part))],
    }
