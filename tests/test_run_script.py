"""python/run.sh's disk check: a first install that cannot fit fails early with what to do, or (CI) takes the
CPU build of torch; its nvcc from pip for a GPU without a toolkit; and its test command on a machine without CMake,
make or a C++ compiler. Runs the real script against a stub venv whose python records what pip was asked for."""
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


def run_sh(tmp_path, verb="setup", free_gb=20, system="Linux", stub=STUB_PYTHON, path=None, **env):
    """bash python/run.sh VERB in tmp_path, with a stub venv whose python is `stub`; `path` replaces PATH (the venv's
    bin is put before it, as activating does)."""
    shutil.copytree(os.path.join(ROOT, "python"), tmp_path / "python")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(stub)
    (bin_dir / "python").chmod(stat.S_IRWXU)
    (bin_dir / "activate").write_text(f'export PATH="{bin_dir}:$PATH"\n')
    # `df` and `uname` as bash functions (exported to the script) report the free space and the system we choose
    script = ("df() { printf 'Filesystem 1024-blocks Used Available Capacity Mounted\\n/dev/x 1 1 %s 1%% /\\n' "
              f"{int(free_gb * 1048576)}; }}; uname() {{ echo {system}; }}; export -f df uname; bash python/run.sh {verb}")
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("INTERPGAN_") and k != "CXX"}
    full_env.update(env)
    if path is not None:
        full_env["PATH"] = str(path)
    return subprocess.run([shutil.which("bash"), "-c", script], cwd=tmp_path, env=full_env, capture_output=True,
                          text=True, timeout=60)


def run_setup(tmp_path, free_gb, **kwargs):
    return run_sh(tmp_path, "setup", free_gb, **kwargs)


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
def test_on_macos_the_default_torch_needs_only_the_room_of_its_cpu_wheel(tmp_path):
    # PyPI's macOS wheel of torch==2.14.1 has no CUDA: ~1.5 GB, not Linux's ~6
    r = run_setup(tmp_path, free_gb=3, system="Darwin")
    assert r.returncode == 0, r.stderr
    assert "PIP -m pip install -q torch==2.14.1" in r.stdout and "only 3 GB free" not in r.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_a_gpu_without_a_cuda_toolkit_gets_nvcc_from_pip(tmp_path):
    # setup.py's nvcc_wheels_to_install decides (tests/test_packaging.py); run.sh installs what it names
    stub = STUB_PYTHON.replace('case "$*" in\n', 'case "$*" in\n  *nvcc_wheels_to_install*) echo '
                               '"nvidia-cuda-nvcc==13.0.* nvidia-nvvm==13.0.*" ;;\n')
    for checkout in (tmp_path / "gpu", tmp_path / "no-gpu"):  # each with an extension built before (CPU kernels)
        (checkout / "interpgan_ext").mkdir(parents=True)
        (checkout / "interpgan_ext" / "_C.cpython-311-x86_64-linux-gnu.so").write_text("")
    r = run_setup(tmp_path / "gpu", free_gb=20, stub=stub)
    assert r.returncode == 0, r.stderr
    assert "a GPU and no CUDA toolkit: installing nvcc from pip" in r.stdout
    assert "PIP -m pip install -q nvidia-cuda-nvcc==13.0.* nvidia-nvvm==13.0.*" in r.stdout
    assert "== building the extension" in r.stdout  # again, now with its CUDA kernels
    r = run_setup(tmp_path / "no-gpu", free_gb=20)  # the helper printed nothing: the extension stays
    assert "installing nvcc" not in r.stdout and "== building the extension" not in r.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_ci_falls_back_to_the_cpu_build_loudly(tmp_path):
    r = run_setup(tmp_path, free_gb=3, INTERPGAN_LOW_DISK_FALLBACK="1")
    assert r.returncode == 0, r.stderr
    assert "PIP -m pip install -q torch==2.13.0" in r.stdout and "torchvision" not in r.stdout
    assert "NOT COMPILED" in r.stdout
    # below what even the CPU build needs, the fallback fails like a user's install
    r = run_setup(tmp_path / "again", free_gb=1, INTERPGAN_LOW_DISK_FALLBACK="1")
    assert r.returncode == 1 and "only 1 GB free" in r.stderr


STUB_PYTHON_FOR_TESTS = textwrap.dedent("""\
    #!/usr/bin/env bash
    # The test command on a machine without CMake or make: pip "installs" CMake as stub cmake and ctest that record
    # how they were called; pytest and the extension's build pass.
    bin_dir=$(dirname "$0")
    case "$*" in
      *cmake_prefix_path*) echo /stub/torch/share/cmake ;;
      *"import torch"*) exit 1 ;;
      *"pip install -q cmake"*)
        echo "PIP $*"
        printf '#!/usr/bin/env bash\\necho "CMAKE $*" >> calls.log; mkdir -p build/cmake\\n' > "$bin_dir/cmake"
        printf '#!/usr/bin/env bash\\necho "CTEST $*" >> ../../calls.log\\n' > "$bin_dir/ctest"
        chmod +x "$bin_dir/cmake" "$bin_dir/ctest" ;;
      *"-m pip"*) echo "PIP $*" ;;
    esac
    exit 0
""")


def run_test_command(tmp_path, compiler=True, **env):
    """python/run.sh test with STUB_PYTHON_FOR_TESTS, on a PATH with the shell's tools but no cmake and no make (and,
    unless `compiler`, no C++ compiler)."""
    tools = tmp_path / "tools"
    tools.mkdir(parents=True)
    for tool in ("bash", "dirname", "ls", "head", "find", "grep", "sed", "awk", "mkdir", "tail", "cat", "chmod"):
        os.symlink(shutil.which(tool), tools / tool)
    if compiler:
        (tools / "c++").write_text("#!/usr/bin/env bash\n")
        (tools / "c++").chmod(stat.S_IRWXU)
    return run_sh(tmp_path, "test", stub=STUB_PYTHON_FOR_TESTS, path=tools, **env)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_the_test_command_installs_cmake_where_there_is_none_and_builds_with_ninja_without_make(tmp_path):
    r = run_test_command(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "installing CMake (PyPI's cmake)" in r.stdout and "PIP -m pip install -q cmake" in r.stdout
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls[0].startswith("CMAKE -S . -B build/cmake -G Ninja -DCMAKE_PREFIX_PATH=/stub/torch/share/cmake")
    assert calls[1] == "CMAKE --build build/cmake -j 2" and calls[2] == "CTEST --output-on-failure"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_without_a_cpp_compiler_the_test_command_skips_the_cpp_tests_and_says_so_but_not_in_ci(tmp_path):
    r = run_test_command(tmp_path / "laptop", compiler=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no C++ compiler: the C++ tests are skipped" in r.stdout and "installing CMake" not in r.stdout
    # CI goes on to CMake, which fails there without a compiler (the stub cmake here does not care)
    r = run_test_command(tmp_path / "ci", compiler=False, INTERPGAN_REQUIRE_EXT="1")
    assert "no C++ compiler" not in r.stdout and "installing CMake" in r.stdout
