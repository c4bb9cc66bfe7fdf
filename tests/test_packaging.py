"""How the package builds: the source distribution holds every header it needs, a CUDA build error falls back to
the CPU kernels and a C++ one to no compiled ops (each saying so), pip's isolated build against another torch than the
installed one is refused, and the README names only files that exist."""
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile

import pytest

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


def test_the_cuda_kernels_include_no_curand_header():
    # The CUDA build of torch >= 2.15 no longer installs curand's headers, and a minimal toolkit has none: a CUDA
    # source that includes one fails to compile there (the Langevin kernel draws through ATen's philox_engine).
    cuda_dir = os.path.join(ROOT, "csrc", "cuda")
    for name in os.listdir(cuda_dir):
        with open(os.path.join(cuda_dir, name)) as fh:
            assert not re.search(r"#\s*include\s*[<\"]curand", fh.read()), f"csrc/cuda/{name} includes a curand header"


def _copy_of_the_sources(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "runs", "*.so", "__pycache__",
                                                             "*.egg-info", "bench", ".pytest_cache", "tests", "python"))
    return src


def _environment(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTERPGAN_")}
    env.update(MAX_JOBS=os.environ.get("MAX_JOBS", "2"), **extra)
    return env


BUILD = [sys.executable, "setup.py", "build_ext", "--inplace"]


def _strict_then_lenient_build(src, env, strict_flag, timeout):
    """The build with strict_flag=1 (which must stop at the failure), then without it (which must fall back)."""
    strict = subprocess.run(BUILD, cwd=src, env=dict(env, **{strict_flag: "1"}), capture_output=True, text=True,
                            timeout=timeout)
    lenient = subprocess.run(BUILD, cwd=src, env=env, capture_output=True, text=True, timeout=timeout)
    return strict, lenient


def test_without_a_working_compiler_the_package_installs_without_its_ops(tmp_path):
    src = _copy_of_the_sources(tmp_path)
    env = _environment(INTERPGAN_SKIP_CUDA="1", CXX=str(tmp_path / "no-such-compiler"), CC=str(tmp_path / "no-such-cc"))
    required, done = _strict_then_lenient_build(src, env, "INTERPGAN_REQUIRE_EXT", timeout=600)
    assert required.returncode != 0 and "no-such-compiler" in required.stdout + required.stderr
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "the C++ build failed" in done.stderr and "pure-PyTorch reference" in done.stderr
    # No _C: the package then runs its reference ops and warns at import (test_backend's
    # test_failed_import_warns_and_falls_back; importing the copy here would find the checkout's _C through an
    # editable install's finder).
    assert not list((src / "interpgan_ext").glob("_C*"))


def _run_in_the_copy(src, env, script):
    """The output lines of a script run in a built copy (it imports the copy's package as ig), then whether the
    copy's group_energy agrees with the reference ("True")."""
    script += ("f = torch.randn(3, 5, 4, dtype=torch.float64); W = torch.randn(5, 2, 4, dtype=torch.float64)\n"
               "q = torch.tensor([0, 1, 1, 0, 1])\n"
               "print(torch.allclose(ig.ops.group_energy(f, W, q), ig.ops.group_energy_reference(f, W, q)))\n")
    used = subprocess.run([sys.executable, "-c", script], cwd=src, env=env, capture_output=True, text=True, timeout=300)
    assert used.returncode == 0, used.stderr[-2000:]
    return used.stdout.splitlines()


def _cuda_build_possible():
    """A CUDA build of torch and an nvcc of the same major CUDA (torch refuses to build with another)."""
    import torch

    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
    if torch.version.cuda is None or nvcc is None:
        return False
    found = re.search(r"release (\d+)\.", subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout)
    return found is not None and found.group(1) == torch.version.cuda.split(".")[0]


@pytest.mark.slow
@pytest.mark.skipif(not _cuda_build_possible(), reason="needs a CUDA build of torch and an nvcc of its CUDA (CI has both)")
def test_a_cuda_compile_error_falls_back_to_the_cpu_kernels_and_says_why(tmp_path):
    src = _copy_of_the_sources(tmp_path)
    broken = src / "csrc" / "cuda" / "langevin_step.cu"
    broken.write_text('#error "a deliberate compile error of the test"\n' + broken.read_text())
    env = _environment(TORCH_CUDA_ARCH_LIST="9.0")

    forced, done = _strict_then_lenient_build(src, env, "INTERPGAN_FORCE_CUDA", timeout=900)
    assert forced.returncode != 0 and "a deliberate compile error" in forced.stdout + forced.stderr
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "the CUDA build failed (Error compiling objects" in done.stderr and "INTERPGAN_FORCE_CUDA=1" in done.stderr
    loaded, reason, agrees = _run_in_the_copy(src, env, "import torch, interpgan_ext as ig; i = ig.info()\n"
                                                        "print(i['extension'], i['ext_cuda_kernels'])\n"
                                                        "print(i['ext_no_cuda_because'])\n")
    assert loaded == "loaded False" and "CUDA build failed" in reason and "INTERPGAN_FORCE_CUDA=1" in reason
    assert agrees == "True"


def _module_from(path, name):
    """A script of the repository as a module: not __main__, so it defines its helpers and runs nothing."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _have_a_cpp_compiler():
    return shutil.which(os.environ.get("CXX", "c++").split()[0]) is not None


def _needs_openmp_torch_and_a_compiler():
    from interpgan_ext._backend import torch_uses_openmp

    if not torch_uses_openmp():
        pytest.skip("torch's thread pool is not OpenMP")
    if not _have_a_cpp_compiler():
        pytest.skip("no C++ compiler")


@pytest.mark.slow
def test_the_openmp_probe_keeps_only_flags_whose_parallel_regions_run_on_torchs_threads(tmp_path):
    # What setup.py relies on where it cannot know the right flags (macOS): build a module, load it after torch, and
    # see whether its parallel regions follow torch.set_num_threads.
    _needs_openmp_torch_and_a_compiler()
    setup_py = _module_from("setup.py", "interpgan_setup")
    assert setup_py.openmp_probe(["-fopenmp"], ["-fopenmp"]) is None
    assert "these flags do not enable OpenMP" in setup_py.openmp_probe([], [])
    assert "no_such_library" in setup_py.openmp_probe(["-fopenmp"], ["-lno_such_library"])
    # A runtime that is not torch's: the probe's omp_get_num_threads bound to a definition of its own.
    (tmp_path / "own_omp.c").write_text('__attribute__((visibility("hidden"))) int omp_get_num_threads(void) '
                                        "{ return 7; }\n")
    subprocess.run(["cc", "-fPIC", "-c", str(tmp_path / "own_omp.c"), "-o", str(tmp_path / "own_omp.o")], check=True)
    failure = setup_py.openmp_probe(["-fopenmp"], [str(tmp_path / "own_omp.o"), "-fopenmp"])
    assert failure is not None and "ran 7 7 threads" in failure and "not torch's" in failure


@pytest.mark.slow
def test_macos_openmp_flags_are_the_first_that_the_probe_accepts(capsys):
    _needs_openmp_torch_and_a_compiler()
    import torch

    setup_py = _module_from("setup.py", "interpgan_setup")
    # With the real probe here (GCC): Apple Clang's -Xclang -fopenmp does not build, GCC's -fopenmp runs on torch's
    # libgomp. On a Mac, Apple's Clang would take the first.
    assert setup_py.openmp_flags(torch, platform="darwin") == (["-fopenmp"], ["-fopenmp"], None)
    assert "OpenMP: -fopenmp, linked with -fopenmp" in capsys.readouterr().err
    tried = []

    def second_works(cflags, ldflags):
        tried.append((cflags, ldflags))
        return None if len(tried) == 2 else "does not load after torch (symbol not found: ___kmpc_fork_call)"

    cflags, ldflags, why_not = setup_py.openmp_flags(torch, platform="darwin", probe=second_works)
    assert (cflags, ldflags, why_not) == (["-Xclang", "-fopenmp"], ["-Wl,-undefined,dynamic_lookup"], None)
    assert tried[0] == (["-Xclang", "-fopenmp"], [])
    cflags, ldflags, why_not = setup_py.openmp_flags(torch, platform="darwin", probe=lambda c, l: "does not build (x)")
    assert (cflags, ldflags) == ([], []) and why_not.count("does not build (x)") == 4
    assert "building without OpenMP, so the CPU kernels run on one thread" in capsys.readouterr().err
    # Linux: no probe needed (GCC's libgomp.so.1 is the one torch loads); Windows: none
    assert setup_py.openmp_flags(torch, platform="linux", probe=lambda c, l: 1 / 0) == (["-fopenmp"], ["-fopenmp"], None)
    assert setup_py.openmp_flags(torch, platform="win32")[:2] == ([], [])


def test_a_failed_build_step_is_named_in_a_line_not_by_its_whole_command():
    # What the fallbacks' banner and the import warning quote: the step and the program, not hundreds of paths
    setup_py = _module_from("setup.py", "interpgan_setup")
    link = ["/opt/llvm/bin/clang++", "-O3", "-shared"] + [f"/build/temp/csrc/file{i}.o" for i in range(40)] + \
        ["-o", "_C.so", "-fopenmp"]
    said = setup_py.failed_step(RuntimeError(str(subprocess.CalledProcessError(1, link))))
    assert said == "linking with clang++ failed, exit status 1: its error is in the build's output"
    compile_one = ["/usr/bin/g++", "-c", "a.cpp", "-o", "a.o"]
    assert setup_py.failed_step(RuntimeError(str(subprocess.CalledProcessError(2, compile_one)))).startswith(
        "compiling with g++ failed, exit status 2")
    assert setup_py.failed_step(RuntimeError("command '/usr/bin/x86_64-linux-gnu-g++' failed with exit code 1")) == \
        "x86_64-linux-gnu-g++ failed, exit status 1: its error is in the build's output"
    assert setup_py.failed_step(RuntimeError("Error compiling objects for extension")) == \
        "Error compiling objects for extension: the compiler's errors are in the build's output"
    assert setup_py.failed_step(RuntimeError("nvcc\n  not found " + "x" * 400)) == ("nvcc not found " + "x" * 400)[:300]
    assert setup_py.failed_step(OSError()) == "OSError"


@pytest.mark.slow
def test_a_compiler_without_openmp_builds_the_kernels_without_it_and_says_why(tmp_path):
    _needs_openmp_torch_and_a_compiler()
    src = _copy_of_the_sources(tmp_path)
    compiler = tmp_path / "c++-without-openmp"
    compiler.write_text("#!/bin/sh\n"
                        'for arg in "$@"; do [ "$arg" = -fopenmp ] && { echo "error: no OpenMP in this compiler" >&2; '
                        "exit 1; }; done\n"
                        f'exec {shutil.which("c++")} "$@"\n')
    compiler.chmod(0o755)
    env = _environment(INTERPGAN_SKIP_CUDA="1", CXX=str(compiler), OMP_NUM_THREADS="2")
    required, done = _strict_then_lenient_build(src, env, "INTERPGAN_REQUIRE_EXT", timeout=900)
    assert required.returncode != 0 and "no OpenMP in this compiler" in required.stdout + required.stderr
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "the build with OpenMP failed" in done.stderr and "Building without OpenMP" in done.stderr
    parallel, because, threads, warned, agrees = _run_in_the_copy(
        src, env, "import warnings, torch; warnings.simplefilter('always')\n"
                  "with warnings.catch_warnings(record=True) as caught:\n"
                  "    import interpgan_ext as ig\n"
                  "i = ig.info(); print(i['ext_cpu_parallel']); print(i['ext_no_openmp_because'])\n"
                  "print(i['ext_cpu_threads']); print(any('one thread instead of 2' in str(w.message) for w in caught))\n")
    assert parallel == "none: one thread" and "the build with OpenMP failed" in because
    assert threads == "1 (torch: 2)" and warned == "True" and agrees == "True"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cmake") is None or not _have_a_cpp_compiler(), reason="needs CMake and a C++ compiler")
def test_cmake_builds_the_cpu_kernels_against_torchs_cpu_libraries_alone(tmp_path):
    # What CMakeLists.txt does where torch is a CUDA build and no CUDA toolkit is found (torch's own CMake config
    # stops there): torch's CPU libraries and headers, linked directly. The C++ test of the CPU kernels must pass.
    import torch

    build = tmp_path / "build"
    configure = subprocess.run(["cmake", "-S", ROOT, "-B", str(build), "-DINTERPGAN_TORCH_CPU_ONLY=ON",
                                f"-DPython3_EXECUTABLE={sys.executable}", "-DCMAKE_BUILD_TYPE=Release",
                                f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"],
                               capture_output=True, text=True, timeout=300)
    assert configure.returncode == 0, (configure.stdout + configure.stderr)[-3000:]
    assert "Torch_DIR" not in (build / "CMakeCache.txt").read_text()  # torch's config was not read
    made = subprocess.run(["cmake", "--build", str(build), "--target", "test_cpu_kernels", "-j",
                           os.environ.get("MAX_JOBS", "2")], capture_output=True, text=True, timeout=900)
    assert made.returncode == 0, (made.stdout + made.stderr)[-3000:]
    ran = subprocess.run([str(build / "test_cpu_kernels")], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, (ran.stdout + ran.stderr)[-3000:]


def test_nvcc_from_pip_is_found_and_linked_where_there_is_no_toolkit(tmp_path, monkeypatch):
    # A GPU machine with torch's CUDA 13 wheels but no toolkit: nvcc's wheels put it in nvidia/cu13 beside the
    # runtime, whose libcudart.so.13 has no libcudart.so for -lcudart. (A whole CUDA build through them, by hand:
    # bench/results/cpu/fresh_machines_2026-12-07/pip_nvcc_build.log.)
    setup_py = _module_from("setup.py", "interpgan_setup")
    home = tmp_path / "site-packages" / "nvidia" / "cu13"
    for name in ("bin/nvcc", "include/cuda_runtime_api.h", "lib/libcudart.so.13"):
        (home / name).parent.mkdir(parents=True, exist_ok=True)
        (home / name).write_text("")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "elsewhere"), str(tmp_path / "site-packages")])
    monkeypatch.setattr(setup_py, "SYSTEM_CUDA", str(tmp_path / "no-toolkit"))
    monkeypatch.setattr(setup_py.shutil, "which", lambda name: None)
    # a copy, restored after the test: locate_cuda_home sets CUDA_HOME in it
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items() if k not in ("CUDA_HOME", "CUDA_PATH")})
    assert setup_py.pip_cuda_homes() == [str(home)]
    setup_py.locate_cuda_home()
    assert os.environ["CUDA_HOME"] == str(home)
    monkeypatch.setattr(setup_py, "ROOT", str(tmp_path / "checkout"))
    (link_dir,) = setup_py.cudart_link_dir(str(home))
    assert os.path.realpath(os.path.join(link_dir, "libcudart.so")) == str(home / "lib" / "libcudart.so.13")
    monkeypatch.setattr(setup_py, "ROOT", "/proc/read-only-checkout")  # no build folder there: a temporary one
    (link_dir,) = setup_py.cudart_link_dir(str(home))
    assert os.path.realpath(os.path.join(link_dir, "libcudart.so")) == str(home / "lib" / "libcudart.so.13")
    shutil.rmtree(link_dir)
    (home / "lib" / "libcudart.so").write_text("")  # a toolkit's own: nothing to add
    assert setup_py.cudart_link_dir(str(home)) == []
    # without them, the reason says which wheels to get (CUDA 13 on; CUDA 12's wheels are laid out otherwise)
    hint = setup_py.pip_nvcc_hint("13.0")
    assert "pip install nvidia-cuda-nvcc==13.0.* nvidia-nvvm==13.0.* nvidia-cuda-crt==13.0.* nvidia-cuda-cccl==13.0.*" in hint
    assert setup_py.pip_nvcc_hint("12.8") == ""


def test_python_run_sh_gets_nvcc_from_pip_only_for_a_gpu_without_one(tmp_path, monkeypatch):
    import types

    setup_py = _module_from("setup.py", "interpgan_setup")
    monkeypatch.setattr(setup_py, "SYSTEM_CUDA", str(tmp_path / "no-toolkit"))
    monkeypatch.setattr(setup_py.shutil, "which", lambda name: None)
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    monkeypatch.setattr(os, "environ", {k: v for k, v in os.environ.items()
                                        if k not in ("CUDA_HOME", "CUDA_PATH", "INTERPGAN_SKIP_CUDA")})

    def torch_with(cuda, gpu):
        return types.SimpleNamespace(version=types.SimpleNamespace(cuda=cuda),
                                     cuda=types.SimpleNamespace(is_available=lambda: gpu))

    assert setup_py.nvcc_wheels_to_install(torch_with("13.0", True)) == setup_py.pip_nvcc_specs("13.0") != []
    assert setup_py.nvcc_wheels_to_install(torch_with("13.0", False)) == []  # no GPU: the CPU kernels do
    assert setup_py.nvcc_wheels_to_install(torch_with(None, True)) == []  # a CPU build of torch
    assert setup_py.nvcc_wheels_to_install(torch_with("12.8", True)) == []
    os.environ["INTERPGAN_SKIP_CUDA"] = "1"
    assert setup_py.nvcc_wheels_to_install(torch_with("13.0", True)) == []
    del os.environ["INTERPGAN_SKIP_CUDA"]
    toolkit = tmp_path / "cuda"
    (toolkit / "bin").mkdir(parents=True)
    (toolkit / "bin" / "nvcc").write_text("")
    os.environ["CUDA_HOME"] = str(toolkit)
    assert setup_py.nvcc_wheels_to_install(torch_with("13.0", True)) == []


def test_an_isolated_build_against_another_torch_than_the_installed_one_is_refused(tmp_path):
    setup_py = _module_from("setup.py", "interpgan_setup")
    site_packages, build_env = tmp_path / "site-packages", tmp_path / "pip-build-env" / "overlay"
    (site_packages / "torch-2.14.1.dist-info").mkdir(parents=True)
    (site_packages / "torch-2.14.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 2.14.1\n")
    isolated_torch = str(build_env / "torch" / "__init__.py")
    message = setup_py.isolated_torch_mismatch(isolated_torch, "2.15.0+cu132", str(site_packages))
    assert message and "against torch 2.15.0+cu132" in message and "has torch 2.14.1" in message
    assert "pip install --no-build-isolation ." in message
    # the same torch (a local version tag aside), the environment's own torch, the user's, or none installed: built
    assert setup_py.isolated_torch_mismatch(isolated_torch, "2.14.1+cu130", str(site_packages)) is None
    assert setup_py.isolated_torch_mismatch(str(site_packages / "torch" / "__init__.py"), "2.15.0", str(site_packages)) is None
    user = tmp_path / "user-site"
    assert setup_py.isolated_torch_mismatch(str(user / "torch" / "__init__.py"), "2.15.0", str(site_packages), str(user)) is None
    assert setup_py.isolated_torch_mismatch(isolated_torch, "2.15.0", str(tmp_path / "empty")) is None


def test_the_cross_compile_check_keeps_our_warnings_and_every_error():
    cross = _module_from(os.path.join("python", "cross_compile.py"), "cross_compile")
    ours = os.path.join(ROOT, "csrc", "cpu", "simd.h")
    output = "\n".join([
        f"{ours}:73:3: warning: passing 4-byte aligned argument to 16-byte aligned parameter [-Walign-mismatch]",
        "/venv/site-packages/torch/include/c10/util/Half.h:10:1: warning: torch's own [-Wdeprecated]",
        "/venv/site-packages/torch/include/ATen/ATen.h:5:2: error: C++20 or later compatible compiler is required",
        "2 warnings and 1 error generated."])
    kept = cross.our_diagnostics(output)
    assert len(kept) == 2 and kept[0].startswith(ours) and "error: C++20" in kept[1]
    command = cross.compile_command("aarch64-macos", "x.cpp", "x.o")
    assert command[command.index("-target") + 1] == "aarch64-macos" and command[command.index("-o") + 1] == "x.o"
    assert {"-std=c++20", "-Wall", "-c", "x.cpp"} <= set(command)


@pytest.mark.skipif(importlib.util.find_spec("ziglang") is None,
                    reason="the ziglang package (Clang that cross-compiles) is not installed")
def test_the_cross_compile_check_compiles_for_the_target_and_fails_what_does_not_build(tmp_path, monkeypatch, capsys):
    cross = _module_from(os.path.join("python", "cross_compile.py"), "cross_compile")
    monkeypatch.chdir(tmp_path)
    for name, pointer_bytes, want in (("lp64.cpp", 8, 0), ("ilp32.cpp", 4, 1)):  # arm64 has 8-byte pointers
        source = tmp_path / name
        source.write_text(f'static_assert(sizeof(void*) == {pointer_bytes}, "pointer size");\n')
        monkeypatch.setattr(cross, "sources", lambda: [str(source)])
        assert cross.main(["aarch64-linux-gnu", "--jobs", "1"]) == want
    assert "FAIL aarch64-linux-gnu" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["ilp32.cpp", "lp64.cpp"]  # no object left behind
    # --openmp-include: OpenMP as setup.py builds it on a Mac, against the omp.h in the given folder
    (tmp_path / "include").mkdir()
    (tmp_path / "include" / "omp.h").write_text("int omp_get_num_threads(void);\n")
    source = tmp_path / "needs_openmp.cpp"
    source.write_text('#ifndef _OPENMP\n#error "no OpenMP"\n#endif\n#include <omp.h>\n'
                      "int threads() { int n = 0;\n#pragma omp parallel\n  n = omp_get_num_threads();\n  return n; }\n")
    monkeypatch.setattr(cross, "sources", lambda: [str(source)])
    assert cross.main(["aarch64-macos", "--jobs", "1"]) == 1
    assert cross.main(["aarch64-macos", "--jobs", "1", "--openmp-include", str(tmp_path / "include")]) == 0
