#!/usr/bin/env bash
# The CPU kernels as other machines build them, tested on this one (the installed extension is left alone):
#   portable  a copy built with INTERPGAN_PORTABLE_SIMD: the vector code that arm64 CPUs (Apple silicon, Graviton,
#             Grace) and any other non-x86 CPU run, which an x86-64 build never compiles. The op tests run on it.
#   gcc11     a copy built with g++-11, the compiler of Ubuntu 22.04 and RHEL 9 (no __builtin_shufflevector, no
#             ISA-level clones: csrc/cpu/simd.h), when it is installed. The op tests run on it.
#   arm64     every C++ source compiled by Clang for aarch64-linux and aarch64-macos (compile only: nothing here runs
#             arm64 code), when the ziglang pip package, a Clang that cross-compiles, is installed (pip install ziglang).
# Needs the venv of `bash python/run.sh setup` (or any with torch and pytest).
#   bash python/other_builds.sh [portable] [gcc11] [arm64]      # default: all three; also: bash python/run.sh other-builds
set -euo pipefail
cd "$(dirname "$0")/.."
source python/build_copy.sh
VARIANTS=${*:-portable gcc11 arm64}
PASSED="" SKIPPED=""
OP_TESTS=(tests/test_group_energy.py tests/test_langevin_step.py tests/test_backend.py)

# test_copy DIR LABEL [VECTOR_CODE]: the op tests against the copy built in DIR (which must run VECTOR_CODE, if given:
# check_copy_loads), and its seeded Langevin noise against this
# checkout's build: the same values but for rounding (FMA contraction differs between the builds' vector code).
NOISE_PROBE='import sys, torch, interpgan_ext as ig
assert ig._backend.has_extension(), ig._backend.unavailable_reason
gen = torch.Generator().manual_seed(123)
torch.save([ig.ops.langevin_step(torch.zeros(999, dtype=dt), torch.zeros(999, dtype=dt), 0.5, prior_weight=0.0,
                                 generator=gen) for dt in (torch.float32, torch.float64)], sys.argv[1])'
test_copy() {
  (cd "$1" && export PYTHONPATH="$PWD" && unset INTERPGAN_BACKEND && check_copy_loads "$2" "${3:-}" &&
    python -m pytest -q -p no:cacheprovider "${OP_TESTS[@]}" -k "not cuda" && python -c "$NOISE_PROBE" noise_copy.pt)
  env -u INTERPGAN_BACKEND python -c "$NOISE_PROBE" "$1/noise_here.pt"
  python -c "
import sys, torch
(f32, f64), (g32, g64) = torch.load(sys.argv[1]), torch.load(sys.argv[2])
torch.testing.assert_close(f32, g32, rtol=1e-5, atol=1e-6)
torch.testing.assert_close(f64, g64, rtol=1e-12, atol=1e-13)
print('$2: the same Langevin noise as this checkout\'s build')" "$1/noise_copy.pt" "$1/noise_here.pt"
}

for variant in $VARIANTS; do
  case "$variant" in
    portable)
      echo "== portable vector code (INTERPGAN_PORTABLE_SIMD; log: build/portable-cpu/build.log)"
      build_copy build/portable-cpu CFLAGS="-DINTERPGAN_PORTABLE_SIMD"
      test_copy build/portable-cpu portable portable
      ;;
    gcc11)
      if ! command -v g++-11 > /dev/null; then
        echo "== gcc11: skipped, g++-11 is not installed (Debian/Ubuntu: apt-get install g++-11)"
        SKIPPED+=" gcc11"
        continue
      fi
      echo "== g++-11 (log: build/gcc11-cpu/build.log)"
      build_copy build/gcc11-cpu CC=gcc-11 CXX=g++-11 LDSHARED="g++-11 -shared"
      grep -q "g++-11" build/gcc11-cpu/build.log || { echo "error: the build did not run g++-11" >&2; exit 1; }
      test_copy build/gcc11-cpu gcc11
      ;;
    arm64)
      if ! python -c "import ziglang" 2> /dev/null; then
        echo "== arm64: skipped, the ziglang package (Clang for cross-compiling) is not installed (pip install ziglang)"
        SKIPPED+=" arm64"
        continue
      fi
      python python/cross_compile.py aarch64-linux-gnu aarch64-macos
      ;;
    *) echo "unknown variant: $variant (portable, gcc11, arm64)" >&2; exit 2 ;;
  esac
  PASSED+=" $variant"
done
echo "other_builds: passed:${PASSED:- none}; skipped:${SKIPPED:- none}"
