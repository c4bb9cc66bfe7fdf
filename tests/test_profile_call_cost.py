"""python/profile_call_cost.py: its timing loop on a virtual clock, and the pieces it reports."""
import importlib.util
import json
import os
import types

import torch

import interpgan_ext as ig

_PATH = os.path.join(os.path.dirname(__file__), "..", "python", "profile_call_cost.py")


def load_script():
    spec = importlib.util.spec_from_file_location("profile_call_cost", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_median_us_is_the_median_of_the_block_means_after_the_warm_up(monkeypatch):
    script = load_script()
    clock = {"now": 0.0, "calls": 0}
    monkeypatch.setattr(script, "time", types.SimpleNamespace(perf_counter=lambda: clock["now"]))
    warmup, calls = 10, 4
    # The warm-up calls cost 1 s each (must not count); then block i's calls cost (i + 1) µs, except block 2's
    # calls, which cost 1000 µs (an outlier the median ignores).
    def fn():
        n = clock["calls"]
        clock["calls"] += 1
        if n < warmup:
            clock["now"] += 1.0
            return
        block = (n - warmup) // calls
        clock["now"] += (1000 if block == 2 else block + 1) * 1e-6

    result = script.median_us(fn, calls, blocks=5)
    assert clock["calls"] == warmup + 5 * calls
    assert abs(result - 4.0) < 1e-6  # block means 1, 2, 1000, 4, 5 µs


def test_it_reports_every_piece_and_writes_them(tmp_path, capsys):
    script = load_script()
    out = tmp_path / "costs.json"
    costs = script.main(["--shape", "2", "5", "3", "1", "2", "--calls", "3", "--json", str(out)])
    names = ["forward through autograd", "autograd.grad, retained graph", "step: forward, sum, autograd.grad",
             "same step, builtin (x * y).sum()"]
    if ig._backend.use_compiled(torch.zeros(1)):
        names = ["op: forward with statistics", "op: backward (df and dW)"] + names
    assert list(costs) == names
    assert all(v > 0 for v in costs.values())
    assert json.loads(out.read_text())["median_us"] == costs
    printed = capsys.readouterr().out
    assert all(name in printed for name in names)
