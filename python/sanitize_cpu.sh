#!/usr/bin/env bash
# The CPU kernels under AddressSanitizer and UndefinedBehaviorSanitizer: the CPU's counterpart of compute-sanitizer.
# A copy of the package is built with -fsanitize=address,undefined under build/sanitize-cpu (the installed extension
# is left alone), and the op tests run against it. Any out-of-bounds access, use after free or undefined behaviour in
# csrc/ aborts the run with a report. Needs the venv of `bash python/run.sh setup` (or any with torch and pytest).
#   bash python/sanitize_cpu.sh [extra pytest args]      # also: bash python/run.sh sanitize
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIR=build/sanitize-cpu
source python/build_copy.sh

echo "== building the CPU kernels with -fsanitize=address,undefined (log: $DIR/build.log)"
SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -g"
build_copy "$DIR" CFLAGS="$SAN" LDFLAGS="-fsanitize=address,undefined"
cd "$DIR"

# Python itself is not instrumented, so the runtimes of the compiler that built the extension are preloaded.
# Leak checks are off (CPython keeps its allocations to the end); every other finding stops the run.
CXX_BIN=${CXX:-c++}
ASAN_LIB=$($CXX_BIN -print-file-name=libasan.so) UBSAN_LIB=$($CXX_BIN -print-file-name=libubsan.so)
for lib in "$ASAN_LIB" "$UBSAN_LIB"; do
  [ -f "$lib" ] || { echo "error: the compiler has no $lib (install libasan / libubsan for it)" >&2; exit 1; }
done
export LD_PRELOAD="$ASAN_LIB:$UBSAN_LIB"
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export PYTHONPATH="$PWD"
unset INTERPGAN_BACKEND

# The run must use this instrumented build, not the installed one.
check_copy_loads sanitize_cpu

# --capture=sys: a sanitizer writes its report to file descriptor 2 and aborts; pytest must not be holding it.
# The op tests, then the ops inside a real training loop (GMM, Langevin chains, W and G steps, a checkpoint).
python -m pytest -q -p no:cacheprovider --capture=sys tests/test_group_energy.py tests/test_langevin_step.py \
  tests/test_energy_and_sampler.py tests/test_examples.py tests/test_trainer.py::test_smoke_run_writes_everything \
  -k "not cuda and not own_generator" "$@"
echo "sanitize_cpu: no AddressSanitizer or UndefinedBehaviorSanitizer finding (build: $ROOT/$DIR)"
