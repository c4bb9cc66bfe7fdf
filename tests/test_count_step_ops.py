"""python/count_step_ops.py: ops per training step, by the trainer's parts."""
import importlib.util
import json
import os

_PATH = os.path.join(os.path.dirname(__file__), "..", "python", "count_step_ops.py")


def load_script():
    spec = importlib.util.spec_from_file_location("count_step_ops", _PATH)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_it_counts_each_part_of_a_step_and_sees_what_holding_the_data_saves(tmp_path, capsys):
    script = load_script()
    tiny = ["--size", "16", "--width", "8", "--batch-size", "4", "--n-groups", "2", "--langevin-steps", "2",
            "--gmm-images", "8"]
    out = tmp_path / "ops.json"
    held = script.main(tiny + ["--data-on-device", "on", "--json", str(out)])
    drawn = script.main(tiny + ["--data-on-device", "off"])
    assert set(held) == set(drawn) == {"D", "Langevin", "W", "G", "data+other"}
    assert sum(held["Langevin"].values()) > 0 and held["Langevin"] == drawn["Langevin"]
    # drawn, the real batch is SynthFaces' renderer (hundreds of ops); held, one gather
    assert sum(drawn["data+other"].values()) > 100 + sum(held["data+other"].values())
    assert held["data+other"]["index"] >= 1 and held["data+other"]["randint"] == 1
    saved = json.loads(out.read_text())
    assert saved["total"] == sum(sum(c.values()) for c in held.values())
    assert "data_on_device=on" in capsys.readouterr().out
    baseline = script.main(tiny + ["--baseline"])
    assert "Langevin" not in baseline and "W" not in baseline
