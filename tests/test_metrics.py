"""Metrics on constructions whose answers are known: IQR, streamed quantiles, dissection IoU, locality,
FID/KID, the Inception loading path, and the segmenter."""
import os

import numpy as np
import pytest
import torch

from interpgan_ext.data import PARTS, SynthFaces
from interpgan_ext.metrics import (Dissection, FeatureStats, InceptionExtractor, RunningQuantile, evaluate_segmenter,
                                   frechet_distance, information_quality_ratio, kernel_inception_distance,
                                   load_or_train_segmenter, locality_ratio, summarize)
from interpgan_ext.metrics.segmenter import PartSegmenter, segmentation_loss, segmentation_scores


def test_information_quality_ratio_known_tables():
    assert information_quality_ratio(50, 0, 0, 50).item() == pytest.approx(1.0)  # identical masks
    assert information_quality_ratio(25, 25, 25, 25).item() == pytest.approx(0.0, abs=1e-12)  # independent
    partial = information_quality_ratio(40, 10, 10, 40).item()
    assert 0 < partial < 1


def test_running_quantile_matches_full_data():
    gen = torch.Generator().manual_seed(0)
    data = torch.cat([torch.randn(3, 20000, generator=gen) * torch.tensor([[1.0], [2.0], [0.5]]),
                      torch.rand(1, 20000, generator=gen)])
    rq = RunningQuantile(4, resolution=4096)
    for chunk in data.split(1000, dim=1):  # streamed: never more than 4096 values per unit kept
        rq.add(chunk)
    assert rq.reservoir.rows.shape == (4096, 4)
    levels = [0.1, 0.5, 0.9, 0.99]
    got = rq.quantiles(levels)  # [4, L]
    # judged by rank: the share of all the data below each estimate is the level asked for (to sampling error)
    share_below = (data[:, :, None] < got[:, None, :]).float().mean(1)
    assert torch.allclose(share_below, torch.tensor(levels).expand(4, -1), atol=0.025), share_below


def _synthetic_dissection_data(gen, n=24, size=16):
    """Label maps from SynthFaces, and three units: a noisy copy of the left-eye mask at half resolution, a copy
    of the hair mask, and pure noise."""
    _, labels = SynthFaces(size, n=n, seed=3).render(torch.arange(n))
    eye = (labels == PARTS.index("left_eye")).float()
    hair = (labels == PARTS.index("hair")).float()
    acts = torch.stack([eye + 0.05 * torch.randn(eye.shape, generator=gen), hair,
                        torch.rand(eye.shape, generator=gen)], 1)
    return acts, labels


def test_dissection_finds_the_planted_units():
    gen = torch.Generator().manual_seed(0)
    d = Dissection(3, len(PARTS))
    batches = [_synthetic_dissection_data(gen) for _ in range(3)]
    for acts, labels in batches:
        d.add_quantiles(acts, labels.shape[-1])
    for acts, labels in batches:
        d.add_counts(acts, labels)
    res = d.result()
    assert [PARTS[p] for p in res["best_part"][:2]] == ["left_eye", "hair"]
    assert res["best_iou"][0] > 0.8 and res["best_iou"][1] > 0.95
    assert res["best_iou"][2] < 0.35  # noise matches nothing well
    # the chosen threshold separates the eye unit's part pixels (~1 + noise) from the rest (~0 + noise): it keeps
    # most of the eye and almost nothing else
    t = res["threshold"][0, PARTS.index("left_eye")]
    eye_unit = torch.cat([acts[:, 0].flatten() for acts, _ in batches])
    on_eye = torch.cat([(labels == PARTS.index("left_eye")).flatten() for _, labels in batches])
    assert (eye_unit[on_eye] > t).float().mean() > 0.8 and (eye_unit[~on_eye] > t).float().mean() < 0.01
    q = torch.tensor([0, 1, 1])
    s = summarize(res, res, q, PARTS)  # units as groups and as filters, for the arithmetic
    assert s["parts_matched"] == 2 and s["matched_parts"] == ["hair", "left_eye"]
    assert s["group_purity"] == pytest.approx(2 / 3)


def test_locality_ratio_known_answers():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, generator=gen)
    region = torch.zeros(2, 8, 8, dtype=torch.bool)
    region[:, 2:5, 2:5] = True
    inside_only = x + 0.3 * region[:, None]
    assert torch.all(locality_ratio(x, inside_only, region) == 0)
    everywhere = x + 0.3
    assert torch.allclose(locality_ratio(x, everywhere, region), torch.ones(2))
    outside_twice = x + 0.2 * region[:, None] + 0.4 * ~region[:, None]
    assert torch.allclose(locality_ratio(x, outside_twice, region), torch.full((2,), 4.0))
    empty = torch.zeros_like(region)
    assert torch.isnan(locality_ratio(x, everywhere, empty)).all()


def _stats(x):
    s = FeatureStats(kid_max=500)
    for chunk in x.split(100):
        s.add(chunk)
    return s


def test_fid_and_kid():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(1000, 16, generator=gen)
    b = torch.randn(1000, 16, generator=gen)
    assert frechet_distance(_stats(a), _stats(a)) == pytest.approx(0.0, abs=1e-8)
    same, shifted, far = (frechet_distance(_stats(a), _stats(x)) for x in (b, b + 0.5, b + 1.0))
    assert same < 0.2 < shifted < far
    assert shifted == pytest.approx(16 * 0.25, rel=0.15)  # mean shift 0.5 in 16 dims: ||mu||^2 = 4
    # against scipy's matrix square root on the same statistics
    from scipy import linalg

    mu1, s1 = (t.numpy() for t in _stats(a).mean_cov())
    mu2, s2 = (t.numpy() for t in _stats(b * 1.5).mean_cov())
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(_stats(a), _stats(b * 1.5)) == pytest.approx(ref, rel=1e-6)
    kid_same = kernel_inception_distance(_stats(a), _stats(b), n_subsets=20, subset_size=400)
    kid_far = kernel_inception_distance(_stats(a), _stats(b + 1.0), n_subsets=20, subset_size=400)
    assert abs(kid_same) < 0.05 < kid_far
    with pytest.raises(ValueError, match="NaN"):
        FeatureStats().add(torch.tensor([[float("nan"), 1.0]]))


def test_inception_extractor_loads_a_local_weights_file(tmp_path):
    tv = pytest.importorskip("torchvision")
    model = tv.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
    state = model.state_dict()
    state["fc.weight"], state["fc.bias"] = torch.zeros(1008, 2048), torch.zeros(1008)  # pytorch-fid's 1008 classes
    path = tmp_path / "inception.pt"
    torch.save(state, path)
    ext = InceptionExtractor(str(path))
    feats = ext(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match="not an Inception-v3"):
        InceptionExtractor(str(tmp_path / "wrong.pt"))
    with pytest.raises(FileNotFoundError):
        InceptionExtractor(str(tmp_path / "missing.pt"))


def test_segmentation_scores_known_arrays():
    labels = torch.tensor([[0, 0, 1, 1]])
    assert segmentation_scores(labels, labels, n_parts=2)["miou"] == 1.0
    s = segmentation_scores(torch.tensor([[0, 1, 1, 1]]), labels, n_parts=2)
    assert s["pixel_accuracy"] == 0.75 and s["iou"]["0"] == 0.5 and s["iou"]["1"] == pytest.approx(2 / 3)


def test_segmentation_loss_counts_every_part_equally():
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[0, 3, 3] = 1  # a one-pixel part among 63 background pixels
    perfect = 20.0 * torch.nn.functional.one_hot(labels, 2).permute(0, 3, 1, 2).float()
    assert segmentation_loss(perfect, labels).item() < 1e-3
    missed = perfect.clone()
    missed[0, :, 3, 3] = torch.tensor([20.0, 0.0])  # the small part called background
    ce_only = segmentation_loss(missed, labels, dice_weight=0).item()
    assert ce_only == pytest.approx(20 / 64, rel=1e-4)  # cross-entropy: one wrong pixel in 64
    # Dice, averaged over the 2 parts present: the missed part scores 1 - 1/2 (smoothed), background ~0.
    assert segmentation_loss(missed, labels).item() - ce_only == pytest.approx(0.25, abs=0.01)


def test_segmenter_rejects_sizes_its_levels_cannot_halve():
    with pytest.raises(ValueError, match="multiples of 8"):
        PartSegmenter()(torch.zeros(1, 3, 20, 20))


@pytest.mark.slow
def test_segmenter_learns_synthfaces_and_is_cached(tmp_path, monkeypatch):
    untrained = evaluate_segmenter(PartSegmenter().eval(), 16, n=128)
    model, scores = load_or_train_segmenter(str(tmp_path), 16, steps=150, progress=False)
    assert scores["pixel_accuracy"] > 0.85 and scores["miou"] > 0.25 > untrained["miou"]
    path = tmp_path / "segmenter_16px.pt"
    mtime = os.path.getmtime(path)
    again, cached = load_or_train_segmenter(str(tmp_path), 16, steps=150, progress=False)
    assert os.path.getmtime(path) == mtime and cached["miou"] == scores["miou"]  # loaded, not retrained
    x, _ = SynthFaces(16, n=4, seed=9).render(torch.arange(4))
    assert torch.equal(again.segment(x), model.segment(x))
    # A cache of another layout is retrained, not loaded into the wrong shapes.
    other, _ = load_or_train_segmenter(str(tmp_path), 16, steps=150, progress=False, widths=(8, 16))
    assert other.widths == (8, 16) and torch.load(path, weights_only=False)["widths"] == [8, 16]
    # So is a cache trained on images from another version of the renderer.
    mtime = os.path.getmtime(path)
    monkeypatch.setattr(SynthFaces, "renderer_version", SynthFaces.renderer_version + 1)
    load_or_train_segmenter(str(tmp_path), 16, steps=150, progress=False, widths=(8, 16))
    assert os.path.getmtime(path) > mtime
    assert torch.load(path, weights_only=False)["synthfaces_renderer"] == SynthFaces.renderer_version


