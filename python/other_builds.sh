#!/usr/bin/env bash
# The CPU kernels as other machines build them, tested on this one (the installed extension is left alone):
#   portable  a copy built with INTERPGAN_PORTABLE_SIMD: the vector code that arm64 CPUs (Apple silicon, Graviton,
#             Grace) and any other non-x86 CPU run, which an x86-64 build never compiles. The op tests run on it.
#   gcc11     a copy built with g++-11, the compiler of Ubuntu 22.04 and RHEL 9 (no __builtin_shufflevector, no
#             ISA-level clones: csrc/cpu/simd.h), when it is installed. The op tests run on it.
#   clang     a copy built with Clang (the ziglang pip package's) for x86-64 Linux against this system's libstdc++,
#             as a user's CC=clang build would be: its AVX2 clones (csrc/cpu/simd.h) and its fallback to no OpenMP
#             (that Clang has no libomp). The op tests run on it.
#   clang15   the same with Clang 15 (ziglang 0.10.1, downloaded by pip into build/), near Ubuntu 22.04's Clang 14.
#   arm64     every C++ source compiled by Clang for aarch64-linux and aarch64-macos (compile only: nothing here runs
#             arm64 code), when the ziglang pip package, a Clang that cross-compiles, is installed (pip install ziglang).
# Needs the venv of `bash python/run.sh setup` (or any with torch and pytest).
#   bash python/other_builds.sh [portable] [gcc11] [clang] [clang15] [arm64]   # default: all; or bash python/run.sh other-builds
set -euo pipefail
cd "$(dirname "$0")/.."
source python/build_copy.sh
VARIANTS=${*:-portable gcc11 clang clang15 arm64}
PASSED="" SKIPPED=""
OP_TESTS=(tests/test_group_energy.py tests/test_langevin_step.py tests/test_backend.py)

# test_copy DIR LABEL [VECTOR_CODE] [DESELECT]: the op tests (but those pytest -k DESELECT names) against the copy built
# in DIR (which must run VECTOR_CODE, if given: check_copy_loads), and its seeded Langevin noise against this
# checkout's build: the same values but for rounding (FMA contraction differs between the builds' vector code).
NOISE_PROBE='import sys, torch, interpgan_ext as ig
assert ig._backend.has_extension(), ig._backend.unavailable_reason
gen = torch.Generator().manual_seed(123)
torch.save([ig.ops.langevin_step(torch.zeros(999, dtype=dt), torch.zeros(999, dtype=dt), 0.5, prior_weight=0.0,
                                 generator=gen) for dt in (torch.float32, torch.float64)], sys.argv[1])'
test_copy() {
  (cd "$1" && export PYTHONPATH="$PWD" && unset INTERPGAN_BACKEND && check_copy_loads "$2" "${3:-}" &&
    python -m pytest -q -p no:cacheprovider "${OP_TESTS[@]}" -k "not cuda${4:+ and not ($4)}" && python -c "$NOISE_PROBE" noise_copy.pt)
  env -u INTERPGAN_BACKEND python -c "$NOISE_PROBE" "$1/noise_here.pt"
  python -c "
import sys, torch
(f32, f64), (g32, g64) = torch.load(sys.argv[1]), torch.load(sys.argv[2])
torch.testing.assert_close(f32, g32, rtol=1e-5, atol=1e-6)
torch.testing.assert_close(f64, g64, rtol=1e-12, atol=1e-13)
print('$2: the same Langevin noise as this checkout\'s build')" "$1/noise_copy.pt" "$1/noise_here.pt"
}

# clang_copy LABEL ZIGLANG_DIR: the kernels built for x86-64 Linux by the Clang of a ziglang package (ZIGLANG_DIR holds
# its zig and lib/) into build/LABEL-cpu, and the op tests on them.
clang_copy() {
  local label=$1 zig_dir=$2 bin=$PWD/build/$1-bin driver mode
  echo "== $label: $("$zig_dir/zig" clang --version | head -1), x86-64 Linux (log: build/$label-cpu/build.log)"
  # zig's Clang as a plain clang driver: it finds this system's GCC and libstdc++, as torch's ABI needs
  # (`zig c++` would compile against zig's own libc++). Its own headers are under ziglang/lib/include.
  mkdir -p "$bin"
  for driver in clang clang++; do
    mode=$([ $driver = clang ] && echo gcc || echo g++)
    printf '#!/bin/sh\nexec "%s" clang --driver-mode=%s --target=x86_64-linux-gnu -resource-dir "%s" "$@"\n' \
      "$zig_dir/zig" "$mode" "$zig_dir/lib" > "$bin/$driver"
    chmod +x "$bin/$driver"
  done
  # That Clang has no OpenMP runtime (libomp): the build with OpenMP fails and is redone without, as on a user's
  # machine (what CI's INTERPGAN_REQUIRE_EXT=1 and INTERPGAN_FORCE_CUDA=1 would forbid), so the two tests that the
  # build has OpenMP are left out.
  build_copy "build/$label-cpu" CC="$bin/clang" CXX="$bin/clang++" LDSHARED="$bin/clang++ -shared" \
    INTERPGAN_REQUIRE_EXT=0 INTERPGAN_FORCE_CUDA=0
  grep -q "$bin/clang++" "build/$label-cpu/build.log" || { echo "error: the build did not run Clang" >&2; exit 1; }
  if grep -q "the C++ build failed" "build/$label-cpu/build.log"; then  # only OpenMP may be left out
    grep -m 20 "error:" "build/$label-cpu/build.log" >&2
    echo "error: $label did not build the kernels (build/$label-cpu/build.log)" >&2
    exit 1
  fi
  # Under Clang, normal_noise_avx2.cpp builds simd.h's helpers for AVX2 too: its object must define its two entry
  # points and nothing else, or the linker could hand an AVX2 copy of a shared function to other files' code.
  local avx2_object defined expected=sse2
  avx2_object=$(find "build/$label-cpu/build" -name normal_noise_avx2.o)
  defined=$(nm --defined-only --extern-only "$avx2_object" | awk '{print $2 " " $3}')
  if [ "$(echo "$defined" | grep -c '^T _ZN9interpgan12normal_noise16fill_normal_avx2')" != 2 ] ||
    [ "$(echo "$defined" | wc -l)" != 2 ]; then
    echo "error: $avx2_object must define its two AVX2 entry points and nothing else; it defines:" >&2
    echo "${defined:-(nothing)}" >&2
    exit 1
  fi
  grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo && expected=avx2
  test_copy "build/$label-cpu" "$label" "$expected" \
    "built_parallel_where_torch_uses_openmp or as_many_threads_as_torch_sets"
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
    clang)
      if ! python -c "import ziglang" 2> /dev/null || [ "$(uname -sm)" != "Linux x86_64" ]; then
        echo "== clang: skipped, needs the ziglang package (pip install ziglang) on x86-64 Linux"
        SKIPPED+=" clang"
        continue
      fi
      clang_copy clang "$(python -c "import os, ziglang; print(os.path.dirname(ziglang.__file__))")"
      ;;
    clang15)
      # Clang 15 (ziglang 0.10.1), near the Clang 14 of Ubuntu 22.04 and Debian 12: older Clangs lack C++20 parts that
      # Clang 22 has (lambdas capturing structured bindings broke the build before 2026-12-07).
      zig15=build/ziglang-0.10.1
      mkdir -p build
      if [ "$(uname -sm)" != "Linux x86_64" ] || { [ ! -x "$zig15/ziglang/zig" ] &&
        ! { python -m pip download -q --no-deps ziglang==0.10.1.post1 -d "$zig15" > "$zig15.log" 2>&1 &&
            python -m zipfile -e "$zig15"/ziglang-0.10.1*.whl "$zig15" && chmod +x "$zig15/ziglang/zig"; }; }; then
        echo "== clang15: skipped, needs x86-64 Linux and pip download ziglang==0.10.1.post1 (see $zig15.log)"
        SKIPPED+=" clang15"
        continue
      fi
      clang_copy clang15 "$PWD/$zig15/ziglang"
      ;;
    arm64)
      if ! python -c "import ziglang" 2> /dev/null; then
        echo "== arm64: skipped, the ziglang package (Clang for cross-compiling) is not installed (pip install ziglang)"
        SKIPPED+=" arm64"
        continue
      fi
      python python/cross_compile.py aarch64-linux-gnu aarch64-macos
      ;;
    *) echo "unknown variant: $variant (portable, gcc11, clang, clang15, arm64)" >&2; exit 2 ;;
  esac
  PASSED+=" $variant"
done
echo "other_builds: passed:${PASSED:- none}; skipped:${SKIPPED:- none}"
