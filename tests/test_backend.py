"""Backend selection: the compiled extension, the forced reference, and a failed import."""
import os
import subprocess
import sys

import pytest
import torch

import interpgan_ext as ig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_py(code, **env):
    e = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, cwd=ROOT, timeout=120)


def test_info_fields():
    info = ig.info()
    for key in ("backend", "torch", "torch_cuda", "extension"):
        assert key in info
    assert "backend" in str(info)


def test_info_says_which_cuda_product_kernels_run(monkeypatch):
    class CudaBuild:
        torch_version, cpu_parallel, with_cuda, cuda_version, cuda_archs = "2.14.1", "OpenMP", True, 13000, "9.0"

    monkeypatch.setattr(ig._backend, "_C", CudaBuild())
    monkeypatch.delenv("INTERPGAN_CUDA_PRODUCTS", raising=False)
    assert ig.info()["ext_cuda_products"] == "direct"
    monkeypatch.setenv("INTERPGAN_CUDA_PRODUCTS", "staged")
    assert ig.info()["ext_cuda_products"] == "staged"


@pytest.mark.skipif(not ig._backend.has_extension(), reason="the compiled extension is not built")
def test_cpu_kernels_are_built_parallel_where_torch_uses_openmp():
    # Built without -fopenmp, at::parallel_for compiles to a plain loop and the CPU kernels silently use one core.
    if ig._backend.torch_uses_openmp():
        assert ig._backend._C.cpu_parallel == "OpenMP"
        assert ig.info()["ext_cpu_parallel"] == "OpenMP"
    assert ig._backend.serial_cpu_kernels() is None


def test_a_serial_build_is_reported(monkeypatch):
    class SerialBuild:
        cpu_parallel = None
        with_cuda = False

    monkeypatch.setattr(ig._backend, "_C", SerialBuild())
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    monkeypatch.setattr(torch.__config__, "parallel_info", lambda: "ATen parallel backend: OpenMP\n")
    message = ig._backend.serial_cpu_kernels()
    assert message is not None and "one thread instead of 4" in message and "-fopenmp" in message
    monkeypatch.setattr(torch.__config__, "parallel_info", lambda: "ATen parallel backend: native thread pool\n")
    assert ig._backend.serial_cpu_kernels() is None


@pytest.mark.skipif(os.environ.get("INTERPGAN_REQUIRE_EXT") != "1", reason="set by CI, where the build must succeed")
def test_ci_built_the_extension_with_cuda_kernels():
    assert ig._backend.has_extension(), ig._backend.unavailable_reason
    if torch.version.cuda is not None:
        assert ig._backend.has_cuda_kernels(), "torch has CUDA, so the CUDA kernels must have been compiled and linked"


def test_forced_reference_backend_works():
    r = run_py("import torch, interpgan_ext as ig; print(ig.info()['backend_cpu']);"
               "f=torch.randn(2,3,4); W=torch.rand(3,2,4); q=torch.tensor([0,1,1]);"
               "print(float(ig.ops.group_energy(f,W,q)[0]) == float(ig.ops.group_energy_reference(f,W,q)[0]))",
               INTERPGAN_BACKEND="reference")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["reference", "True"]
    assert "could not be loaded" not in r.stderr  # forced: no warning


def test_failed_import_warns_and_falls_back():
    r = run_py("import sys; sys.modules['interpgan_ext._C'] = None\n"
               "import warnings; warnings.simplefilter('always')\n"
               "import interpgan_ext as ig; print(ig.info()['backend_cpu'])")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "reference"
    assert "could not be loaded" in r.stderr and "Rebuild" in r.stderr
