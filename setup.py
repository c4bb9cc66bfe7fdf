"""Build of interpgan_ext and its compiled ops (interpgan_ext._C).

    pip install --no-build-isolation .

Environment switches:
    INTERPGAN_SKIP_CUDA=1     build the CPU kernels only, even where CUDA is available
    INTERPGAN_FORCE_CUDA=1    fail, instead of falling back to CPU-only, when CUDA cannot be built (no nvcc,
                              a CPU build of torch, or a compile or link error in the CUDA kernels)
    INTERPGAN_SKIP_EXT=1      build no extension at all (pure-PyTorch reference backend)
    INTERPGAN_REQUIRE_EXT=1   fail, instead of installing without compiled ops, when the C++ build fails
    INTERPGAN_ALLOW_TORCH_MISMATCH=1  build in pip's isolated environment even when its torch is not the one
                              installed here (pip wheel for another environment; see isolated_torch_mismatch)
    TORCH_CUDA_ARCH_LIST      e.g. "8.0;9.0" (default: the visible GPU, else a common list)
    MAX_JOBS                  parallel compile jobs (ninja)
    CUDA_HOME                 the CUDA toolkit (default: found from nvcc on PATH, then /usr/local/cuda)
"""
import glob
import os
import shutil
import site
import sys
import sysconfig
from importlib import metadata

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCHS = "8.0;8.6;8.9;9.0+PTX"


def env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def locate_cuda_home():
    """CUDA_HOME must be known before torch.utils.cpp_extension is imported: it reads it once."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    nvcc = shutil.which("nvcc")
    candidates = [os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))] if nvcc else []
    candidates.append("/usr/local/cuda")
    for home in candidates:
        # a real toolkit root has the runtime headers next to nvcc (not, e.g., /usr/local with a shim nvcc)
        if os.path.exists(os.path.join(home, "bin", "nvcc")) and os.path.exists(
            os.path.join(home, "include", "cuda_runtime_api.h")
        ):
            os.environ["CUDA_HOME"] = home
            return


def pip_cuda_dirs():
    """Include and library folders of the CUDA pip wheels (nvidia/cu13/include, ...).

    A minimal toolkit (nvcc + cudart) may lack headers that torch's own headers include (cuBLAS, cuSPARSE,
    cuDNN, NCCL); the CUDA build of torch installs them as wheels next to itself.
    """
    includes, libs = [], []
    for entry in sys.path:
        base = os.path.join(entry, "nvidia")
        if not os.path.isdir(base):
            continue
        includes += sorted(glob.glob(os.path.join(base, "*", "include")))
        libs += sorted(glob.glob(os.path.join(base, "*", "lib")))
    return includes, libs


def isolated_torch_mismatch(torch_file, torch_version, purelib, usersite=None):
    """A message when torch was imported from outside this environment's site-packages and the user's (from pip's
    isolated build environment, where pip installs the newest torch) and this environment has another torch, else None.

    The extension would be compiled against the build environment's torch and would not load with the installed one
    (torch keeps no C++ ABI across versions): the package would run its reference ops, after a download of several GB.
    """
    if any(os.path.abspath(torch_file).startswith(os.path.abspath(d) + os.sep) for d in (purelib, usersite) if d):
        return None
    installed = [d.version for d in metadata.distributions(path=[purelib]) if (d.metadata["Name"] or "").lower() == "torch"]
    public = lambda v: v.split("+")[0]  # noqa: E731  ("2.14.1+cu130" imports as the wheel "2.14.1")
    if not installed or public(installed[0]) == public(torch_version):
        return None
    return (
        f"interpgan_ext: pip is building in an isolated environment against torch {torch_version}, but this environment "
        f"has torch {installed[0]}: the compiled ops would not load with it. Build against the installed torch:\n"
        "    pip install --no-build-isolation .\n"
        "(INTERPGAN_ALLOW_TORCH_MISMATCH=1 builds anyway, e.g. a wheel for another environment.)"
    )


def cuda_arch_note():
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return os.environ["TORCH_CUDA_ARCH_LIST"]
    import torch

    if torch.cuda.is_available():
        return ";".join(sorted({"%d.%d" % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}))
    os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_ARCHS  # no GPU to detect: a common list, not every arch
    return DEFAULT_ARCHS


def openmp_flags(torch):
    """-fopenmp where torch's own thread pool is OpenMP (Linux wheels). at::parallel_for is a header
    template: compiled without it, _OPENMP is undefined and every parallel_for in the extension runs on
    one thread, silently. The runtime is torch's: its libgomp.so.1 is loaded first, and the soname matches."""
    if "OpenMP" not in torch.__config__.parallel_info().split("ATen parallel backend:")[-1]:
        return []
    if sys.platform == "darwin" or os.name == "nt":  # Apple clang has no -fopenmp; MSVC would need /openmp
        print("interpgan_ext: building without OpenMP: CPU kernels run on one thread", file=sys.stderr)
        return []
    return ["-fopenmp"]


def build_extensions():
    if env_flag("INTERPGAN_SKIP_EXT"):
        return [], {}
    locate_cuda_home()
    import torch
    from torch.utils import cpp_extension

    mismatch = isolated_torch_mismatch(torch.__file__, torch.__version__, sysconfig.get_paths()["purelib"],
                                       site.getusersitepackages())
    if mismatch and not env_flag("INTERPGAN_ALLOW_TORCH_MISMATCH"):
        raise SystemExit(mismatch)

    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")) + glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    want_cuda = not env_flag("INTERPGAN_SKIP_CUDA")
    have_cuda = torch.version.cuda is not None and cpp_extension.CUDA_HOME is not None
    reason = "INTERPGAN_SKIP_CUDA=1"
    if want_cuda and not have_cuda:
        reason = "torch is a CPU build" if torch.version.cuda is None else "nvcc / CUDA_HOME not found"
        if env_flag("INTERPGAN_FORCE_CUDA"):
            raise RuntimeError(f"INTERPGAN_FORCE_CUDA=1 but CUDA kernels cannot be built: {reason}")
        print(f"interpgan_ext: building CPU kernels only ({reason})", file=sys.stderr)
    use_cuda = want_cuda and have_cuda

    torch_version = torch.__version__.split("+")[0]
    define_macros = [("INTERPGAN_BUILT_WITH_TORCH", f'"{torch_version}"')]
    omp = openmp_flags(torch)
    # -fno-math-errno (as torch builds itself): sqrt on vectors becomes one instruction (csrc/cpu/normal_noise.h).
    # -Wno-psabi: GCC's notes that passing a vector argument changed ABI in GCC 4.6 (the functions that take vectors
    # are all inlined: csrc/cpu/simd.h); its diagnostic pragma does not silence them.
    cxx_flags = ["-O3", "-fno-math-errno", "-Wno-psabi"] + omp  # the C++ standard is the one cpp_extension picks
    nvcc_flags = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
    include_dirs = [os.path.join(ROOT, "csrc")]
    library_dirs = []
    if use_cuda:
        archs = cuda_arch_note()
        define_macros += [("INTERPGAN_WITH_CUDA", None), ("INTERPGAN_CUDA_ARCHS", f'"{archs}"')]
        extra_inc, extra_lib = pip_cuda_dirs()
        # The toolkit's own headers first; the wheels only fill in what a minimal toolkit lacks.
        include_dirs += [os.path.join(cpp_extension.CUDA_HOME, "include")] + extra_inc
        library_dirs += extra_lib
        ext = cpp_extension.CUDAExtension(
            "interpgan_ext._C",
            sources + cuda_sources,
            include_dirs=include_dirs,
            library_dirs=library_dirs,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
            extra_link_args=omp,
        )
    else:
        ext = cpp_extension.CppExtension(
            "interpgan_ext._C",
            sources,
            include_dirs=include_dirs,
            define_macros=define_macros + [("INTERPGAN_NO_CUDA_BECAUSE", c_string(reason))],
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=omp,
        )
    build_ext = cpp_extension.BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)
    return [ext], {"build_ext": with_fallbacks(build_ext)}


def c_string(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def with_fallbacks(build_ext):
    """build_ext that, when a build fails, builds what it can and says so, loudly.

    - The CUDA kernels fail to compile or link (a toolkit that does not fit torch's CUDA): the CPU kernels are built
      alone. At import, a GPU user is told that CUDA tensors run the reference ops, and why (interpgan_ext.info()).
    - The C++ build fails too (no working compiler): the package installs without compiled ops, and runs its
      pure-PyTorch reference, with a warning at import.
    INTERPGAN_FORCE_CUDA=1 makes the first an error, INTERPGAN_REQUIRE_EXT=1 the second (CI sets both).
    """

    class BuildExtWithFallbacks(build_ext):
        def build_extensions(self):
            # BuildExtension wraps the compiler's methods and appends to the flags on each call: a retry starts
            # from the unwrapped methods and the flags as given
            unwrapped = dict(vars(self.compiler))
            ext = self.extensions[0]
            cxx_flags = list(ext.extra_compile_args["cxx"])
            while True:
                try:
                    return super().build_extensions()
                except Exception as exc:  # noqa: BLE001  (distutils' CompileError, ninja's, torch's CUDA checks)
                    what = " ".join(str(exc).split())[:300] or type(exc).__name__  # torch's messages span lines
                    if any(src.endswith(".cu") for src in ext.sources) and not env_flag("INTERPGAN_FORCE_CUDA"):
                        reason = f"the CUDA build failed ({what}); rebuild with INTERPGAN_FORCE_CUDA=1 to stop at its error"
                        banner(reason, "Building the CPU kernels alone: on a GPU the ops will run their pure-PyTorch "
                                       "reference.")
                        drop_cuda(ext, cxx_flags, reason)
                    elif not (env_flag("INTERPGAN_REQUIRE_EXT") or env_flag("INTERPGAN_FORCE_CUDA")):
                        banner(f"the C++ build failed ({what}); rebuild with INTERPGAN_REQUIRE_EXT=1 to stop at its "
                               "error", "Installing without compiled ops: the package runs its pure-PyTorch reference "
                                        "ops (slower), and says so when imported.")
                        self.extensions = []
                        return None
                    else:
                        raise
                    vars(self.compiler).clear()
                    vars(self.compiler).update(unwrapped)

    return BuildExtWithFallbacks


def banner(reason, consequence):
    rule = "=" * 100
    print(f"\n{rule}\ninterpgan_ext: {reason}.\n{consequence}\n{rule}", file=sys.stderr)


def drop_cuda(ext, cxx_flags, reason):
    """Turns the CUDAExtension into the CppExtension of the same sources, in place."""
    ext.sources = [src for src in ext.sources if not src.endswith(".cu")]
    ext.define_macros = [m for m in ext.define_macros if m[0] not in ("INTERPGAN_WITH_CUDA", "INTERPGAN_CUDA_ARCHS")]
    ext.define_macros.append(("INTERPGAN_NO_CUDA_BECAUSE", c_string(reason)))
    ext.libraries = [lib for lib in ext.libraries if lib not in ("cudart", "c10_cuda", "torch_cuda")]
    ext.extra_compile_args = {"cxx": cxx_flags}


def main():
    ext_modules, cmdclass = build_extensions()
    setup(
        name="interpgan_ext",
        version="0.1.0",
        description="Interpretable GANs (Li et al., AAAI 2022) with fused C++/CUDA ops for PyTorch",
        packages=find_packages(include=["interpgan_ext", "interpgan_ext.*"]),
        python_requires=">=3.9",
        install_requires=["torch>=2.4", "numpy", "tqdm", "pillow", "scipy", "scikit-learn"],
        extras_require={"test": ["pytest", "scikit-image"], "viz": ["matplotlib", "tensorboard"]},
        entry_points={"console_scripts": ["interpgan=interpgan_ext.cli:main"]},
        ext_modules=ext_modules,
        cmdclass=cmdclass,
        zip_safe=False,
    )


if __name__ == "__main__":  # pip's build backend runs this file as __main__ too; tests import its helpers
    main()
