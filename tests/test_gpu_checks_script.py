"""python/gpu_checks.sh runs on a lent GPU machine, minutes of which are scarce: a typo in one of its command lines
would cost a whole visit. Its scripts, files, options and variants are checked here, on the CPU."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def script_text():
    with open(os.path.join(ROOT, "python", "gpu_checks.sh")) as fh:
        return fh.read().replace("\\\n", " ")  # continued lines joined


def invocations():
    """(script, its arguments) for every `python3 python/NAME.py ...` of gpu_checks.sh."""
    found = re.findall(r"python3 (python/\w+\.py)([^|>;&}\n]*)", script_text())
    assert len(found) >= 8, found
    return [(path, args.split()) for path, args in found]


@pytest.mark.parametrize("path, args", invocations(), ids=lambda x: x if isinstance(x, str) else " ".join(x))
def test_every_option_it_passes_is_one_its_script_takes(path, args):
    assert os.path.exists(os.path.join(ROOT, path))
    options = [a for a in args if a.startswith("--")]
    if not options:
        return
    proc = subprocess.run([sys.executable, os.path.join(ROOT, path), "--help"], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for option in options:
        assert re.search(rf"(^|[\s,\[]){re.escape(option)}\b", proc.stdout), f"{path} takes no {option}"


def test_its_variants_test_files_and_option_values_exist():
    import importlib.util

    text = script_text()
    spec = importlib.util.spec_from_file_location("bench_train", os.path.join(ROOT, "python", "bench_train.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    (variants,) = re.findall(r"--variants ([\w,-]+)", text)
    assert set(variants.split(",")) <= set(bench.VARIANTS), variants
    for test_path in re.findall(r"(tests/\w+\.py)", text):
        assert os.path.exists(os.path.join(ROOT, test_path)), test_path
    from interpgan_ext.trainer import TrainConfig

    for value in re.findall(r"--langevin-graph (\w+)", text):
        TrainConfig(langevin_graph=value)  # a value TrainConfig refuses raises here
    assert re.findall(r"INTERPGAN_CUDA_PRODUCTS=(\w+)", text) == ["staged"]
    with open(os.path.join(ROOT, "csrc", "cuda", "group_energy.cu")) as fh:
        assert '"staged"' in fh.read()  # the value the CUDA code reads


def test_it_is_valid_bash():
    proc = subprocess.run(["bash", "-n", os.path.join(ROOT, "python", "gpu_checks.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
