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
