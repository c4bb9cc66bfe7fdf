"""python/profile_call_cost.py: the pieces it reports (its timing loop is bench_ops.py's, tested there)."""
import importlib.util
import json
import os

import torch

import interpgan_ext as ig

_PATH = os.path.join(os.path.dirname(__file__), "..", "python", "profile_call_cost.py")


def test_it_times_every_piece_and_writes_them(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("profile_call_cost", _PATH)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "costs.json"
    costs = script.main(["--shape", "2", "5", "3", "1", "2", "--seconds", "0.001", "--json", str(out)])
    names = ["forward through autograd", "autograd.grad, retained graph", "step: forward, sum, autograd.grad",
             "same step, builtin (x * y).sum()"]
    if ig._backend.use_compiled(torch.zeros(1)):
        names = ["op: forward with statistics", "op: backward (df and dW)"] + names
    assert list(costs) == names
    assert all(v > 0 for v in costs.values())
    assert json.loads(out.read_text())["median_us"] == costs
    printed = capsys.readouterr().out
    assert all(name in printed for name in names)
