"""python/run.sh's disk check: a first install that cannot fit fails early with what to do, or (CI) takes the
CPU build of torch. Runs the real script against a stub venv whose python records what pip was asked for."""
import os
import shutil
import stat
import subprocess
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STUB_PYTHON = textwrap.dedent("""\
    #!/usr/bin/env bash
    # no torch yet: the first install is ahead; pip only says what it was asked to install
    case "$*" in
      *"import torch"*) exit 1 ;;
      *"-m pip"*) echo "PIP $*" ;;
    esac
    exit 0
""")


def run_setup(tmp_path, free_gb, **env):
    shutil.copytree(os.path.join(ROOT, "python"), tmp_path / "python")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(STUB_PYTHON)
    (bin_dir / "python").chmod(stat.S_IRWXU)
    (bin_dir / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    # `df` as a bash function (exported to the script) reports the free space we choose
    script = ("df() { printf 'Filesystem 1024-blocks Used Available Capacity Mounted\\n/dev/x 1 1 %s 1%% /\\n' "
              f"{int(free_gb * 1048576)}; }}; export -f df; bash python/run.sh setup")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("INTERPGAN_")}
    full_env.update(env)
    return subprocess.run(["bash", "-c", script], cwd=tmp_path, env=full_env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_enough_disk_installs_the_cuda_build(tmp_path):
    r = run_setup(tmp_path, free_gb=20)
    assert r.returncode == 0, r.stderr
    assert "PIP -m pip install -q torch==2.14.1" in r.stdout and "torchvision==0.29.1" in r.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_too_little_disk_fails_early_and_says_what_to_do(tmp_path):
    r = run_setup(tmp_path, free_gb=3)
    assert r.returncode == 1
    assert "PIP" not in r.stdout
    assert "only 3 GB free" in r.stderr and "INTERPGAN_TORCH=torch==2.13.0" in r.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_ci_falls_back_to_the_cpu_build_loudly(tmp_path):
    r = run_setup(tmp_path, free_gb=3, INTERPGAN_LOW_DISK_FALLBACK="1")
    assert r.returncode == 0, r.stderr
    assert "PIP -m pip install -q torch==2.13.0" in r.stdout and "torchvision" not in r.stdout
    assert "NOT COMPILED" in r.stdout
    # below what even the CPU build needs, the fallback fails like a user's install
    r = run_setup(tmp_path / "again", free_gb=1, INTERPGAN_LOW_DISK_FALLBACK="1")
    assert r.returncode == 1 and "only 1 GB free" in r.stderr
