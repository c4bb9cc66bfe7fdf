"""The runnable examples in python/examples/ work as their docstrings say, at tiny sizes."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "python", "examples")


def run_example(name, *args, timeout=600):
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *args], capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def number_after(text, label):
    m = re.search(re.escape(label) + r"\s*([-+0-9.e]+)", text)
    assert m, f"{label!r} not in output:\n{text}"
    return float(m.group(1))


@pytest.mark.slow
def test_fused_ops_example_agrees_with_reference_raises_energy_and_compiles():
    out = run_example("fused_ops.py", "--device", "cpu", "--steps", "15")
    assert number_after(out, "max |fused - float64 reference| =") < 1e-4
    m = re.search(r"mean g_W ([-0-9.e]+) -> ([-0-9.e]+); replay identical: (\w+)", out)
    assert m and float(m.group(2)) > float(m.group(1)) and m.group(3) == "True", out
    diffs = re.search(r"energy ([0-9.e+-]+), Langevin step ([0-9.e+-]+), dW ([0-9.e+-]+)", out)
    assert diffs and all(float(d) < 1e-4 for d in diffs.groups()), out


@pytest.mark.slow
def test_own_generator_example_trains_on_an_image_folder_resumes_and_writes_swaps(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):  # a folder of a user's own pictures, of mixed sizes and modes
        arr = rng.integers(0, 256, size=(40 + 4 * i, 36, 3), dtype=np.uint8)
        Image.fromarray(arr).convert("L" if i == 0 else "RGB").save(images / f"img{i}.png")
    out = tmp_path / "run"
    args = ["--images", str(images), "--batch-size", "4", "--groups", "3", "--pairs", "2", "--out", str(out),
            "--no-progress"]
    first = run_example("own_generator.py", "--steps", "3", *args)
    assert "filter groups of 'body.1'" in first
    second = run_example("own_generator.py", "--steps", "5", *args)  # the run in --out continues
    assert "resuming" in second and "at step 3" in second
    sizes = [int(s) for s in re.search(r"\(filters per group\): \[([0-9, ]+)\]", second).group(1).split(",")]
    assert sum(sizes) == 32 and len(sizes) == 3
    for c in range(3):
        img = Image.open(out / f"swap_group{c}.png")
        assert img.width > img.height > 0  # a row per pair, four images per row
    assert (out / "checkpoint.pt").exists() and (out / "log.jsonl").exists()
