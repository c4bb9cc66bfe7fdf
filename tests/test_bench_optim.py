"""python/bench_optim.py: Adam's three paths timed over the library's G and D (its timing loop is tested in
test_bench_ops.py)."""
import importlib.util
import json
import os

_PATH = os.path.join(os.path.dirname(__file__), "..", "python", "bench_optim.py")


def test_it_times_the_three_adam_paths_and_writes_them(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_optim", _PATH)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "optim.json"
    rows = script.main(["--sizes", "32", "--width", "8", "--seconds", "0.001", "--json", str(out)])
    (row,) = rows
    assert list(row["median_s"]) == ["loop", "foreach", "fused"] and all(t > 0 for t in row["median_s"].values())
    assert row["over_fused"]["fused"] == 1.0 and row["parameters"] > 0
    assert json.loads(out.read_text())["rows"] == rows
    assert "fused" in capsys.readouterr().out
