"""Loads the compiled ops (interpgan_ext._C) and decides, per tensor, whether they or the reference run.

The package always imports: without the extension every op runs its pure-PyTorch reference, and the
reason is given once as a warning and in `interpgan_ext.info()`. `INTERPGAN_BACKEND=reference` forces
the reference backend.
"""
import glob
import os
import re
import warnings

import torch

_C = None
unavailable_reason = None


def _needs_python_prechecks() -> bool:
    """torch 2.11 (the GPU image's) segfaults when an extension op throws c10::ValueError (TORCH_CHECK_VALUE):
    a ten-line load_inline op reproduces it, while TypeError, IndexError and RuntimeError raise normally and
    torch 2.14 is fine. Where it may happen (torch < 2.14, the first version seen to be safe), the wrappers
    run the Python checks (same conditions, same messages) before the compiled op, so bad input raises
    instead of crashing. INTERPGAN_PY_CHECKS=1 or 0 forces the choice."""
    forced = os.environ.get("INTERPGAN_PY_CHECKS", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    return (major, minor) < (2, 14)


PYTHON_PRECHECKS = _needs_python_prechecks()


def _built_against_another_torch(package_dir) -> str:
    """When _C fails to load: " (built against torch X, and this is torch Y)" if its build stamp (python_module.cpp)
    names another torch, else "". The file is read as bytes, never loaded."""
    for path in glob.glob(os.path.join(package_dir, "_C.*")):
        try:
            with open(path, "rb") as fh:
                found = re.search(rb"interpgan_ext-built-with-torch=([^;\x00]+);", fh.read())
        except OSError:
            continue
        built = found.group(1).decode(errors="replace") if found else None
        if built and built.split("+")[0] != torch.__version__.split("+")[0]:
            return f" (it was built against torch {built}, and this is torch {torch.__version__})"
    return ""


if os.environ.get("INTERPGAN_BACKEND", "").strip().lower() == "reference":
    unavailable_reason = "forced by INTERPGAN_BACKEND=reference"
else:
    try:
        from interpgan_ext import _C  # noqa: F811  (registers torch.ops.interpgan.*)
    except (ImportError, OSError) as exc:  # not built, or built against another torch / CUDA
        unavailable_reason = f"{type(exc).__name__}: {exc}" + _built_against_another_torch(os.path.dirname(__file__))
        warnings.warn(
            "interpgan_ext: the compiled ops could not be loaded, so the slower pure-PyTorch reference is used. "
            f"Reason: {unavailable_reason}. Rebuild with `pip install --no-build-isolation --force-reinstall "
            "--no-deps .` (set INTERPGAN_BACKEND=reference to silence this).",
            RuntimeWarning,
            stacklevel=2,
        )


def cuda_version_mismatch():
    """A message if the extension was compiled with another major CUDA than torch's, else None.

    Within a major version CUDA keeps binary compatibility (the extension then runs on torch's libcudart), so a
    toolkit of 13.0 under torch's 13.2 needs no rebuild, as torch's own build of extensions says."""
    if _C is None or not _C.with_cuda or torch.version.cuda is None:
        return None
    ext_major, ext_minor = _C.cuda_version // 1000, (_C.cuda_version % 1000) // 10
    torch_major = int(str(torch.version.cuda).split(".")[0])
    if ext_major != torch_major:
        return (
            f"interpgan_ext was compiled with CUDA {ext_major}.{ext_minor} but torch uses CUDA {torch.version.cuda}; "
            f"rebuild it with a CUDA {torch_major}.x toolkit (nvcc) on PATH or in CUDA_HOME: "
            "pip install --no-build-isolation --force-reinstall --no-deps ."
        )
    return None


def torch_uses_openmp() -> bool:
    """Whether torch's intra-op thread pool is OpenMP (the Linux wheels), which the extension must then share."""
    return "OpenMP" in torch.__config__.parallel_info().split("ATen parallel backend:")[-1]


def serial_cpu_kernels():
    """A message if torch's CPU thread pool is OpenMP but the extension was compiled without it, else None:
    its CPU kernels would then run on one thread (at::parallel_for is compiled into the extension)."""
    if _C is None or getattr(_C, "cpu_parallel", None) is not None or torch.get_num_threads() == 1:
        return None
    if not torch_uses_openmp():
        return None
    because = getattr(_C, "no_openmp_because", None)  # setup.py's reason; builds before 2026-12-07 lack it
    return (
        "interpgan_ext was compiled without OpenMP, so its CPU kernels run on one thread instead of "
        f"{torch.get_num_threads()}{f' ({because})' if because else ''}; rebuild it with a compiler that supports "
        "OpenMP: pip install --no-build-isolation --force-reinstall --no-deps ."
    )


def cpu_threads_note():
    """How many threads the CPU kernels' parallel loops run on, beside torch's number: they differ where the
    extension's OpenMP runtime is not torch's (a Clang build on Linux, say), which torch.set_num_threads then misses."""
    threads, torch_threads = _C.cpu_parallel_threads(), torch.get_num_threads()
    note = f"{threads} (torch: {torch_threads})"
    if threads != torch_threads and torch_uses_openmp() and getattr(_C, "cpu_parallel", None):
        note += ": the extension's OpenMP runtime is not torch's, so torch.set_num_threads does not set its threads"
    return note


_mismatch = "; ".join(m for m in (cuda_version_mismatch(), serial_cpu_kernels()) if m)
if _mismatch:
    warnings.warn(_mismatch, RuntimeWarning, stacklevel=2)

_warned_cuda_fallback = False


def has_extension():
    return _C is not None


def has_cuda_kernels():
    return _C is not None and bool(_C.with_cuda)


def under_func_transform() -> bool:
    """Whether a torch.func transform (grad, vjp, jacrev, vmap, ...) is active. The compiled ops' autograd is C++,
    which those transforms cannot run ("cannot use C++ torch::autograd::Function with functorch transforms"), so
    there the wrappers run the reference, which they differentiate and batch. (~50 ns a call.)"""
    return not torch.compiler.is_compiling() and torch._C._functorch.peek_interpreter_stack() is not None


def use_compiled(t: torch.Tensor) -> bool:
    """True when the compiled kernel serves a tensor on t's device (and no torch.func transform is active); warns
    once when CUDA falls back."""
    global _warned_cuda_fallback
    if _C is None or under_func_transform():
        return False
    if t.device.type == "cpu":
        return True
    if t.device.type == "cuda":
        if _C.with_cuda:
            return True
        if not _warned_cuda_fallback:
            _warned_cuda_fallback = True
            warnings.warn(
                f"interpgan_ext: CUDA tensors given, but the extension was built without CUDA kernels ({no_cuda_because()}); "
                "using the pure-PyTorch reference on the GPU. Rebuild on a machine with nvcc and a CUDA build of torch: "
                "pip install --no-build-isolation --force-reinstall --no-deps .",
                RuntimeWarning,
                stacklevel=3,
            )
    return False


def no_cuda_because() -> str:
    """Why the extension has no CUDA kernels, as its build recorded it (builds before that record say less)."""
    return getattr(_C, "no_cuda_because", None) or "the build did not record why"


def backend_name(device="cpu") -> str:
    """'cuda', 'cpu-ext' or 'reference': what serves tensors on `device`."""
    device = torch.device(device)
    if _C is None:
        return "reference"
    if device.type == "cuda":
        return "cuda" if _C.with_cuda else "reference"
    return "cpu-ext" if device.type == "cpu" else "reference"


class BuildInfo(dict):
    """A dict that prints as aligned `key: value` lines."""

    def __str__(self):
        width = max(len(k) for k in self)
        return "\n".join(f"{k.ljust(width)} : {v}" for k, v in self.items())


def info() -> BuildInfo:
    """Which backend runs the ops, and how the extension was built."""
    cuda_ok = torch.cuda.is_available()
    out = BuildInfo()
    out["backend"] = backend_name("cuda" if cuda_ok else "cpu")
    out["backend_cpu"] = backend_name("cpu")
    out["backend_cuda"] = backend_name("cuda") if cuda_ok else "n/a (no GPU visible)"
    out["extension"] = "loaded" if _C is not None else f"not loaded ({unavailable_reason})"
    out["torch"] = torch.__version__
    out["torch_cuda"] = torch.version.cuda
    if _C is not None:
        out["ext_built_with_torch"] = _C.torch_version
        out["ext_cpu_parallel"] = getattr(_C, "cpu_parallel", None) or "none: one thread"
        if getattr(_C, "no_openmp_because", None) and torch_uses_openmp():
            out["ext_no_openmp_because"] = _C.no_openmp_because
        if hasattr(_C, "cpu_parallel_threads"):  # builds before 2026-12-07 lack it
            out["ext_cpu_threads"] = cpu_threads_note()
        if hasattr(_C, "cpu_vector_code"):  # builds before 2026-12-07 lack it
            out["ext_cpu_vector_code"] = _C.cpu_vector_code  # avx2 / sse2 (x86-64), portable (arm64, ...)
        if hasattr(_C, "cpu_cache_stats"):  # builds before the cache lack it
            out["ext_cpu_cache_mb"] = _C.cpu_cache_stats()["limit_bytes"] >> 20  # INTERPGAN_CPU_CACHE_MB; 0 = off
        out["ext_cuda_kernels"] = bool(_C.with_cuda)
        if not _C.with_cuda:
            out["ext_no_cuda_because"] = no_cuda_because()
        if _C.with_cuda:
            out["ext_cuda_version"] = f"{_C.cuda_version // 1000}.{(_C.cuda_version % 1000) // 10}"
            out["ext_cuda_archs"] = _C.cuda_archs
            # group_energy's product kernels on CUDA: the measured default, or the staged candidates (README)
            out["ext_cuda_products"] = os.environ.get("INTERPGAN_CUDA_PRODUCTS") or "direct"
    if _mismatch:
        out["warning"] = _mismatch
    return out
