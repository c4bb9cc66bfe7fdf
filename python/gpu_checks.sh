#!/usr/bin/env bash
# One call on a GPU machine: build the extension there, run the CUDA tests, compute-sanitizer, the op benchmark,
# and the training-throughput benchmark.
# Writes logs and JSON under ${OUT:-bench/results/gpu}. With PACK=1 they end up as one archive there,
# gpu_checks.tgz (the device tool brings back 8 files at most): `PACK=1 bash python/gpu_checks.sh`, about 7 minutes
# on an H100. The device tool kills a command at 600 s, and what is not packed by then is lost, so every step runs
# under what is left of BUDGET_S (default 540 s): a step that overruns is cut short, and the archive still comes back.
set -uo pipefail
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
# A build that fails stops here, with its error: setup.py would otherwise fall back to the CPU kernels (or none)
# and the GPU minutes would go to the reference ops.
export INTERPGAN_FORCE_CUDA=1 INTERPGAN_REQUIRE_EXT=1
BUDGET_S=${BUDGET_S:-540}
left() { local s=$((BUDGET_S - SECONDS)); echo $((s > 5 ? s : 5)); }  # seconds a step may still take
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
{ c++ --version | head -1; nvcc --version | tail -2 | head -1; } 2>&1 | tee -a "$OUT/gpu.txt"  # the compilers of the build
timeout "$(left)" python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 || { grep -E "error|Error" "$OUT/build.log" | head -30; exit 1; }
python3 -c "import interpgan_ext as ig; print(ig.info())" | tee -a "$OUT/build.log"
timeout "$(left)" python3 -m pytest -q -m cuda tests/ --ignore=tests/test_sampler_graph.py 2>&1 | tail -15 | tee "$OUT/pytest_cuda.log"
# the tests that capture the Langevin chain as a CUDA graph (never run on a GPU before): on their own, so that a crash
# there costs no other test's result
timeout "$(left)" python3 -m pytest -q -m cuda tests/test_sampler_graph.py 2>&1 | tail -25 | tee "$OUT/pytest_cuda_graph.log"
for tool in memcheck racecheck; do
  timeout "$(left)" compute-sanitizer --tool $tool --error-exitcode 3 python3 python/sanitize_ops.py > "$OUT/sanitizer_$tool.log" 2>&1
  echo "compute-sanitizer $tool: exit $? ($(tail -1 "$OUT/sanitizer_$tool.log"))"
done
timeout "$(left)" python3 python/profile_ops.py > "$OUT/profile_ops.txt" 2>&1; head -30 "$OUT/profile_ops.txt"
# the candidate product kernels (csrc/cuda/group_energy_kernels.cuh, staged_product_kernel)
INTERPGAN_CUDA_PRODUCTS=staged timeout "$(left)" python3 python/profile_ops.py > "$OUT/profile_ops_staged.txt" 2>&1
head -16 "$OUT/profile_ops_staged.txt"
timeout "$(left)" python3 python/bench_ops.py --device cuda --out "$OUT/ops_cuda.json" 2>&1 | tee "$OUT/bench_ops.log" | tail -12
# Training throughput at the GPU job's size (64 px, width 64, batch 64), in two rounds to fit the budget. The
# profiler's top-op tables are kept; its chrome traces (tens of MB) stay in /tmp/train_trace.
timeout "$(left)" python3 python/bench_train.py --device cuda --size 64 --width 64 --batch-size 64 --repeats 2 --no-progress \
    --variants baseline,fused,reference,fused-drawn,fused-graphed \
    --out "$OUT/train_cuda_64px.json" --trace /tmp/train_trace 2>&1 | tee "$OUT/bench_train.log" | tail -12
cp /tmp/train_trace/profile_*.txt "$OUT/" 2>/dev/null
# ops a step dispatches on the GPU (each a launch from the host), with the real images held there and drawn per step
{ for mode in on off; do timeout "$(left)" python3 python/count_step_ops.py --device cuda --data-on-device $mode; done
  # and with the Langevin chain replayed as one CUDA graph (sampler_graph.py)
  timeout "$(left)" python3 python/count_step_ops.py --device cuda --data-on-device on --langevin-graph on; } 2>&1 | tee "$OUT/step_ops_cuda.txt"
# Adam's paths on the GPU (the trainer uses the fused one): a few seconds
timeout "$(left)" python3 python/bench_optim.py --device cuda --json "$OUT/optim_cuda.json" 2>&1 | tee "$OUT/optim_cuda.txt"
echo "gpu_checks: ${SECONDS} s of a ${BUDGET_S} s budget"
if [ "${PACK:-0}" = 1 ]; then
  tar czf /tmp/gpu_checks.tgz -C "$OUT" . && rm -rf "${OUT:?}"/* && mv /tmp/gpu_checks.tgz "$OUT/"
fi
