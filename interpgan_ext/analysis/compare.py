"""`interpgan compare RUN_INTERP RUN_BASELINE`: how interpretable each GAN is, by the field's usual methods, side by
side: dissection (units matched per part, mean IoU), the SeFa and GANSpace spectra of the top directions,
and the held-out quality of InterFaceGAN boundaries."""
import torch

from ..data import ATTRIBUTES, PARTS
from ..metrics import evaluate_run
from .directions import boundary_quality, default_sefa_layers, ganspace, linear_weights, sefa


@torch.no_grad()
def _scores(run, classifier, z, batch_size=256):
    return torch.cat([classifier.scores(run.G(zb)) for zb in z.split(batch_size)]).cpu()


def analyse_run(run, segmenter, classifier, n_images: int = 500, n_samples: int = 2000, k: int = 5, seed: int = 0,
                progress: bool = False) -> dict:
    m = evaluate_run(run, segmenter=segmenter, n_images=n_images, n_pairs=16, seed=seed, progress=progress)
    filters = m["dissection"]["filters"]
    per_part = {p: sum(1 for e in filters if e["best_part"] == p and e["iou"] >= 0.1) for p in PARTS}
    names, _ = default_sefa_layers(run.G, run.z_dim)
    _, evals = sefa(linear_weights(run.G, names))
    z = run.latents(n_samples, seed + 1)
    _, ratio = ganspace(z, run.G, run.layer, n_components=k)
    scores = _scores(run, classifier, z)
    return {
        "units_per_part": per_part,
        "parts_with_units": sum(1 for v in per_part.values() if v > 0),
        "mean_filter_iou": m["dissection"]["mean_filter_iou"],
        "mean_group_iou": m["dissection"]["mean_group_iou"],
        "group_parts_matched": m["dissection"]["parts_matched"],
        "sefa_top_share": (evals[:k] / evals.sum()).tolist(),
        "ganspace_explained": ratio.tolist(),
        "boundary_accuracy": {a: boundary_quality(z.cpu(), scores[:, i]) for i, a in enumerate(ATTRIBUTES)},
    }


def compare_runs(interp, baseline, segmenter, classifier, **kw) -> dict:
    return {"interpretable": {"run": interp.path, **analyse_run(interp, segmenter, classifier, **kw)},
            "baseline": {"run": baseline.path, **analyse_run(baseline, segmenter, classifier, **kw)}}


def comparison_rows(c: dict):
    """(metric, interpretable, baseline) rows for the CLI table and the report."""
    a, b = c["interpretable"], c["baseline"]
    rows = [("parts with >= 1 matching filter (IoU >= 0.1)", a["parts_with_units"], b["parts_with_units"]),
            ("mean filter-part IoU", a["mean_filter_iou"], b["mean_filter_iou"]),
            ("mean group-part IoU", a["mean_group_iou"], b["mean_group_iou"]),
            ("distinct parts matched by groups", a["group_parts_matched"], b["group_parts_matched"]),
            ("SeFa: share of the top direction", a["sefa_top_share"][0], b["sefa_top_share"][0]),
            ("GANSpace: variance of the top component", a["ganspace_explained"][0], b["ganspace_explained"][0])]
    rows += [(f"units for {p}", a["units_per_part"][p], b["units_per_part"][p]) for p in PARTS]
    rows += [(f"boundary accuracy, {t}", a["boundary_accuracy"][t], b["boundary_accuracy"][t]) for t in ATTRIBUTES]
    return rows
