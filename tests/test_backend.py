"""Backend selection: the compiled extension, the forced reference, and a failed import."""
import os
import platform
import subprocess
import sys
import types
import warnings

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


def test_only_another_major_cuda_than_torchs_asks_for_a_rebuild(monkeypatch):
    # CUDA is binary compatible within a major version: nvcc 13.0 under torch's CUDA 13.2 runs as built, and a
    # rebuild with the same toolkit could not change it; CUDA 12 under torch's 13 cannot load.
    class CudaBuild:
        with_cuda, cuda_version = True, 13000

    monkeypatch.setattr(ig._backend, "_C", CudaBuild())
    for torch_cuda in ("13.0", "13.2"):
        monkeypatch.setattr(torch.version, "cuda", torch_cuda)
        assert ig._backend.cuda_version_mismatch() is None
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    message = ig._backend.cuda_version_mismatch()
    assert message is not None and "CUDA 13.0 but torch uses CUDA 12.8" in message and "CUDA 12.x toolkit" in message


def test_info_says_why_the_cuda_kernels_are_missing(monkeypatch):
    class CpuBuild:
        torch_version, cpu_parallel, with_cuda, cuda_version = "2.14.1", "OpenMP", False, None
        no_cuda_because = "torch is a CPU build"

    monkeypatch.setattr(ig._backend, "_C", CpuBuild())
    assert ig.info()["ext_no_cuda_because"] == "torch is a CPU build"
    monkeypatch.setattr(ig._backend, "_C", type("OldBuild", (), {k: v for k, v in vars(CpuBuild).items()
                                                                   if k != "no_cuda_because"})())
    assert ig.info()["ext_no_cuda_because"] == "the build did not record why"


def test_cuda_tensors_without_cuda_kernels_warn_once_with_the_reason(monkeypatch):
    class CpuBuild:
        with_cuda, no_cuda_because = False, "the CUDA build failed (...); rebuild with INTERPGAN_FORCE_CUDA=1 to stop at its error"

    monkeypatch.setattr(ig._backend, "_C", CpuBuild())
    monkeypatch.setattr(ig._backend, "_warned_cuda_fallback", False)
    on_gpu = types.SimpleNamespace(device=torch.device("cuda"))  # the check reads only the device
    with pytest.warns(RuntimeWarning, match=r"without CUDA kernels \(the CUDA build failed.*reference"):
        assert ig._backend.use_compiled(on_gpu) is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ig._backend.use_compiled(on_gpu) is False


@pytest.mark.skipif(not ig._backend.has_extension(), reason="the compiled extension is not built")
def test_the_build_recorded_why_it_has_no_cuda_kernels():
    if ig._backend.has_cuda_kernels():
        assert "ext_no_cuda_because" not in ig.info()
    else:  # e.g. "INTERPGAN_SKIP_CUDA=1" or "torch is a CPU build", as setup.py decided
        assert ig._backend._C.no_cuda_because and ig.info()["ext_no_cuda_because"] == ig._backend._C.no_cuda_because


@pytest.mark.skipif(not ig._backend.has_extension(), reason="the compiled extension is not built")
def test_cpu_kernels_are_built_parallel_where_torch_uses_openmp():
    # Built without -fopenmp, at::parallel_for compiles to a plain loop and the CPU kernels silently use one core.
    if ig._backend.torch_uses_openmp():
        assert ig._backend._C.cpu_parallel == "OpenMP"
        assert ig.info()["ext_cpu_parallel"] == "OpenMP"
    assert ig._backend.serial_cpu_kernels() is None


@pytest.mark.skipif(not ig._backend.has_extension(), reason="the compiled extension is not built")
def test_cpu_kernels_run_on_as_many_threads_as_torch_sets():
    # The extension's OpenMP runtime must be torch's: a second one (a Clang build on Linux: libomp beside torch's
    # libgomp) runs the kernels on a pool of its own size, whatever torch.set_num_threads says.
    if ig._backend._C.cpu_parallel is None:
        pytest.skip("built without OpenMP (test_cpu_kernels_are_built_parallel_where_torch_uses_openmp says if wrongly)")
    if not ig._backend.torch_uses_openmp():
        pytest.skip("torch's thread pool is not OpenMP: chunks go to whichever pool thread is free")
    threads = torch.get_num_threads()
    try:
        for n in (1, 3):  # 3: more than this 2-core machine's default, so a pool of its own would show
            torch.set_num_threads(n)
            assert ig._backend._C.cpu_parallel_threads() == n
            assert ig.info()["ext_cpu_threads"] == f"{n} (torch: {n})"
    finally:
        torch.set_num_threads(threads)


def test_another_openmp_runtime_than_torchs_is_reported(monkeypatch):
    class ForeignRuntimeBuild:
        cpu_parallel = "OpenMP"

        @staticmethod
        def cpu_parallel_threads():
            return 16

    monkeypatch.setattr(ig._backend, "_C", ForeignRuntimeBuild())
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    monkeypatch.setattr(torch.__config__, "parallel_info", lambda: "ATen parallel backend: OpenMP\n")
    note = ig._backend.cpu_threads_note()
    assert note.startswith("16 (torch: 4)") and "OpenMP runtime is not torch's" in note


@pytest.mark.skipif(not ig._backend.has_extension(), reason="the compiled extension is not built")
def test_the_build_reports_the_vector_code_it_runs():
    code = ig.info()["ext_cpu_vector_code"]
    assert code == ig._backend._C.cpu_vector_code and code.split()[0] in ("avx2", "sse2", "portable")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        assert code.startswith("portable")  # arm64 and the rest: the compiler's vectors
        return
    cpu_flags = set()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu_flags = {w for line in f if line.startswith("flags") for w in line.split(":", 1)[1].split()}
    if code.startswith("avx2"):  # only where the CPU can run it
        assert {"avx2", "fma"} <= cpu_flags or not cpu_flags
    elif code.startswith("sse2") and {"avx2", "fma"} <= cpu_flags:
        assert "built without" in code  # a Clang build: no AVX2 clones


def test_a_serial_build_is_reported(monkeypatch):
    class SerialBuild:
        cpu_parallel = None
        no_openmp_because = "no way of building with torch's OpenMP worked (-Xclang -fopenmp: does not build)"
        with_cuda = False

    monkeypatch.setattr(ig._backend, "_C", SerialBuild())
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    monkeypatch.setattr(torch.__config__, "parallel_info", lambda: "ATen parallel backend: OpenMP\n")
    message = ig._backend.serial_cpu_kernels()
    assert message is not None and "one thread instead of 4" in message and SerialBuild.no_openmp_because in message
    assert "rebuild it with a compiler that supports OpenMP" in message
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


def test_a_failed_load_names_the_torch_the_extension_was_built_against(tmp_path):
    # An extension built against another torch fails on an undefined symbol; its build stamp says which torch.
    stamp = b"\x00\x01interpgan_ext-built-with-torch=2.4.1;\x00more"
    (tmp_path / "_C.cpython-311-x86_64-linux-gnu.so").write_bytes(b"\x7fELF" + bytes(range(256)) * 40 + stamp)
    said = ig._backend._built_against_another_torch(str(tmp_path))
    assert said == f" (it was built against torch 2.4.1, and this is torch {torch.__version__})"
    this_torch = torch.__version__.split("+")[0].encode()
    (tmp_path / "_C.cpython-311-x86_64-linux-gnu.so").write_bytes(b"interpgan_ext-built-with-torch=" + this_torch + b";")
    assert ig._backend._built_against_another_torch(str(tmp_path)) == ""
    assert ig._backend._built_against_another_torch(str(tmp_path / "nothing-here")) == ""


@pytest.mark.skipif(not ig._backend.has_extension(), reason="the compiled extension is not built")
def test_the_built_extension_carries_its_build_stamp():
    stamp = f"interpgan_ext-built-with-torch={ig._backend._C.torch_version};"
    assert ig._backend._C.build_stamp == stamp
    with open(ig._backend._C.__file__, "rb") as fh:
        assert stamp.encode() in fh.read()


def test_failed_import_warns_and_falls_back():
    r = run_py("import sys; sys.modules['interpgan_ext._C'] = None\n"
               "import warnings; warnings.simplefilter('always')\n"
               "import interpgan_ext as ig; print(ig.info()['backend_cpu'])")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "reference"
    assert "could not be loaded" in r.stderr and "Rebuild" in r.stderr
