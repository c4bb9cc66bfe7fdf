"""`interpgan swap | visualize | eval | report` on tiny runs trained in the test, and the report in Chromium."""
import argparse
import json
import os
import re
import shutil
import subprocess
import warnings

import pytest
import torch
from PIL import Image

from interpgan_ext.cli import build_parser, main as cli_main
from interpgan_ext.data import PARTS
from interpgan_ext.runs import load_run

def test_every_option_of_every_verb_says_what_it_does_and_train_shows_the_config_defaults(capsys):
    from interpgan_ext.cli import _TRAIN_FLAGS
    from interpgan_ext.trainer import TrainConfig

    parser, _ = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"train", "swap", "eval", "dissect", "text-edit"} <= set(verbs)
    silent = [f"{verb} {a.dest}" for verb, p in verbs.items() for a in p._actions if not a.help]
    assert not silent, f"options without help: {silent}"
    for a in verbs["train"]._actions:
        if a.dest in _TRAIN_FLAGS:  # None, so --resume keeps the run's config; the help names TrainConfig's value
            assert a.default is None and f"(default: {getattr(TrainConfig, a.dest)})" in a.help
    for argv, shown, hidden in ((["train", "--help"], ["--n-groups N_GROUPS C, the filter groups", "(default: 8)",
                                                       "(default: 1500)", "(default: runs/synth-faces)"],
                                 ["--layer LAYER target layer (module path); by default the architecture's own ("]),
                                (["swap", "RUN", "--help"], ["--seed SEED random seed", "(default: 0)"], [])):
        with pytest.raises(SystemExit):
            cli_main(argv)
        text = " ".join(capsys.readouterr().out.split())  # unwrapped
        assert all(s in text for s in shown) and not any(s in text for s in hidden), text
        assert "(default: None)" not in text and "(default: False)" not in text


TINY = ["--size", "16", "--width", "8", "--steps", "10", "--batch-size", "8", "--n-groups", "3", "--gmm-every", "5",
        "--n-images", "64", "--no-progress", "--device", "cpu"]
EVAL = ["--images", "32", "--pairs", "4", "--batch-size", "16", "--seg-steps", "30", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    interp, base = str(root / "interp"), str(root / "base")
    cli_main(["train", *TINY, "--out", interp])
    cli_main(["train", *TINY, "--out", base, "--baseline"])
    return interp, base


def test_load_run(runs):
    interp, base = runs
    r, b = load_run(interp, device="cpu"), load_run(base, device="cpu")
    assert r.interpretable and r.q.shape == (r.meta["n_filters"],) and r.step == 10
    assert not b.interpretable and b.energy is None
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        load_run(os.path.dirname(interp))


def test_a_damaged_run_is_named_file_by_file(runs, tmp_path, capsys):
    # checkpoints and configs are written atomically, so damage comes later (a copy cut short, a hand edit): each
    # reader says which file is bad, not the zip or JSON reader's error
    damaged = tmp_path / "damaged"
    shutil.copytree(runs[0], damaged)
    ckpt = damaged / "checkpoint.pt"
    whole = ckpt.read_bytes()
    for content in (whole[: len(whole) // 2], b"not a checkpoint\n"):
        ckpt.write_bytes(content)
        with pytest.raises(ValueError, match=f"{ckpt} cannot be read as a checkpoint .*restore it from a copy"):
            load_run(str(damaged), device="cpu")
        with pytest.raises(SystemExit, match=f"interpgan train: {ckpt} cannot be read as a checkpoint"):
            cli_main(["train", "--out", str(damaged), "--resume", "--no-progress"])
    ckpt.write_bytes(whole)
    (damaged / "config.json").write_text('{"config": ')
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        load_run(str(damaged), device="cpu")
    with pytest.raises(SystemExit, match="interpgan: .*config.json is not valid JSON"):
        cli_main(["swap", str(damaged), "--group", "0", "--device", "cpu"])


def test_swap_writes_a_grid(runs, tmp_path):
    out = str(tmp_path / "swap.png")
    cli_main(["swap", runs[0], "--group", "0", "1", "--pairs", "3", "--refine", "2", "--out", out, "--device", "cpu"])
    w, h = Image.open(out).size
    assert w > 4 * 16 and h > 3 * 16  # four columns, three pairs
    with pytest.raises(SystemExit, match="no energy model"):
        cli_main(["swap", runs[1], "--group", "0", "--refine", "2", "--out", out, "--device", "cpu"])


def test_visualize_eval_report(runs, capsys):
    interp, base = runs
    cli_main(["visualize", interp, "--device", "cpu"])
    assert "the per-part charts are left out" in capsys.readouterr().out  # until eval has run
    assert {"filters.png", "group_map.png", "group_sizes.png"} <= set(os.listdir(os.path.join(interp, "figures")))
    # a 30-step segmenter is far below the 0.9 mIoU bar: eval refuses unless told otherwise, and at this small
    # size it says that training longer will not get there
    with pytest.raises(SystemExit, match="below --min-seg-miou.*levels off below 0.9.*a run at 64 px"):
        cli_main(["eval", interp, *EVAL])
    cli_main(["eval", interp, "--baseline", base, *EVAL, "--min-seg-miou", "0"])
    with open(os.path.join(interp, "metrics.json")) as fh:
        m = json.load(fh)
    assert m["segmenter"]["miou"] < 0.9 and len(m["locality"]) >= 1
    assert {"mean_group_iou", "parts_matched", "group_purity", "groups", "filters"} <= set(m["dissection"])
    assert m["realism"]["extractor"].startswith("segmenter-encoder") and m["realism"]["fid"] >= 0
    assert "collage_locality" in m["baseline"] and not m["baseline"]["interpretable"]
    for e in m["baseline"]["collage_locality"]:  # the collage swaps as many channels as its interpretable group
        assert e["size"] == next(g["size"] for g in m["locality"] if g["group"] == e["interp_group"])
    assert len(m["segmenter"]["fingerprint"]) == 16
    capsys.readouterr()
    cli_main(["table", interp, interp, "--markdown"])
    table = capsys.readouterr()
    assert f"| segmenter mIoU | {m['segmenter']['miou']:.4g} | {m['segmenter']['miou']:.4g} |" in table.out
    assert "warning" not in table.err  # the same segmenter measured both columns
    with pytest.raises(SystemExit, match="run `interpgan eval .*base` first"):
        cli_main(["table", interp, base])
    cli_main(["visualize", interp, "--device", "cpu"])  # with metrics.json: the per-part charts too
    assert "filter_parts.png" in os.listdir(os.path.join(interp, "figures"))
    cli_main(["compare", interp, base, "--images", "16", "--samples", "64", "--seg-steps", "30", "--clf-steps", "10",
              "--device", "cpu"])
    with open(os.path.join(interp, "compare.json")) as fh:
        c = json.load(fh)
    for side in ("interpretable", "baseline"):
        assert set(c[side]["units_per_part"]) == set(PARTS) and len(c[side]["sefa_top_share"]) == 5
        assert all(0 <= v <= 1 for v in c[side]["boundary_accuracy"].values())
    cli_main(["report", interp, "--baseline", base, "--device", "cpu"])
    page = open(os.path.join(interp, "report", "report.html")).read()
    assert "<svg" in page and "data:image/png;base64," in page and "mean group-part IoU" in page
    assert ">smallest group</text>" in page  # the partition's curve, from the logged group sizes
    assert "interpgan compare" in page
    assert "Where a training step's time goes" in page and os.path.exists(os.path.join(interp, "report", "time_split.png"))


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """A run on a folder of images: no part labels, no attributes."""
    root = tmp_path_factory.mktemp("folder")
    folder = root / "images"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(12):
        Image.fromarray((torch.rand(20, 24, 3, generator=g) * 255).byte().numpy()).save(folder / f"{i}.png")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INTERPGAN_CACHE", "off")
        cli_main(["train", *TINY, "--data", str(folder), "--out", str(root / "run")])
    return str(root / "run")


def test_eval_of_a_run_on_a_folder_says_what_it_cannot_measure_and_takes_inception_weights_from_the_env(
        folder_run, tmp_path, capsys, monkeypatch):
    # a folder of images has no part labels and no segmenter: IoU is n/a, and FID/KID need local Inception weights
    run = folder_run
    monkeypatch.setenv("INTERPGAN_CACHE", "off")
    monkeypatch.delenv("INTERPGAN_INCEPTION_WEIGHTS", raising=False)
    capsys.readouterr()
    cli_main(["visualize", run, "--device", "cpu"])  # no parts: no note that the per-part charts wait for eval
    assert "per-part" not in capsys.readouterr().out
    cli_main(["eval", run, *EVAL])
    out = capsys.readouterr().out
    assert "no part labels" in out and "FID/KID skipped" in out and "INTERPGAN_INCEPTION_WEIGHTS" in out
    row = {line.rsplit(None, 1)[0].strip(): line.split()[-1] for line in out.splitlines() if "  " in line}
    assert row["mean group-part IoU"] == row["FID"] == "n/a" and float(row["locality, every GMM group (lower is better)"]) > 0
    with open(os.path.join(run, "metrics.json")) as fh:
        assert "realism" not in json.load(fh)

    tv = pytest.importorskip("torchvision")  # the weights file the environment names is used, as --inception's
    weights = tmp_path / "inception.pt"
    torch.save(tv.models.inception_v3(weights=None, aux_logits=False, init_weights=False).state_dict(), weights)
    monkeypatch.setenv("INTERPGAN_INCEPTION_WEIGHTS", str(weights))
    cli_main(["eval", run, *EVAL, "--images", "4"])
    assert "FID/KID skipped" not in capsys.readouterr().out
    with open(os.path.join(run, "metrics.json")) as fh:
        realism = json.load(fh)["realism"]
    assert realism["extractor"] == "inception-v3" and realism["fid"] >= 0


def test_analysis_verbs_show_progress_and_warn_when_their_labels_come_from_synthfaces(folder_run, runs, tmp_path,
                                                                                        capsys):
    # the segmenter is trained afresh here (a few steps, in copies of the runs): its progress bar shows, and a run
    # on other data than SynthFaces gets a warning that the part labels are SynthFaces'
    folder, synth = str(tmp_path / "folder"), str(tmp_path / "synth")
    shutil.copytree(folder_run, folder)
    shutil.copytree(runs[0], synth)
    args = ["--samples", "4", "--k", "1", "--seg-steps", "3", "--device", "cpu"]
    cli_main(["latent-shift", folder, *args])
    err = capsys.readouterr().err
    assert "interpgan latent-shift: warning: this run was trained on" in err and "no part labels" in err
    assert "train" in err and "3/3" in err  # the segmenter's bar
    cli_main(["latent-shift", synth, *args, "--no-progress"])
    assert capsys.readouterr().err == ""  # a SynthFaces run: no warning; --no-progress: no bar
    cli_main(["learn-directions", synth, "--k", "2", "--steps", "3", "--device", "cpu"])
    assert "directions" in capsys.readouterr().err


def test_a_baseline_must_share_the_runs_setup_and_an_interpretable_one_is_named(folder_run, runs, tmp_path):
    interp, base = runs
    for argv in (["eval", interp, "--baseline", folder_run, *EVAL], ["report", interp, "--baseline", folder_run],
                 ["compare", interp, folder_run, "--device", "cpu"]):
        with pytest.raises(SystemExit, match=rf"interpgan {argv[0]}: {re.escape(folder_run)} cannot be interp's "
                                             r"baseline: it differs in data .* \(the run's: synth-faces\)"):
            cli_main(argv)
    with pytest.warns(UserWarning, match="is an interpretable run .*, not a plain-GAN baseline"):
        cli_main(["report", interp, "--baseline", interp, "--out", str(tmp_path / "report")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a real baseline: no warning
        cli_main(["report", interp, "--baseline", base, "--out", str(tmp_path / "report")])


def test_every_verb_that_takes_a_run_takes_no_progress():
    parser, _ = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for verb, p in verbs.items():
        dests = {a.dest for a in p._actions}
        if "run" in dests and verb not in ("swap", "visualize", "report", "table"):  # those four take seconds
            assert "no_progress" in dests, verb


def test_curves_read_the_log_and_the_smallest_group_comes_from_the_sizes():
    from interpgan_ext.report import curve

    rows = [{"step": 5, "loss_D": 1.5, "group_sizes": [4, 1, 3]}, {"step": 10, "loss_D": 1.25},
            {"step": 15, "group_sizes": [3, 3, 2]}]
    assert curve(rows, "loss_D") == [(5, 1.5), (10, 1.25)]
    assert curve(rows, "smallest group") == [(5, 1.0), (15, 2.0)]


def test_time_split_averages_the_logged_parts():
    from interpgan_ext.report import time_split

    rows = [{"step": 5, "time": {"D": 0.010, "GMM": 0.004, "Langevin": 0.020, "W": 0.002, "G": 0.030}},
            {"step": 10, "time": {"D": 0.030, "G": 0.050}}, {"step": 15}]  # parts missing: 0; no timings: skipped
    assert time_split(rows) == pytest.approx({"D": 20.0, "GMM": 2.0, "Langevin": 10.0, "W": 1.0, "G": 40.0})
    assert time_split([{"step": 5}]) is None


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.chromium
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(runs, tmp_path):
    interp, base = runs
    cli_main(["report", interp, "--baseline", base, "--device", "cpu", "--out", str(tmp_path / "r")])
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600", f"--screenshot={shot}",
           f"file://{tmp_path / 'r' / 'report.html'}"]
    subprocess.run(cmd, check=True, timeout=120, capture_output=True)
    img = Image.open(shot).convert("L")
    assert img.size == (1200, 1600)
    lo, hi = img.getextrema()
    assert hi - lo > 100  # something was drawn: text, tables and images, not a blank page
    # the embedded pictures decode: many distinct grey levels, unlike a text-only page
    assert sum(1 for n in img.histogram() if n) > 64


def test_eval_without_part_labels_uses_thresholded_activations(runs):
    """On data without part masks (no segmenter), locality's region is the group's thresholded activation."""
    from interpgan_ext.metrics import evaluate_run

    run = load_run(runs[0], device="cpu")
    m = evaluate_run(run, segmenter=None, extractor=None, n_images=16, n_pairs=4, batch_size=8, progress=False)
    assert "dissection" not in m and "realism" not in m
    assert len(m["locality"]) == sum(1 for s in m["group_sizes"] if s > 0)
    assert all(e["part"] is None and e["n"] > 0 and e["ratio"] >= 0 for e in m["locality"])


@pytest.mark.parametrize("verb,extra", [
    ("sefa", ["--k", "2"]),
    ("ganspace", ["--k", "2", "--samples", "64"]),
    ("latent-shift", ["--k", "2", "--samples", "8", "--seg-steps", "30"]),
    ("invert", ["--n", "3", "--steps", "5", "--encoder-steps", "5", "--no-progress", "--swap-group", "0",
                "--direction", "sefa:0:2", "ganspace:1:2", "learned:0:3", "boundary:glasses:2", "--clf-steps", "10"]),
    ("invert", ["--images", "lfw", "--n", "2", "--steps", "3", "--encoder-steps", "3", "--no-progress"]),
    ("learn-directions", ["--k", "2", "--steps", "5"]),
    ("steer", ["--edit", "zoom", "--steps", "5"]),
    ("ace", ["--samples", "4", "--top", "2", "--seg-steps", "30"]),
    ("boundaries", ["--attributes", "skin_tone", "glasses", "--condition", "hair_color", "--samples", "200",
                    "--share", "0.1", "--clf-steps", "10"]),
])
def test_analysis_verbs_write_pngs(runs, tmp_path, verb, extra):
    out = str(tmp_path / f"{verb}.png")
    cli_main([verb, runs[0], *extra, "--out", out, "--device", "cpu"])
    assert Image.open(out).size[0] > 32


def test_text_edit_verb_with_a_local_torchscript_model(runs, tmp_path):
    from test_analysis import TinyImageText

    model = str(tmp_path / "tiny.pt")
    torch.jit.script(TinyImageText()).save(model)
    out = str(tmp_path / "text.png")
    cli_main(["text-edit", runs[0], "--model", model, "--text", "red hair", "--steps", "5", "--out", out,
              "--device", "cpu"])
    assert Image.open(out).size[0] > 32
    with pytest.raises(SystemExit, match="cannot load"):
        cli_main(["text-edit", runs[0], "--model", str(tmp_path / "missing.pt"), "--text", "x", "--device", "cpu"])


def test_dissect_writes_a_summary(runs, tmp_path):
    out = str(tmp_path / "dissect.html")
    cli_main(["dissect", runs[0], "--images", "16", "--top", "2", "--min-iou", "0", "--seg-steps", "30", "--out", out,
              "--device", "cpu"])
    with open(out[:-5] + ".json") as fh:
        res = json.load(fh)
    assert res["units_per_part"] and all(len(u) >= 1 for u in res["units_per_part"].values())
    assert len(res["artifact_units"]) == 2  # the DCGAN run has its discriminator
    page = open(out).read()
    assert "units</h2>" in page and "data:image/png;base64," in page and "Artifact units" in page


def test_invert_rejects_a_malformed_direction(runs):
    with pytest.raises(SystemExit, match="METHOD:WHICH:ALPHA"):
        cli_main(["invert", runs[0], "--n", "2", "--steps", "1", "--encoder-steps", "1", "--no-progress",
                  "--direction", "sefa:0", "--device", "cpu"])


@pytest.mark.parametrize("argv, says", [
    (["ganspace", "--layer", "blocks.9"], "interpgan ganspace: no layer named 'blocks.9' in DCGANGenerator; layers: "),
    (["sefa", "--layers", "blocks.9"], "interpgan sefa: no layer named 'blocks.9'"),
    (["invert", "--images", "/no/such/folder"], "interpgan invert: ImageFolder: no such folder: /no/such/folder"),
    (["swap", "--group", "99"], "interpgan swap: group_channels: groups [99] hold no filters"),
    (["swap", "--group", "0", "--device", "gpu"], "interpgan: unknown device 'gpu'"),
])
def test_a_bad_argument_to_a_verb_is_one_line_that_says_what_is_wrong(runs, argv, says):
    with pytest.raises(SystemExit) as info:
        cli_main([argv[0], runs[0], *argv[1:], *([] if "--device" in argv else ["--device", "cpu"])])
    assert isinstance(info.value.code, str) and info.value.code.startswith(says), info.value.code


def _metrics(iou, sizes, miou, fingerprint):
    return {"step": 1500, "group_sizes": sizes, "dissection": {"mean_group_iou": iou, "parts_matched": 3},
            "mean_locality": 1.25, "realism": {"fid": 1.5, "kid": 0.02},
            "segmenter": {"miou": miou, "fingerprint": fingerprint}}


def test_runs_table_puts_runs_side_by_side_and_warns_on_different_segmenters():
    from interpgan_ext.report import runs_table

    a, b = _metrics(0.29, [2, 46, 80], 0.838, "aa"), _metrics(0.26, [28, 40, 60], 0.838, "aa")
    table, warnings = runs_table([("seed0", a), ("seed1", b)])
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "seed0", "seed1"] and not warnings
    row = {line.rsplit(None, 2)[0].strip(): line.split()[-2:] for line in lines[1:]}
    assert row["mean group-part IoU"] == ["0.29", "0.26"]
    assert row["smallest group (filters)"] == ["2", "28"]
    assert row["group purity"] == ["n/a", "n/a"]  # not in these metrics: shown as missing, not as 0
    md, _ = runs_table([("seed0", a), ("seed1", b)], markdown=True)
    assert md.splitlines()[1] == "| --- | --- | --- |" and "| group sizes | 2,46,80 | 28,40,60 |" in md
    _, warnings = runs_table([("seed0", a), ("other", _metrics(0.2, [1, 2], 0.841, "bb"))])
    assert len(warnings) == 1 and "different part segmenters" in warnings[0]
    _, warnings = runs_table([("seed0", a), ("twin", _metrics(0.2, [1, 2], 0.838, "bb"))])
    assert warnings  # the same mIoU, other weights
    older = _metrics(0.2, [1, 2], 0.838, None)
    del older["segmenter"]["fingerprint"]
    assert not runs_table([("seed0", a), ("older", older)])[1]  # no fingerprint: the same mIoU counts as the same


def test_state_fingerprint_follows_the_weights():
    from interpgan_ext.metrics._cache import state_fingerprint

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    same = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    same.load_state_dict(net.state_dict())
    assert state_fingerprint(net) == state_fingerprint(same)
    with torch.no_grad():
        same[0].weight[0, 0, 0, 0] += 1e-6
    assert state_fingerprint(net) != state_fingerprint(same)
    assert len(state_fingerprint(net.to(torch.bfloat16))) == 16  # bf16 has no numpy dtype
