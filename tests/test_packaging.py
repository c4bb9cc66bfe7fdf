"""The source distribution builds on its own: every file a compiled source includes is inside it."""
import os
import re
import shutil
import subprocess
import sys
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def test_sdist_holds_every_header_the_sources_include(tmp_path):
    # A copy, so that the build's egg-info does not land in the checkout.
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "runs", "*.so", "__pycache__",
                                                             "*.egg-info", "bench", ".pytest_cache"))
    env = dict(os.environ, INTERPGAN_SKIP_CUDA="1")
    done = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "dist")], cwd=src, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (archive,) = (tmp_path / "dist").iterdir()
    with tarfile.open(archive) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
        sources = {n: tar.extractfile(tar.getmember(archive.name[: -len(".tar.gz")] + "/" + n)).read().decode()
                   for n in names if n.endswith((".cpp", ".cu", ".h", ".cuh"))}
    assert "csrc/ops.cpp" in sources and "csrc/cuda/group_energy.cu" in sources, sorted(names)
    assert "CMakeLists.txt" in names
    missing = []
    for name, text in sources.items():
        for header in INCLUDE.findall(text):
            # resolved beside the including file, or under csrc/ (the include root of setup.py and CMake)
            candidates = [os.path.normpath(os.path.join(os.path.dirname(name), header)), os.path.join("csrc", header)]
            if not any(c in names for c in candidates):
                missing.append(f"{name} includes {header}")
    assert not missing, missing


def test_every_file_and_picture_the_readme_names_is_in_the_repository():
    # the README shows measured pictures and points at scripts and results: a move under bench/ or python/ must not
    # leave it pointing at nothing
    with open(os.path.join(ROOT, "README.md")) as fh:
        text = fh.read()
    pictures = re.findall(r'<img src="([^"]+)"', text)
    paths = [p for p in re.findall(r"`([^`\s]+)`", text)
             if p.startswith(("bench/", "python/", "csrc/", "interpgan_ext/", "tests/")) and "*" not in p]
    assert len(pictures) >= 3 and paths
    missing = [p for p in pictures + paths if not os.path.exists(os.path.join(ROOT, p))]
    assert not missing, f"README.md names files that are not in the repository: {missing}"
