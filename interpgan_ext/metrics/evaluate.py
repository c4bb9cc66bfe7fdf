"""`interpgan eval`: interpretability (group/filter-part IoU, locality of swaps) and realism (FID/KID) of a run,
and, with a baseline run, the paper's comparison against feature collaging in the plain GAN."""
import math
from typing import Callable, Optional, Sequence, Tuple

import torch

from .._progress import progress_bar
from ..data import PARTS, SynthFaces, build_dataset
from ..edit import deterministic, generate
from ..runs import Run, partition_of
from .dissection import Dissection, group_activations, summarize, upsample
from .locality import swap_locality
from .realism import FeatureStats, frechet_distance, kernel_inception_distance


def _batches(run: Run, z: torch.Tensor, batch_size: int, progress: Optional[str] = None):
    """(images, target-layer features) of G over z, batch by batch, with a progress bar."""
    with progress_bar(len(z), progress or "", progress is not None, unit="img", leave=False) as bar, \
            deterministic(run.G), torch.no_grad():
        for zb in z.split(batch_size):
            yield generate(run.G, run.layer, zb)
            bar.update(len(zb))


def real_images(run: Run, n: int, batch_size: int, seed: int = 777):
    """Batches of n real images from the run's data (SynthFaces with a seed the training never uses)."""
    name, size = run.data, run.meta.get("size")
    data = build_dataset(name, size, n=n, seed=seed) if run.on_synth_faces \
        else build_dataset(name, size)
    idx = torch.arange(n) % len(data)
    for b in idx.split(batch_size):
        if isinstance(data, SynthFaces):
            yield data.render(b, device=run.device)[0]
        else:
            yield torch.stack([data[int(i)] for i in b]).to(run.device)


def choose_collage_channels(q: torch.Tensor, filter_iou: torch.Tensor, group_iou: torch.Tensor, part: int,
                            n: int) -> torch.Tensor:
    """Feature collaging in a plain GAN: n channels for `part`, from the post-hoc GMM group that best matches
    it (its filters ranked by their own IoU with the part), topped up with the best other filters if the
    group has fewer than n."""
    group = int(group_iou[:, part].argmax())
    score = filter_iou[:, part] + (q.cpu() == group).float() * 10.0  # the group's filters first
    return torch.argsort(score, descending=True)[:n]


@torch.no_grad()
def evaluate_run(run: Run, segmenter: Optional[Callable] = None, extractor: Optional[Callable] = None,
                 n_images: int = 1000, n_pairs: int = 64, batch_size: int = 64, seed: int = 0,
                 collage_targets: Optional[Sequence[Tuple[int, int]]] = None, part_names: Sequence[str] = PARTS,
                 progress: bool = True) -> dict:
    """Metrics of one run. `segmenter(images) -> labels` enables IoU and part-mask locality (else the locality
    region is the group's thresholded activation); `extractor(images) -> features` enables FID/KID against
    the run's data. `collage_targets`: [(part, n_channels)] to score feature-collage swaps of n channels
    (used on a baseline run, with targets from the interpretable run's groups)."""
    q = partition_of(run, seed=seed)
    C, M = run.n_groups, len(q)
    out = {"run": run.path, "step": run.step, "interpretable": run.interpretable, "n_groups": C, "n_filters": M,
           "group_sizes": torch.bincount(q.cpu(), minlength=C).tolist(), "n_images": n_images}
    z = run.latents(n_images, seed=seed + 1)
    P = len(part_names)
    groups, filters = Dissection(C, P, seed=seed), Dissection(M, P, seed=seed)
    size = None
    # pass 1: activation quantiles (candidate thresholds)
    for x, f in _batches(run, z, batch_size, "quantiles" if progress else None):
        size = x.shape[-1]
        groups.add_quantiles(group_activations(f.float(), q, C), size)
        filters.add_quantiles(f.float(), size)
    # pass 2: contingency counts against the segmenter's labels, and the generated side of FID
    fake_stats = FeatureStats() if extractor is not None else None
    for x, f in _batches(run, z, batch_size, "dissection" if progress else None):
        if segmenter is not None:
            labels = segmenter(x)
            groups.add_counts(group_activations(f.float(), q, C), labels)
            filters.add_counts(f.float(), labels)
        if fake_stats is not None:
            fake_stats.add(extractor(x))
    if segmenter is not None:
        g_res, f_res = groups.result(), filters.result()
        out["dissection"] = summarize(g_res, f_res, q, part_names)
        out["dissection"]["filters"] = [{"filter": j, "group": int(q[j]), "best_part": part_names[int(p)],
                                         "iou": float(i)} for j, (p, i) in enumerate(zip(f_res["best_part"],
                                                                                          f_res["best_iou"]))]
    # locality of swapping each group between random pairs
    za, zb = run.latents(n_pairs, seed=seed + 2), run.latents(n_pairs, seed=seed + 3)
    locality = []
    act_thr = groups.rq.quantiles([0.9])[:, 0] if segmenter is None else None
    for c in range(C):
        chans = torch.nonzero(q == c).flatten()
        if chans.numel() == 0:
            continue
        if segmenter is not None:
            part = int(g_res["best_part"][c])
            region_fn = lambda x, f, p=part: segmenter(x) == p  # noqa: E731
            entry = {"group": c, "size": int(chans.numel()), "part": part_names[part], "iou": float(g_res["best_iou"][c])}
        else:
            region_fn = _activation_region(q, C, c, float(act_thr[c]))
            entry = {"group": c, "size": int(chans.numel()), "part": None}
        entry.update(swap_locality(run.G, run.layer, chans, za, zb, region_fn, batch_size))
        locality.append(entry)
    out["locality"] = locality
    out["mean_locality"] = _mean([e["ratio"] for e in locality])
    if collage_targets and segmenter is not None:
        collage = []
        for part, n in collage_targets:
            chans = choose_collage_channels(q, f_res["iou"], g_res["iou"], part, n)
            entry = {"part": part_names[part], "size": n}
            entry.update(swap_locality(run.G, run.layer, chans.to(run.device), za, zb,
                                       lambda x, f, p=part: segmenter(x) == p, batch_size))
            collage.append(entry)
        out["collage_locality"] = collage
    if fake_stats is not None:
        real_stats = FeatureStats()
        for x in real_images(run, n_images, batch_size):
            real_stats.add(extractor(x))
        out["realism"] = {"fid": frechet_distance(fake_stats, real_stats),
                          "kid": kernel_inception_distance(fake_stats, real_stats),
                          "extractor": getattr(extractor, "label", type(extractor).__name__), "n_images": n_images}
    return out


def _activation_region(q, C, c, threshold):
    """Without part masks: where group c's upsampled mean activation exceeds `threshold` (its top-10% level)."""
    def region(x, f):
        return upsample(group_activations(f.float(), q, C)[:, c:c + 1], x.shape[-1])[:, 0] > threshold
    return region


def compare_with_baseline(metrics: dict, baseline: Run, segmenter: Callable, match_iou: float = 0.1,
                          **kwargs) -> dict:
    """The paper's comparison: each interpretable group that matches a part (IoU >= match_iou) is swapped, and
    in the baseline the same number of channels for that part is swapped (feature collaging, with channels
    grouped by a post-hoc GMM). Adds the per-part pairs to the baseline's metrics, which it returns."""
    matched = [e for e in metrics.get("locality", []) if e.get("part") and e.get("iou", 0) >= match_iou]
    targets = [(PARTS.index(e["part"]), e["size"]) for e in matched]
    base = evaluate_run(baseline, segmenter=segmenter, collage_targets=targets, **kwargs)
    for entry, e in zip(base.get("collage_locality", []), matched):
        entry.update(interp_group=e["group"], interp_ratio=e["ratio"])
    metrics["mean_matched_locality"] = _mean([e["ratio"] for e in matched])
    base["mean_collage_locality"] = _mean([e["ratio"] for e in base.get("collage_locality", [])])
    return base


def _mean(values):
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else float("nan")
