#!/usr/bin/env bash
# The README's commands. Each sets up what it needs on a fresh machine (idempotent), then runs:
#   bash python/run.sh train [interpgan train options]   the main job: train on the embedded SynthFaces
#   bash python/run.sh test                              the test suite (pytest, then the C++ ctests)
#   bash python/run.sh bench                             op benchmarks (python/bench_ops.py)
#   bash python/run.sh bench-train                       training throughput and its profile (python/bench_train.py)
#   bash python/run.sh sanitize                          the op tests against an ASan/UBSan build of the CPU kernels
#   bash python/run.sh other-builds                      the CPU kernels as other machines build them (arm64, GCC 11, Clang)
#   bash python/run.sh setup                             only the set-up
# Environment: INTERPGAN_VENV (default .venv), INTERPGAN_TORCH (default torch==2.14.1, the CUDA build;
# torch==2.13.0 is the CPU build; torchvision==0.29.1 comes with the default), MAX_JOBS, TORCH_CUDA_ARCH_LIST, INTERPGAN_SKIP_CUDA=1.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${INTERPGAN_VENV:-.venv}
TORCH_SPEC=${INTERPGAN_TORCH:-torch==2.14.1}

# Free space the first install needs: the CUDA build of torch (Linux's default wheel) fills ~6 GB of venv (plus
# pip's unpacking), the CPU build (and macOS's wheel) ~1.5 GB. Fail before pip does, with what to do instead of pip's
# "[Errno 28]".
# INTERPGAN_LOW_DISK_FALLBACK=1 (set by .ci/run) takes the CPU build instead, without the CUDA kernels.
check_disk() {
  local cpu_gb=2 cuda_gb=9 need_gb free_gb
  need_gb=$cpu_gb
  if [ "$TORCH_SPEC" = "torch==2.14.1" ] && [ "$(uname -s)" = Linux ]; then need_gb=$cuda_gb; fi
  free_gb=$(df -Pk "$VENV" | awk 'NR==2 {print int($4 / 1048576)}')
  if [ "$free_gb" -ge "$need_gb" ]; then return 0; fi
  if [ "${INTERPGAN_LOW_DISK_FALLBACK:-0}" = "1" ] && [ "$need_gb" = "$cuda_gb" ] && [ "$free_gb" -ge "$cpu_gb" ]; then
    echo "!! only ${free_gb} GB free, $TORCH_SPEC needs ~${need_gb} GB: installing torch==2.13.0 (CPU build)."
    echo "!! THE CUDA KERNELS ARE NOT COMPILED IN THIS RUN; the CPU tests run as usual."
    TORCH_SPEC=torch==2.13.0
    export INTERPGAN_FORCE_CUDA=0
    return 0
  fi
  echo "error: only ${free_gb} GB free where $VENV lives; installing $TORCH_SPEC needs about ${need_gb} GB." >&2
  echo "       Free some space, set INTERPGAN_VENV to a roomier place, or use INTERPGAN_TORCH=torch==2.13.0 (CPU build, ~${cpu_gb} GB)." >&2
  exit 1
}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    python3 -m venv "$VENV"
  fi
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
  if ! python -c "import torch" 2>/dev/null; then check_disk; fi
  echo "== installing $TORCH_SPEC and the Python dependencies"
  python -m pip install -q "$TORCH_SPEC" ninja numpy tqdm pillow scipy scikit-learn scikit-image pytest setuptools wheel
  # torchvision (Inception-v3 for FID) must match torch: the default torch has its wheel on local disk
  if [ "$TORCH_SPEC" = "torch==2.14.1" ]; then python -m pip install -q torchvision==0.29.1; fi
  # A GPU but no CUDA toolkit (torch needs only the driver): nvcc from pip, for the CUDA kernels (setup.py's helper)
  local nvcc_wheels rebuild=""
  nvcc_wheels=$(python -c "import importlib.util as u, torch; s = u.spec_from_file_location('interpgan_setup', 'setup.py')
m = u.module_from_spec(s); s.loader.exec_module(m); print(' '.join(m.nvcc_wheels_to_install(torch)))" 2>/dev/null || true)
  if [ -n "$nvcc_wheels" ]; then
    echo "== a GPU and no CUDA toolkit: installing nvcc from pip ($nvcc_wheels)"
    # shellcheck disable=SC2086
    python -m pip install -q $nvcc_wheels
    rebuild=1  # an extension built before has no CUDA kernels
  fi
  local so
  so=$(ls interpgan_ext/_C*.so 2>/dev/null | head -1 || true)
  if [ -n "$rebuild" ] || [ -z "$so" ] || [ -n "$(find csrc setup.py -newer "$so" -type f 2>/dev/null | head -1)" ] \
     || ! python -c "import interpgan_ext._C" 2>/dev/null; then
    echo "== building the extension (C++ and, where torch has CUDA and nvcc is found, CUDA kernels)"
    export MAX_JOBS=${MAX_JOBS:-2}
    python -m pip install -v --no-build-isolation --no-deps -e . > build.log 2>&1 || { tail -40 build.log; exit 1; }
    # setup.py's fallbacks (CUDA kernels that failed to build, no working compiler) say so in a banner: show it,
    # once (pip runs setup.py twice for an editable install)
    grep -E "^ *(interpgan_ext: |Building the CPU kernels alone|Installing without compiled ops)" build.log \
      | sed 's/^ *//' | awk '!seen[$0]++' || true
  fi
  python -c "import interpgan_ext as ig; print(ig.info())"
}

ctest_cpu() {
  echo "== C++ tests (CMake + ctest): the CPU kernels, and the CUDA kernels' code emulated on the CPU (ASan, TSan)"
  # Without a C++ compiler the package runs its reference ops (setup.py says so), and there is nothing to build here;
  # CI (INTERPGAN_REQUIRE_EXT=1) fails instead.
  if ! command -v "${CXX:-c++}" >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1 \
     && ! command -v clang++ >/dev/null 2>&1 && [ "${INTERPGAN_REQUIRE_EXT:-0}" != "1" ]; then
    echo "!! no C++ compiler: the C++ tests are skipped (the package runs its pure-PyTorch reference ops)"
    return 0
  fi
  # A machine without CMake (a laptop) gets PyPI's into the venv; one without make builds with the venv's ninja.
  if ! command -v cmake >/dev/null 2>&1; then
    echo "== installing CMake (PyPI's cmake) into $VENV"
    python -m pip install -q cmake
  fi
  local prefix generator=""  # a string, not an array: macOS's bash 3.2 calls an empty array unbound under set -u
  if [ ! -f build/cmake/CMakeCache.txt ] && ! command -v make >/dev/null 2>&1; then generator="-G Ninja"; fi
  prefix=$(python -c "import torch; print(torch.utils.cmake_prefix_path)")
  # shellcheck disable=SC2086
  TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} cmake -S . -B build/cmake $generator -DCMAKE_PREFIX_PATH="$prefix" \
        -DPython3_EXECUTABLE="$(command -v python)" -DCMAKE_BUILD_TYPE=Release > build/cmake.log 2>&1 \
    || { mkdir -p build; tail -30 build/cmake.log; exit 1; }
  cmake --build build/cmake -j "${MAX_JOBS:-2}" >> build/cmake.log 2>&1 || { tail -30 build/cmake.log; exit 1; }
  (cd build/cmake && ctest --output-on-failure)
}

cmd=${1:-test}
shift || true
case "$cmd" in
  setup) setup ;;
  train) setup; interpgan train "$@" ;;
  test)
    setup
    python -m pytest -q tests "$@"
    mkdir -p build
    ctest_cpu
    ;;
  bench) setup; python python/bench_ops.py "$@" ;;
  bench-train) setup; python python/bench_train.py "$@" ;;
  sanitize) setup; bash python/sanitize_cpu.sh "$@" ;;
  other-builds) setup; bash python/other_builds.sh "$@" ;;
  *) echo "usage: bash python/run.sh setup|train|test|bench|bench-train|sanitize|other-builds [args]" >&2; exit 2 ;;
esac
