"""The training-throughput benchmark (python/bench_train.py): its arithmetic on made-up timings, and a tiny real run
of every variant with profiler traces."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import interpgan_ext as ig
from interpgan_ext.viz import stacked_bar_chart

_PATH = os.path.join(os.path.dirname(__file__), "..", "python", "bench_train.py")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_train", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_run(backend, step_s, parts, refit_s):
    return {"backend": backend, "step_s": step_s, "parts_s": parts, "refit_s": refit_s}


def test_summarise_takes_medians_and_charges_the_refit_per_step(bench):
    parts = {"D": 0.010, "Langevin": 0.020, "W": 0.002, "G": 0.030}
    slow = {k: 2 * v for k, v in parts.items()}
    results = {
        "baseline": [fake_run("cpu-ext", [0.040, 0.050, 0.045], [{"D": 0.01, "G": 0.03}] * 3, [])],
        # two repeats: the median over repeats of each repeat's median; the second repeat's 0.5 s step is an outlier
        "fused": [fake_run("cpu-ext", [0.070, 0.068, 0.072], [parts] * 3, [0.4]),
                  fake_run("cpu-ext", [0.074, 0.5, 0.072], [parts, slow, parts], [0.6])],
    }
    s = bench.summarise(results, gmm_every=100)
    assert s["baseline"]["step_ms"] == pytest.approx(45.0)
    assert s["baseline"]["parts_ms"]["GMM"] == 0.0 and s["baseline"]["gmm_refit_ms"] is None
    assert s["baseline"]["parts_ms"]["data+other"] == pytest.approx(5.0)
    fused = s["fused"]
    assert fused["gmm_refit_ms"] == pytest.approx(500.0)  # median of 400 and 600
    assert fused["parts_ms"]["GMM"] == pytest.approx(5.0)  # one refit per 100 steps
    assert fused["step_ms"] == pytest.approx(72.0 + 5.0)  # median of the medians 70 and 74, plus the refit's share
    assert fused["parts_ms"]["Langevin"] == pytest.approx(20.0)
    assert sum(fused["parts_ms"].values()) == pytest.approx(fused["step_ms"])  # the parts add up to the step
    r = bench.ratios(s)
    assert r["fused_step_over_baseline"] == pytest.approx(77.0 / 45.0)
    assert "reference_step_over_fused" not in r and "fused_drawn_step_over_fused" not in r
    results["fused-drawn"] = [fake_run("cpu-ext", [0.081, 0.083, 0.082], [parts] * 3, [0.5])]
    results["fused-graphed"] = [fake_run("cpu-ext", [0.061, 0.063, 0.062], [parts] * 3, [0.5])]
    r = bench.ratios(bench.summarise(results, gmm_every=100))
    assert r["fused_drawn_step_over_fused"] == pytest.approx((82.0 + 5.0) / 77.0)
    assert r["fused_graphed_step_over_fused"] == pytest.approx((62.0 + 5.0) / 77.0)


def test_a_variant_that_fails_is_reported_and_the_others_go_on(bench, monkeypatch, capsys):
    # On a GPU one variant's crash (a CUDA graph that cannot be captured, say) used to end the whole benchmark.
    calls = []

    def fake_subprocess_run(cmd, env, **kw):
        variant = cmd[cmd.index("--worker") + 1]
        calls.append(variant)
        if variant == "fused-graphed":
            return bench.subprocess.CompletedProcess(cmd, -11, "", "Traceback ...\nRuntimeError: CUDA error: boom\n")
        return bench.subprocess.CompletedProcess(cmd, 0, "progress\n" + json.dumps({"variant": variant}), "")

    monkeypatch.setattr(bench.subprocess, "run", fake_subprocess_run)
    args = bench.argparse.Namespace(variants="fused,fused-graphed,baseline", repeats=2, no_progress=True, trace=None,
                                    **{k: 1 for k in ("arch", "size", "width", "batch_size", "n_groups",
                                                      "langevin_steps", "gmm_images", "steps", "warmup", "refits",
                                                      "device", "data", "trace_steps")}, layer=None, amp=False)
    results, failed = bench.run_all(args)
    assert calls == ["fused", "fused-graphed", "baseline", "fused", "baseline"]  # not tried again in round 2
    assert list(results) == ["fused", "baseline"] and len(results["fused"]) == 2
    assert list(failed) == ["fused-graphed"]
    assert "exit -11" in failed["fused-graphed"] and "boom" in failed["fused-graphed"]
    assert "variant 'fused-graphed' failed (exit -11" in capsys.readouterr().err


def test_the_fused_drawn_variant_draws_each_batch_from_the_dataset(bench):
    # fused-drawn differs from fused in TrainConfig.data_on_device only; "on" here, so that the CPU holds the images
    args = bench.argparse.Namespace(data="synth-faces", size=16, width=8, arch="dcgan", layer=None, batch_size=4,
                                    n_groups=2, langevin_steps=1, gmm_images=8, amp=False, device="cpu", steps=1,
                                    warmup=1, refits=0)
    assert bench.VARIANTS["fused-drawn"][2] == {"data_on_device": "off"}
    held = bench.run_variant(args, True, overrides={"data_on_device": "on"})
    drawn = bench.run_variant(args, True, overrides=bench.VARIANTS["fused-drawn"][2])
    assert held["data_held_bytes"] == 2000 * 3 * 16 * 16 * 4 and drawn["data_held_bytes"] == 0


def test_stacked_bar_chart_bars_are_proportional_to_their_totals(tmp_path):
    path = stacked_bar_chart([[1.0, 1.0], [4.0, 0.0]], ["half", "full"], ["a", "b"], str(tmp_path / "c.png"))
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    top, bar_h = 6, 22
    lengths = []
    for i in range(2):
        row = img[top + i * bar_h + bar_h // 2]
        lengths.append(int((np.abs(row - 255).sum(axis=1) > 0)[170:-90].sum()))
    assert lengths[1] == pytest.approx(2 * lengths[0], abs=2)
    with pytest.raises(ValueError, match="one value per part"):
        stacked_bar_chart([[1.0]], ["x"], ["a", "b"], str(tmp_path / "bad.png"))


@pytest.mark.slow
def test_tiny_run_of_every_variant_writes_json_png_and_traces(tmp_path):
    out, traces = tmp_path / "train.json", tmp_path / "traces"
    cmd = [sys.executable, _PATH, "--size", "16", "--width", "8", "--batch-size", "4", "--n-groups", "2",
           "--langevin-steps", "2", "--gmm-images", "8", "--steps", "2", "--warmup", "1", "--refits", "1",
           "--repeats", "1", "--trace-steps", "1", "--device", "cpu", "--out", str(out), "--trace", str(traces),
           "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "reference_step_over_fused" in proc.stdout
    rec = json.loads(out.read_text())
    s = rec["summary"]
    assert list(s) == ["baseline", "fused", "reference"]
    assert s["fused"]["backend"] == ig.info()["backend_cpu"] and s["reference"]["backend"] == "reference"
    assert s["baseline"]["parts_ms"]["Langevin"] == 0.0 and s["fused"]["parts_ms"]["Langevin"] > 0
    assert s["fused"]["gmm_refit_ms"] > 0
    for v in s.values():
        assert v["step_ms"] > 0 and sum(v["parts_ms"].values()) == pytest.approx(v["step_ms"])
    assert len(rec["runs"]["fused"][0]["step_s"]) == 2
    Image.open(out.with_suffix(".png")).verify()
    trace = json.loads((traces / "trace_fused.json").read_text())
    names = {e.get("name") for e in trace["traceEvents"]}
    assert {"interpgan::D", "interpgan::GMM", "interpgan::Langevin", "interpgan::W", "interpgan::G"} <= names
    if ig.info()["backend_cpu"] == "cpu-ext":  # the compiled ops show up by name, the reference's do not
        assert "interpgan::group_energy_with_stats" in names
        assert not any(str(n).startswith("interpgan::group_energy")
                       for n in {e.get("name") for e in json.loads((traces / "trace_reference.json").read_text())["traceEvents"]})
    assert (traces / "profile_baseline.txt").read_text().count("aten::") > 3


def test_unknown_variant_is_a_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, _PATH, "--variants", "fused,turbo", "--out", str(tmp_path / "x.json")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "unknown variant" in proc.stderr and "turbo" in proc.stderr
