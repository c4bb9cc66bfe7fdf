"""The benchmark's timing loop (python/bench_ops.py): interleaved rounds, first call of a block not recorded.

The versions run on a virtual clock, so that the test is exact on a noisy machine."""
import importlib.util
import os
import types

import pytest
import torch

_PATH = os.path.join(os.path.dirname(__file__), "..", "python", "bench_ops.py")


def load_bench(monkeypatch, clock):
    spec = importlib.util.spec_from_file_location("bench_ops", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "time", types.SimpleNamespace(perf_counter=lambda: clock["now"]))
    return module


def test_median_times_interleaves_versions_and_skips_each_blocks_cold_call(monkeypatch):
    clock = {"now": 0.0}
    bench = load_bench(monkeypatch, clock)
    order = []

    def version(name, cold_s, warm_s):
        def fn():
            # Slow on the first call after another version ran (as after a cache flush), fast when repeated.
            clock["now"] += cold_s if not order or order[-1] != name else warm_s
            order.append(name)

        return fn

    # Blocks of 1.5 ms: one cold call (not recorded), then one warm call of each version per round.
    times = bench.median_times({"a": version("a", 0.02, 0.001), "b": version("b", 0.02, 0.0012)},
                               torch.device("cpu"), reps=20, warmup=1, min_seconds=0.0, block_seconds=0.0015)
    assert times == pytest.approx({"a": 0.001, "b": 0.0012})
    switches = sum(1 for x, y in zip(order, order[1:]) if x != y)
    assert switches >= 2 * 20 - 1, "the versions must take turns, not run one after the other"


def test_median_times_records_every_call_longer_than_a_block(monkeypatch):
    clock = {"now": 0.0}
    bench = load_bench(monkeypatch, clock)
    durations = iter([0.01, 0.01] + [0.003, 0.004, 0.005] + [1.0] * 10)

    def slow():
        clock["now"] += next(durations)

    times = bench.median_times({"slow": slow}, torch.device("cpu"), reps=3, warmup=1, min_seconds=0.0,
                               block_seconds=0.001)
    assert times == pytest.approx({"slow": 0.004})  # warmup and the per-call estimate, then three recorded calls


def test_speedup_chart_draws_log_scaled_bars_from_1x(tmp_path):
    import numpy as np
    from PIL import Image

    from interpgan_ext.viz import speedup_chart

    path = speedup_chart([("op A\nshape", {"x": 4.0, "y": 0.5}), ("op B", {"z": 2.0})], str(tmp_path / "s.png"))
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    coloured = (img.max(axis=2) - img.min(axis=2)) > 60  # the bars; text, grid and the 1x line are grey or black
    top, bar_h, first_block = 6 + 14, 14, 2 * 14 + 8
    spans = []
    for y in (top + 7, top + bar_h + 7, top + first_block + 7):  # the middle row of each bar
        xs = np.flatnonzero(coloured[y])
        spans.append((xs.min(), xs.max()))
    (a0, a1), (b0, b1), (c0, c1) = spans
    assert b1 <= a0 + 1 and abs(c0 - a0) <= 1  # 4x and 2x start at the 1x line, 0.5x ends there
    assert (a1 - a0) == pytest.approx(2 * (c1 - c0), abs=2)  # log scale: 4x is twice as long as 2x
    assert (b1 - b0) == pytest.approx(c1 - c0, abs=2)  # and 0.5x as long as 2x, leftwards
    with pytest.raises(ValueError, match="positive"):
        speedup_chart([("bad", {"x": float("nan")})], str(tmp_path / "bad.png"))


def test_bench_plot_charts_each_rows_speedups(monkeypatch, tmp_path):
    import interpgan_ext.viz as viz

    bench = load_bench(monkeypatch, {"now": 0.0})
    drawn = {}
    monkeypatch.setattr(viz, "speedup_chart", lambda groups, path, **kw: drawn.update(groups=groups, **kw) or path)
    result = {"device": "cpu", "threads": 2, "torch": "2.x", "rows": [
        {"op": "group_energy", "mode": "forward", "shape": [2, 3, 4, 5, 6], "speedup_of_fused": {"einsum": 6.0}},
        {"op": "langevin_step", "mode": "update", "shape": [7, 8], "speedup_of_fused": {"eager": 1.5}}]}
    assert bench.plot(result, str(tmp_path / "ops.png")) == str(tmp_path / "ops.png")
    assert drawn["groups"] == [("group_energy forward\n[2, 3, 4, 5, 6]", {"einsum": 6.0}),
                               ("langevin_step update\n[7, 8]", {"eager": 1.5})]
    assert drawn["target"] == 5.0 and "cpu, 2 threads" in drawn["title"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_graph_replays_compute_what_the_calls_compute(monkeypatch):
    # The "(graph)" rows time replays of captured calls: they must run the same work on the same rotating inputs.
    import interpgan_ext as ig

    bench = load_bench(monkeypatch, {"now": 0.0})
    sets = [(torch.randn(3, 10, 5, device="cuda", requires_grad=True), torch.randn(10, 4, 5, device="cuda",
             requires_grad=True), torch.randint(0, 4, (10,), device="cuda")) for _ in range(3)]
    state, outs = {"i": 0}, []

    def run():
        f, W, groups = sets[state["i"] % 3]
        state["i"] += 1
        out = torch.autograd.grad(ig.ops.group_energy(f, W, groups).sum(), (f, W))
        outs.append(out)
        return out

    expected = [run() for _ in range(3)]
    replay = bench.as_graph_replays(run, 3)
    captured = outs[-3:]  # the captured calls' outputs are the graphs' static outputs, refreshed by each replay
    for i in range(6):
        for t in captured[i % 3]:
            t.zero_()
        replay()
        torch.cuda.synchronize()
        for got, want in zip(captured[i % 3], expected[i % 3]):
            torch.testing.assert_close(got, want)


def test_staged_version_sets_the_kernel_choice_for_its_call_only(monkeypatch):
    # bench_ops times the staged CUDA products beside the default ones by setting INTERPGAN_CUDA_PRODUCTS around
    # each call; the caller's own setting (or its absence) must be back afterwards, also when the call raises.
    bench = load_bench(monkeypatch, {"now": 0.0})
    seen = []
    call = bench.with_cuda_products("staged", lambda x: seen.append((x, os.environ.get("INTERPGAN_CUDA_PRODUCTS"))))
    monkeypatch.delenv("INTERPGAN_CUDA_PRODUCTS", raising=False)
    call(1)
    assert "INTERPGAN_CUDA_PRODUCTS" not in os.environ
    monkeypatch.setenv("INTERPGAN_CUDA_PRODUCTS", "direct")
    call(2)
    assert os.environ["INTERPGAN_CUDA_PRODUCTS"] == "direct"
    assert seen == [(1, "staged"), (2, "staged")]

    def fails():
        raise RuntimeError("kernel failed")

    with pytest.raises(RuntimeError, match="kernel failed"):
        bench.with_cuda_products("staged", fails)()
    assert os.environ["INTERPGAN_CUDA_PRODUCTS"] == "direct"
