"""Compiles the extension's C++ sources for other CPUs and systems with Clang (the ziglang pip package's, which
cross-compiles), against this torch's headers: arm64 Linux (Graviton, Grace) and arm64 macOS (Apple silicon) by
default. Compile only: nothing is linked or run (the objects go to a temporary directory), so it shows that the
code builds there, not that it is right (the portable build of python/other_builds.sh runs the same vector code
here). Without OpenMP unless given an omp.h: Clang has none here.

    python python/cross_compile.py [TARGET ...]       # pip install ziglang first; or: bash python/other_builds.sh arm64
    python python/cross_compile.py aarch64-macos --openmp-include DIR   # DIR/omp.h: e.g. a macOS torch wheel's
                                                                         # torch/include; OpenMP as setup.py's on a Mac

A warning in csrc/ fails it as an error does; warnings in torch's headers are not ours and are left out.
"""
import argparse
import glob
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import torch
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TARGETS = ["aarch64-linux-gnu", "aarch64-macos"]


def sources():
    csrc = os.path.join(ROOT, "csrc")
    return sorted(glob.glob(os.path.join(csrc, "*.cpp")) + glob.glob(os.path.join(csrc, "cpu", "*.cpp")))


def compile_command(target, source, obj, openmp_include=None):
    includes = [os.path.join(ROOT, "csrc")] + cpp_extension.include_paths() + [sysconfig.get_paths()["include"]]
    version = torch.__version__.split("+")[0]
    defines = ["-DTORCH_EXTENSION_NAME=_C", "-DTORCH_API_INCLUDE_EXTENSION_H",
               f'-DINTERPGAN_BUILT_WITH_TORCH="{version}"']
    # OpenMP as setup.py's first choice on macOS builds it (Apple's Clang has no -fopenmp driver flag)
    openmp = ["-Xclang", "-fopenmp", "-isystem", openmp_include] if openmp_include else []
    return ([sys.executable, "-m", "ziglang", "c++", "-target", target, "-std=c++20", "-O2", "-Wall", "-fno-math-errno"]
            + openmp + defines + ["-c", source, "-o", obj] + [f"-I{d}" for d in includes])


def our_diagnostics(output):
    """The compiler's error and warning lines about csrc/ (not torch's headers), and any error at all."""
    csrc = os.path.join(ROOT, "csrc") + os.sep
    return [line for line in output.splitlines()
            if ("error:" in line) or ("warning:" in line and line.startswith(csrc))]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", default=DEFAULT_TARGETS, help="Clang target triples")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("MAX_JOBS", 2)))
    parser.add_argument("--openmp-include", metavar="DIR", help="a folder with an omp.h: compile with OpenMP")
    args = parser.parse_args(argv)
    jobs = [(target, source) for target in args.targets for source in sources()]
    start = time.time()

    def run(job):
        target, source = job
        obj = os.path.join(out_dir, f"{target}-{os.path.basename(source)}.o")
        # zig's Clang writes NAME.o into the working directory when told -o /dev/null: the objects go to out_dir
        proc = subprocess.run(compile_command(target, source, obj, args.openmp_include), capture_output=True, text=True,
                              cwd=out_dir)
        return job, proc.returncode, our_diagnostics(proc.stdout + proc.stderr)

    failed = 0
    with tempfile.TemporaryDirectory() as out_dir, ThreadPoolExecutor(args.jobs) as pool:
        for (target, source), code, lines in pool.map(run, jobs):
            ok = code == 0 and not lines
            failed += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {target:20s} {os.path.relpath(source, ROOT)}", flush=True)
            for line in lines[:20]:
                print("     " + line)
    print(f"cross_compile: {len(jobs) - failed} of {len(jobs)} compiled cleanly for {', '.join(args.targets)} "
          f"({time.time() - start:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
