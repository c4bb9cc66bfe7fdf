"""Build of interpgan_ext and its compiled ops (interpgan_ext._C).

    pip install --no-build-isolation .

Environment switches:
    INTERPGAN_SKIP_CUDA=1     build the CPU kernels only, even where CUDA is available
    INTERPGAN_FORCE_CUDA=1    fail, instead of falling back to CPU-only, when CUDA cannot be built (no nvcc,
                              a CPU build of torch, or a compile or link error in the CUDA kernels)
    INTERPGAN_SKIP_EXT=1      build no extension at all (pure-PyTorch reference backend)
    INTERPGAN_REQUIRE_EXT=1   fail, instead of installing without compiled ops (or building without OpenMP), when
                              the C++ build fails
    INTERPGAN_ALLOW_TORCH_MISMATCH=1  build in pip's isolated environment even when its torch is not the one
                              installed here (pip wheel for another environment; see isolated_torch_mismatch)
    TORCH_CUDA_ARCH_LIST      e.g. "8.0;9.0" (default: the visible GPU, else a common list)
    MAX_JOBS                  parallel compile jobs (ninja)
    CUDA_HOME                 the CUDA toolkit (default: found from nvcc on PATH, then /usr/local/cuda)
"""
import glob
import os
import re
import shutil
import site
import sys
import sysconfig
from importlib import metadata

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ARCHS = "8.0;8.6;8.9;9.0+PTX"
SYSTEM_CUDA = "/usr/local/cuda"


def env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def pip_cuda_homes():
    """The CUDA 13+ pip wheels' one folder (nvidia/cu13): a toolkit once nvcc's wheels are there too
    (PIP_NVCC_WHEELS), beside the runtime that torch brings."""
    return [home for entry in sys.path for home in sorted(glob.glob(os.path.join(entry, "nvidia", "cu[0-9]*")))]


PIP_NVCC_WHEELS = ("nvidia-cuda-nvcc", "nvidia-nvvm", "nvidia-cuda-crt", "nvidia-cuda-cccl")


def pip_nvcc_specs(cuda_version):
    """The pip wheels of an nvcc for this CUDA version where they land beside torch's runtime (CUDA 13 on: all in
    nvidia/cu13), else [] (CUDA 12's wheels are laid out otherwise)."""
    if int(cuda_version.split(".")[0]) < 13:
        return []
    return [f"{name}=={cuda_version}.*" for name in PIP_NVCC_WHEELS]


def pip_nvcc_hint(cuda_version):
    specs = pip_nvcc_specs(cuda_version)
    return f"; pip install {' '.join(specs)} gives torch's CUDA its compiler" if specs else ""


def nvcc_wheels_to_install(torch):
    """pip_nvcc_specs where a GPU is here and no nvcc is (python/run.sh installs them: torch itself needs only the
    driver, the CUDA kernels a compiler), else []."""
    if env_flag("INTERPGAN_SKIP_CUDA") or torch.version.cuda is None or not torch.cuda.is_available():
        return []
    locate_cuda_home()
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return []
    return pip_nvcc_specs(torch.version.cuda)


def cudart_link_dir(cuda_home):
    """[] where the toolkit has the libcudart.so that -lcudart links. Pip's CUDA runtime has only libcudart.so.13,
    the name programs load: then a build folder whose libcudart.so points at it."""
    if glob.glob(os.path.join(cuda_home, "lib*", "libcudart.so")):
        return []
    versioned = sorted(glob.glob(os.path.join(cuda_home, "lib*", "libcudart.so.[0-9]*")))
    if not versioned:
        return []
    try:
        folder = os.path.join(ROOT, "build", "cudart-link")
        os.makedirs(folder, exist_ok=True)
    except OSError:  # a read-only checkout
        import tempfile

        folder = tempfile.mkdtemp(prefix="interpgan-cudart-link-")
    link = os.path.join(folder, "libcudart.so")
    if os.path.lexists(link):
        os.remove(link)
    os.symlink(versioned[0], link)
    return [folder]


def locate_cuda_home():
    """CUDA_HOME must be known before torch.utils.cpp_extension is imported: it reads it once. A toolkit's nvcc
    on PATH, then /usr/local/cuda, then nvcc from pip (pip_cuda_homes)."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    nvcc = shutil.which("nvcc")
    candidates = [os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))] if nvcc else []
    candidates += [SYSTEM_CUDA] + pip_cuda_homes()
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


def openmp_flags(torch, platform=sys.platform, probe=None):
    """(compile flags, link flags, why not) for OpenMP where torch's own thread pool is OpenMP (its Linux and macOS
    wheels). at::parallel_for is a header template: compiled without OpenMP, _OPENMP is undefined and every
    parallel_for in the extension runs on one thread. The runtime must be torch's, or the kernels would run on a
    second thread pool that torch.set_num_threads does not reach.

    - Linux: -fopenmp. GCC's libgomp.so.1 has the soname of the libgomp torch loads first, so that one is used.
    - macOS: Apple's Clang has no -fopenmp driver flag, and torch's libomp.dylib (with its omp.h in torch/include)
      is the runtime. Each way of building against it below is tried on a probe module (openmp_probe), and the
      first whose parallel regions follow torch.set_num_threads is used; if none does, the build has no OpenMP.
    """
    if "OpenMP" not in torch.__config__.parallel_info().split("ATen parallel backend:")[-1]:
        return [], [], None
    if os.name == "nt" or platform == "win32":  # MSVC would need /openmp, and cannot build the kernels anyway
        return [], [], "Windows builds have no OpenMP"
    if platform != "darwin":
        return ["-fopenmp"], ["-fopenmp"], None
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    candidates = [
        # symbols bound at load to the libomp that torch loaded (Python links extensions -undefined dynamic_lookup)
        (["-Xclang", "-fopenmp"], []),
        (["-Xclang", "-fopenmp"], ["-Wl,-undefined,dynamic_lookup"]),  # a Python whose LDSHARED does not say so
        (["-Xclang", "-fopenmp"], [f"-L{torch_lib}", "-lomp", f"-Wl,-rpath,{torch_lib}"]),  # torch's libomp by name
        (["-fopenmp"], ["-fopenmp"]),  # GCC, or a Clang with the driver flag: kept only if its runtime is torch's
    ]
    probe = probe or openmp_probe
    failures = []
    for cflags, ldflags in candidates:
        how = " ".join(cflags) + (f", linked with {' '.join(ldflags)}" if ldflags else "")
        failure = probe(cflags, ldflags)
        if failure is None:
            print(f"interpgan_ext: OpenMP: {how}", file=sys.stderr)
            return cflags, ldflags, None
        failures.append(f"{how}: {failure}")
    reason = "no way of building with torch's OpenMP worked (" + "; ".join(failures) + ")"
    print(f"interpgan_ext: building without OpenMP, so the CPU kernels run on one thread: {reason}", file=sys.stderr)
    return [], [], reason[:1000]


OPENMP_PROBE_SOURCE = r"""
#include <Python.h>
#include <omp.h>
#ifndef _OPENMP
#error "these flags do not enable OpenMP"
#endif
static PyObject* team_size(PyObject*, PyObject*) {
  int size = 0;
#pragma omp parallel
  {
#pragma omp single
    size = omp_get_num_threads();
  }
  return PyLong_FromLong(size);
}
static PyMethodDef methods[] = {{"team_size", team_size, METH_NOARGS, nullptr}, {nullptr, nullptr, 0, nullptr}};
static PyModuleDef module = {PyModuleDef_HEAD_INIT, "interpgan_openmp_probe", nullptr, -1, methods};
PyMODINIT_FUNC PyInit_interpgan_openmp_probe(void) { return PyModule_Create(&module); }
"""

# Imports the probe after torch, as interpgan_ext imports _C, and sizes its parallel region under two thread counts.
OPENMP_PROBE_RUN = """
import importlib.util, sys, torch
spec = importlib.util.spec_from_file_location("interpgan_openmp_probe", sys.argv[1])
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)
sizes = []
for n in (3, 2):
    torch.set_num_threads(n)
    sizes.append(probe.team_size())
print(*sizes)
"""


def openmp_probe(cflags, ldflags):
    """None if a small extension module built with these flags, as the real one is, imports after torch in a fresh
    Python and runs its parallel regions on torch's OpenMP threads (their number follows torch.set_num_threads);
    else what went wrong. It is compiled as cpp_extension compiles ($CXX, default c++, with the rest of Python's
    compiler line) and linked by distutils, as setuptools links the extension."""
    import shlex
    import subprocess
    import tempfile

    from distutils.ccompiler import new_compiler  # setuptools' copy, which setup.py's import of setuptools installed
    from distutils.errors import DistutilsExecError
    from distutils.sysconfig import customize_compiler
    from torch.utils import cpp_extension

    said = []

    def run(command, **_):  # the compiler's or linker's first complaint is kept for the reason, not printed
        done = subprocess.run([str(arg) for arg in command], capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            lines = (done.stdout + done.stderr).strip().splitlines() or [f"exit code {done.returncode}"]
            complaints = [ln for ln in lines if re.search("error|cannot find|undefined", ln) and "collect2" not in ln]
            said.append((complaints or lines)[0].strip()[:200])
            raise DistutilsExecError(said[-1])

    compiler = new_compiler()
    customize_compiler(compiler)
    compiler.spawn = compiler.call = run  # distutils runs its commands through one or the other, by version
    with tempfile.TemporaryDirectory() as tmp:
        source, obj = os.path.join(tmp, "interpgan_openmp_probe.cpp"), os.path.join(tmp, "interpgan_openmp_probe.o")
        module = os.path.join(tmp, "interpgan_openmp_probe" + sysconfig.get_config_var("EXT_SUFFIX"))
        with open(source, "w") as fh:
            fh.write(OPENMP_PROBE_SOURCE)
        includes = [f"-I{d}" for d in cpp_extension.include_paths() + [sysconfig.get_paths()["include"]]]
        try:
            run(shlex.split(cpp_extension.get_cxx_compiler()) + compiler.compiler_so[1:] + includes
                + ["-c", source, "-o", obj] + cflags)
            compiler.link_shared_object([obj], module, extra_postargs=ldflags, target_lang="c++")
        except Exception as exc:  # noqa: BLE001  (distutils' errors differ by version; a missing compiler is OSError)
            return f"does not build ({said[-1] if said else exc})"
        try:
            loaded = subprocess.run([sys.executable, "-c", OPENMP_PROBE_RUN, module], capture_output=True, text=True,
                                    timeout=300)
        except subprocess.TimeoutExpired:
            return "its probe did not finish in 300 s"
        if loaded.returncode != 0:
            last = (loaded.stderr.strip().splitlines() or [f"exit code {loaded.returncode}"])[-1]
            return f"does not load after torch ({last[:200]})"
        if loaded.stdout.split() != ["3", "2"]:
            return (f"its parallel regions ran {loaded.stdout.strip()} threads where torch set 3 then 2: "
                    "its OpenMP runtime is not torch's")
    return None


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
    # cpp_extension takes /usr/local/cuda when it exists, with or without an nvcc in it
    have_nvcc = cpp_extension.CUDA_HOME is not None and os.path.exists(
        os.path.join(cpp_extension.CUDA_HOME, "bin", "nvcc.exe" if os.name == "nt" else "nvcc"))
    have_cuda = torch.version.cuda is not None and have_nvcc
    reason = "INTERPGAN_SKIP_CUDA=1"
    if want_cuda and not have_cuda:
        reason = "torch is a CPU build" if torch.version.cuda is None else "nvcc / CUDA_HOME not found" + pip_nvcc_hint(
            torch.version.cuda)
        if env_flag("INTERPGAN_FORCE_CUDA"):
            raise RuntimeError(f"INTERPGAN_FORCE_CUDA=1 but CUDA kernels cannot be built: {reason}")
        print(f"interpgan_ext: building CPU kernels only ({reason})", file=sys.stderr)
    use_cuda = want_cuda and have_cuda

    torch_version = torch.__version__.split("+")[0]
    define_macros = [("INTERPGAN_BUILT_WITH_TORCH", f'"{torch_version}"')]
    omp_cflags, omp_ldflags, no_openmp_because = openmp_flags(torch)
    if no_openmp_because:
        define_macros.append(("INTERPGAN_NO_OPENMP_BECAUSE", c_string(no_openmp_because)))
    # -fno-math-errno (as torch builds itself): sqrt on vectors becomes one instruction (csrc/cpu/normal_noise.h).
    # -Wno-psabi: GCC's notes that passing a vector argument changed ABI in GCC 4.6 (the functions that take vectors
    # are all inlined: csrc/cpu/simd.h); its diagnostic pragma does not silence them.
    cxx_flags = ["-O3", "-fno-math-errno", "-Wno-psabi"] + omp_cflags  # the C++ standard is the one cpp_extension picks
    nvcc_flags = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
    include_dirs = [os.path.join(ROOT, "csrc")]
    library_dirs = []
    if use_cuda:
        archs = cuda_arch_note()
        define_macros += [("INTERPGAN_WITH_CUDA", None), ("INTERPGAN_CUDA_ARCHS", f'"{archs}"')]
        extra_inc, extra_lib = pip_cuda_dirs()
        # The toolkit's own headers first; the wheels only fill in what a minimal toolkit lacks.
        include_dirs += [os.path.join(cpp_extension.CUDA_HOME, "include")] + extra_inc
        library_dirs += extra_lib + cudart_link_dir(cpp_extension.CUDA_HOME)
        ext = cpp_extension.CUDAExtension(
            "interpgan_ext._C",
            sources + cuda_sources,
            include_dirs=include_dirs,
            library_dirs=library_dirs,
            define_macros=define_macros,
            extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
            extra_link_args=omp_ldflags,
        )
    else:
        ext = cpp_extension.CppExtension(
            "interpgan_ext._C",
            sources,
            include_dirs=include_dirs,
            define_macros=define_macros + [("INTERPGAN_NO_CUDA_BECAUSE", c_string(reason))],
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=omp_ldflags,
        )
    ext.openmp_flags = (omp_cflags, omp_ldflags)  # what with_fallbacks drops if the build fails with them
    build_ext = cpp_extension.BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)
    return [ext], {"build_ext": with_fallbacks(build_ext)}


def c_string(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def with_fallbacks(build_ext):
    """build_ext that, when a build fails, builds what it can and says so, loudly.

    - The CUDA kernels fail to compile or link (a toolkit that does not fit torch's CUDA): the CPU kernels are built
      alone. At import, a GPU user is told that CUDA tensors run the reference ops, and why (interpgan_ext.info()).
    - The build with OpenMP fails (a Clang without its OpenMP runtime): the kernels are built without it, and run on
      one thread, with a warning at import.
    - The C++ build fails too (no working compiler): the package installs without compiled ops, and runs its
      pure-PyTorch reference, with a warning at import.
    INTERPGAN_FORCE_CUDA=1 makes the first an error, INTERPGAN_REQUIRE_EXT=1 the others (CI sets both).
    """

    class BuildExtWithFallbacks(build_ext):
        def build_extensions(self):
            # BuildExtension wraps the compiler's methods and appends to the flags on each call: a retry starts
            # from the unwrapped methods and the flags as given
            unwrapped = dict(vars(self.compiler))
            ext = self.extensions[0]
            given = {lang: list(flags) for lang, flags in ext.extra_compile_args.items()}
            lenient = not (env_flag("INTERPGAN_REQUIRE_EXT") or env_flag("INTERPGAN_FORCE_CUDA"))
            while True:
                try:
                    return super().build_extensions()
                except Exception as exc:  # noqa: BLE001  (distutils' CompileError, ninja's, torch's CUDA checks)
                    what = failed_step(exc)
                    if any(src.endswith(".cu") for src in ext.sources) and not env_flag("INTERPGAN_FORCE_CUDA"):
                        reason = f"the CUDA build failed ({what}); rebuild with INTERPGAN_FORCE_CUDA=1 to stop at its error"
                        banner(reason, "Building the CPU kernels alone: on a GPU the ops will run their pure-PyTorch "
                                       "reference.")
                        drop_cuda(ext, given, reason)
                    elif ext.openmp_flags[0] and lenient:
                        reason = f"the build with OpenMP failed ({what}); rebuild with INTERPGAN_REQUIRE_EXT=1 to stop " \
                                 "at its error"
                        banner(reason, "Building without OpenMP: the CPU kernels will run on one thread." +
                               ("\nGCC builds against torch's own OpenMP runtime, libgomp (CC=gcc CXX=g++); Clang "
                                "needs its libomp (Debian/Ubuntu: libomp-dev), a second thread pool beside torch's."
                                if sys.platform.startswith("linux") else ""))
                        drop_openmp(ext, given, reason)
                    elif lenient:
                        banner(f"the C++ build failed ({what}); rebuild with INTERPGAN_REQUIRE_EXT=1 to stop at its "
                               "error", "Installing without compiled ops: the package runs its pure-PyTorch reference "
                                        "ops (slower), and says so when imported.")
                        self.extensions = []
                        return None
                    else:
                        raise
                    vars(self.compiler).clear()
                    vars(self.compiler).update(unwrapped)
                    ext.extra_compile_args = {lang: list(flags) for lang, flags in given.items()}

    return BuildExtWithFallbacks


def failed_step(exc):
    """A failed build step in a line. The compiler's or linker's own error is in the build's output, not in the
    exception: distutils' says which command failed, as its whole argument list (hundreds of paths)."""
    text = " ".join(str(exc).split())  # torch's messages span lines
    # subprocess's wording (torch's and older setuptools' spawn), then newer setuptools'
    command = (re.match(r"Command '\[(.*?)\]' returned non-zero exit status (-?\d+)", text)
               or re.match(r"command ('[^']*') failed with exit code (-?\d+)", text))
    if command:
        args = re.findall(r"'([^']*)'", command.group(1))
        program = os.path.basename(args[0]) if args else "the compiler"
        step = "linking with " if "-shared" in args else "compiling with " if "-c" in args else ""
        return f"{step}{program} failed, exit status {command.group(2)}: its error is in the build's output"
    if text.startswith("Error compiling objects"):
        return f"{text.rstrip('.')}: the compiler's errors are in the build's output"
    return text[:300] or type(exc).__name__


def banner(reason, consequence):
    rule = "=" * 100
    print(f"\n{rule}\ninterpgan_ext: {reason}.\n{consequence}\n{rule}", file=sys.stderr)


def drop_openmp(ext, given, reason):
    """Takes the OpenMP flags out of the extension and of its compile flags as given, in place."""
    cflags, ldflags = ext.openmp_flags
    given["cxx"] = [flag for flag in given["cxx"] if flag not in cflags]
    ext.extra_link_args = [flag for flag in ext.extra_link_args if flag not in ldflags]
    ext.define_macros.append(("INTERPGAN_NO_OPENMP_BECAUSE", c_string(reason)))
    ext.openmp_flags = ([], [])


def drop_cuda(ext, given, reason):
    """Turns the CUDAExtension into the CppExtension of the same sources, in place (given: its compile flags)."""
    ext.sources = [src for src in ext.sources if not src.endswith(".cu")]
    ext.define_macros = [m for m in ext.define_macros if m[0] not in ("INTERPGAN_WITH_CUDA", "INTERPGAN_CUDA_ARCHS")]
    ext.define_macros.append(("INTERPGAN_NO_CUDA_BECAUSE", c_string(reason)))
    ext.libraries = [lib for lib in ext.libraries if lib not in ("cudart", "c10_cuda", "torch_cuda")]
    given.pop("nvcc", None)


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
