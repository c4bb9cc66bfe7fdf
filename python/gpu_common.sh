#!/usr/bin/env bash
# Sourced by the python/gpu_*.sh scripts: the output folder, the build on the GPU machine, and the training of an
# interpretable and a baseline run at 64 px with the same seed and steps (into /tmp/interp and /tmp/baseline).
set -uo pipefail
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16}
export INTERPGAN_FORCE_CUDA=1 INTERPGAN_REQUIRE_EXT=1  # a failed build stops here: no silent CPU fallback
python3 -m pip install --no-build-isolation --no-deps -e . > /tmp/build.log 2>&1 || { grep -E "error" /tmp/build.log | head; exit 1; }

# train_pair STEPS TIME_LIMIT_PER_RUN: copies each run's log and config to $OUT/{interp,baseline}_*.
# INTERP_ARGS: more `interpgan train` options for the interpretable run only (e.g. "--gmm-loss posterior").
train_pair() {
  local steps=$1 limit=$2 mode extra
  for mode in interp baseline; do
    extra=${INTERP_ARGS:-}; [ "$mode" = baseline ] && extra="--baseline"
    timeout "$limit" python3 -m interpgan_ext train --size 64 --width 64 --steps "$steps" --batch-size 64 \
        --n-images 50000 --seed 0 --out "/tmp/$mode" --no-progress $extra 2>&1 | tail -2
    cp "/tmp/$mode/log.jsonl" "$OUT/${mode}_log.jsonl"; cp "/tmp/$mode/config.json" "$OUT/${mode}_config.json"
  done
}
