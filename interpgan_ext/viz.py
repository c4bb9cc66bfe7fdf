"""Pictures: image grids as PNG."""
import os

import numpy as np
import torch
from PIL import Image


def image_grid(images: torch.Tensor, nrow: int = 8, pad: int = 1) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] -> an HxWx3 uint8 grid with `nrow` images per row."""
    images = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    N, C, H, W = images.shape
    ncol = min(nrow, N)
    nrows = (N + ncol - 1) // ncol
    grid = torch.full((C, nrows * (H + pad) + pad, ncol * (W + pad) + pad), 255, dtype=torch.uint8)
    for i in range(N):
        r, c = divmod(i, ncol)
        grid[:, pad + r * (H + pad): pad + r * (H + pad) + H, pad + c * (W + pad): pad + c * (W + pad) + W] = images[i]
    return grid.permute(1, 2, 0).numpy()


def save_image_grid(images: torch.Tensor, path: str, nrow: int = 8, scale: int = 1) -> str:
    """Write a PNG grid of images in [-1, 1]; `scale` enlarges small images (nearest neighbour)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    img = Image.fromarray(image_grid(images, nrow))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(path)
    return path


# -- filter and group pictures --------------------------------------------------------------------------------
def palette(n: int) -> torch.Tensor:
    """n distinct colours [n, 3] in [0, 1] (evenly spaced hues)."""
    import colorsys

    return torch.tensor([colorsys.hsv_to_rgb(i / max(n, 1), 0.85, 1.0) for i in range(n)], dtype=torch.float32)


def _heat(a: torch.Tensor) -> torch.Tensor:
    """[N, S, S] in [0, 1] -> [N, 3, S, S] in [0, 1]: black, red, yellow, white."""
    return torch.stack([(3 * a).clamp(0, 1), (3 * a - 1).clamp(0, 1), (3 * a - 2).clamp(0, 1)], 1)


def activation_overlay(images: torch.Tensor, acts: torch.Tensor, alpha: float = 0.6) -> torch.Tensor:
    """Images [N, 3, S, S] in [-1, 1] with activation maps [N, h, w] upsampled, scaled by their common 99th percentile
    (so strengths compare across the images), and overlaid as a heat map; result in [-1, 1]."""
    S = images.shape[-1]
    a = torch.nn.functional.interpolate(acts[:, None].float(), size=(S, S), mode="bilinear", align_corners=False)[:, 0]
    a = a.clamp_min(0)
    a = (a / torch.quantile(a.flatten()[::max(1, a.numel() // 100000)], 0.99).clamp_min(1e-8)).clamp(max=1)
    img = (images.float() + 1) / 2
    mixed = img * (1 - alpha * a[:, None]) + _heat(a) * alpha * a[:, None]
    return mixed * 2 - 1


def group_map(features: torch.Tensor, q: torch.Tensor, n_groups: int, size: int) -> torch.Tensor:
    """Per pixel, the group with the strongest mean activation [N, size, size] (each group's map scaled by its
    maximum over the batch first, so that groups with large activations do not win everywhere)."""
    from .metrics.dissection import group_activations, upsample

    g = upsample(group_activations(features.float(), q, n_groups), size)
    g = g / g.amax(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
    return g.argmax(1)


def label_overlay(images: torch.Tensor, labels: torch.Tensor, n_labels: int, alpha: float = 0.55) -> torch.Tensor:
    """Images in [-1, 1] tinted with one colour per label."""
    colours = palette(n_labels).to(images.device)[labels].permute(0, 3, 1, 2)
    return ((images.float() + 1) / 2 * (1 - alpha) + colours * alpha) * 2 - 1


def labelled_rows(rows, labels, path: str, scale: int = 2, label_width: int = 70, header=None) -> str:
    """A PNG with one row of images per entry of `rows` ([n, 3, S, S] in [-1, 1] each), a text label left of
    each row and, optionally, a title over each column (`header`)."""
    from PIL import ImageDraw

    grids = [Image.fromarray(image_grid(r, nrow=len(r))) for r in rows]
    grids = [g.resize((g.width * scale, g.height * scale), Image.NEAREST) for g in grids]
    top = 16 if header else 0
    W, H = label_width + max(g.width for g in grids), top + sum(g.height for g in grids)
    canvas = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(canvas)
    if header:
        col = (W - label_width) / len(header)
        for i, text in enumerate(header):
            draw.text((label_width + i * col + 3, 2), str(text), fill="black")
    y = top
    for g, text in zip(grids, labels):
        canvas.paste(g, (label_width, y))
        draw.text((4, y + g.height // 2 - 6), str(text), fill="black")
        y += g.height
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    canvas.save(path)
    return path


def bar_chart(values, labels, path: str, title: str = "", colours=None, width: int = 480, bar_h: int = 18) -> str:
    """A horizontal bar chart PNG: one bar per value, its label on the left and its value on the right."""
    from PIL import ImageDraw

    values = [float(v) for v in values]
    top = 24 if title else 6
    H = top + bar_h * len(values) + 6
    canvas = Image.new("RGB", (width, H), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((6, 6), title, fill="black")
    left, right = 110, width - 60
    vmax = max(values + [1e-12])
    cols = colours if colours is not None else palette(len(values))
    for i, (v, lab) in enumerate(zip(values, labels)):
        y = top + i * bar_h
        draw.text((6, y + 3), str(lab)[:18], fill="black")
        c = tuple(int(255 * x) for x in cols[i])
        draw.rectangle([left, y + 2, left + int((right - left) * v / vmax), y + bar_h - 3], fill=c)
        draw.text((right + 6, y + 3), f"{v:.3g}", fill="black")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    canvas.save(path)
    return path


def _legend(draw, names, colours, y0: int, width: int):
    """Colour swatches with their names, four to a row, from y0 down (16 px a row)."""
    for j, (name, c) in enumerate(zip(names, colours)):
        x, y = 6 + (j % 4) * (width // 4), y0 + 16 * (j // 4)
        draw.rectangle([x, y + 2, x + 10, y + 12], fill=c)
        draw.text((x + 14, y + 1), str(name)[:24], fill="black")


def stacked_bar_chart(rows, labels, parts, path: str, title: str = "", unit: str = "", width: int = 680,
                      bar_h: int = 22, label_width: int = 170) -> str:
    """A horizontal stacked bar chart PNG: one bar per row (a list of values, one per part), its label on the left,
    its total on the right, and a legend of the parts' colours below."""
    from PIL import ImageDraw

    rows = [[max(0.0, float(v)) for v in r] for r in rows]
    if any(len(r) != len(parts) for r in rows):
        raise ValueError(f"stacked_bar_chart: every row needs one value per part ({len(parts)})")
    top = 24 if title else 6
    legend_y = top + bar_h * len(rows) + 8
    H = legend_y + 16 * ((len(parts) + 3) // 4) + 6
    canvas = Image.new("RGB", (width, H), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((6, 6), title, fill="black")
    left, right = label_width, width - 90
    vmax = max([sum(r) for r in rows] + [1e-12])
    cols = [tuple(int(255 * x) for x in c) for c in palette(len(parts))]
    for i, (r, lab) in enumerate(zip(rows, labels)):
        y, x = top + i * bar_h, float(left)
        draw.text((6, y + 5), str(lab)[: label_width // 6 - 1], fill="black")
        for v, c in zip(r, cols):
            x1 = x + (right - left) * v / vmax
            if x1 - x >= 0.5:
                draw.rectangle([int(x), y + 2, int(x1), y + bar_h - 3], fill=c)
            x = x1
        draw.text((right + 6, y + 5), f"{sum(r):.4g} {unit}".strip(), fill="black")
    _legend(draw, parts, cols, legend_y, width)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    canvas.save(path)
    return path


def speedup_chart(groups, path: str, title: str = "", target: float = None, width: int = 720, bar_h: int = 14,
                  label_width: int = 250) -> str:
    """Speed-ups as horizontal bars on a log scale, from 1x (the vertical line) out to each ratio; ratios below 1 go
    left. `groups` is a list of (label, {rival: ratio}): one block of bars per label (a label may hold a line break),
    one colour per rival, and a legend of the rivals below. `target` adds a dashed line (a goal such as 5x)."""
    import math

    from PIL import ImageDraw

    rivals = list(dict.fromkeys(r for _, ratios in groups for r in ratios))
    ratios = [v for _, rs in groups for v in rs.values()] + ([target] if target else [])
    if not ratios or any(not (v > 0 and math.isfinite(v)) for v in ratios):
        raise ValueError("speedup_chart: every ratio must be a positive, finite number")
    lo, hi = min(ratios + [1.0]) / 1.3, max(ratios + [1.0]) * 1.3
    left, right = label_width, width - 60
    x_of = lambda v: left + (right - left) * (math.log(v) - math.log(lo)) / (math.log(hi) - math.log(lo))  # noqa: E731
    top = (24 if title else 6) + 14
    blocks = [max(bar_h * len(rs), 12 * (str(label).count("\n") + 1)) + 8 for label, rs in groups]
    legend_y = top + sum(blocks) + 4
    H = legend_y + 16 * ((len(rivals) + 3) // 4) + 6
    canvas = Image.new("RGB", (width, H), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((6, 6), title, fill="black")
    ticks = [t for t in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500) if lo <= t <= hi]
    for t in ticks:
        draw.line([int(x_of(t)), top - 2, int(x_of(t)), legend_y - 6], fill=(225, 225, 225))
        draw.text((int(x_of(t)) - 6, top - 14), f"{t:g}x", fill="black")
    cols = [tuple(int(255 * x) for x in c) for c in palette(len(rivals))]
    colour_of = dict(zip(rivals, cols))
    y0 = top
    for (label, rs), block in zip(groups, blocks):
        lines = [line[: label_width // 6 - 1] for line in str(label).split("\n")]
        draw.text((6, y0 + 2), "\n".join(lines), fill="black")
        for j, (rival, ratio) in enumerate(rs.items()):
            y, a, b, c = y0 + j * bar_h, x_of(1.0), x_of(ratio), colour_of[rival]
            draw.rectangle([int(min(a, b)), y + 2, int(max(a, b)), y + bar_h - 2], fill=c)
            draw.text((int(max(a, b)) + 4, y + 1), f"{ratio:.3g}x", fill="black")
        y0 += block
    draw.line([int(x_of(1.0)), top - 2, int(x_of(1.0)), legend_y - 6], fill="black")
    if target:
        for y in range(top - 2, legend_y - 6, 6):
            draw.line([int(x_of(target)), y, int(x_of(target)), y + 3], fill=(200, 0, 0))
    _legend(draw, rivals, cols, legend_y, width)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    canvas.save(path)
    return path


# -- figures of a trained run -----------------------------------------------------------------------------------
def swap_figure(res, path: str, scale: int = 2) -> str:
    """One row per pair: original A, original B, edited A (A with B's concept), |edited A - A|."""
    diff = (res.edited_a.float() - res.a.float()).abs().mean(1)
    diff = _heat(diff / diff.amax().clamp_min(1e-8)) * 2 - 1
    rows = [torch.stack([res.a[i], res.b[i], res.edited_a[i], diff[i].to(res.a.dtype)]) for i in range(len(res.a))]
    return labelled_rows(rows, [f"pair {i}" for i in range(len(rows))], path, scale=scale, label_width=48,
                         header=["A", "B", "A edited", "|diff|"])


def visualize_run(run, out_dir: str, n_images: int = 8, n_filters: int = 16, seed: int = 0, metrics=None) -> list:
    """The PNGs of `interpgan visualize`: filter activations over the same images (one filter per row), the group
    map, the partition's sizes and, when `metrics` (from `interpgan eval`) has dissection results, the share
    of filters per matched part. Returns the paths written."""
    from .data import PARTS
    from .edit import deterministic, generate
    from .runs import partition_of

    q = partition_of(run, seed=seed).cpu()
    C = run.n_groups
    with deterministic(run.G), torch.no_grad():
        x, f = generate(run.G, run.layer, run.latents(n_images, seed))
    x, f = x.float().cpu(), f.float().cpu()
    scale = max(1, 64 // x.shape[-1])
    paths = []
    # a sample of filters, spread over the groups
    per_group = max(1, -(-n_filters // C))
    chosen = [int(j) for c in range(C) for j in torch.nonzero(q == c).flatten()[:per_group]][:n_filters]
    rows = [activation_overlay(x, f[:, j]) for j in chosen]
    paths.append(labelled_rows(rows, [f"filter {j} g{int(q[j])}" for j in chosen],
                               os.path.join(out_dir, "filters.png"), scale=scale, label_width=90))
    gmap = group_map(f, q, C, x.shape[-1])
    paths.append(labelled_rows([x, label_overlay(x, gmap, C)], ["images", "group map"],
                               os.path.join(out_dir, "group_map.png"), scale=scale))
    sizes = torch.bincount(q, minlength=C).tolist()
    paths.append(bar_chart(sizes, [f"group {c}" for c in range(C)], os.path.join(out_dir, "group_sizes.png"),
                           title=f"filters per group ({len(q)} filters, C={C})"))
    diss = (metrics or {}).get("dissection")
    if diss:
        counts = [sum(1 for e in diss["filters"] if e["best_part"] == p) / len(diss["filters"]) for p in PARTS]
        paths.append(bar_chart(counts, PARTS, os.path.join(out_dir, "filter_parts.png"),
                               title="share of filters by best-matching part", colours=palette(len(PARTS))))
        g = diss["groups"]
        paths.append(bar_chart([e["iou"] for e in g], [f"g{e['group']}: {e['best_part']}" for e in g],
                               os.path.join(out_dir, "group_parts.png"), title="each group's best part (IoU)"))
    return paths
