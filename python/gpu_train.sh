#!/usr/bin/env bash
# On a GPU machine: build, then train SynthFaces at 64 px twice with the same seed and steps, interpretable
# and baseline (lambda0 = 0). Copies configs, logs and the final sample grids to ${OUT:-bench/results/gpu_train}.
OUT=${OUT:-bench/results/gpu_train}
STEPS=${STEPS:-3000}
. "$(dirname "$0")/gpu_common.sh"
python3 -m pytest -q -m cuda tests/test_data.py 2>&1 | tail -1
train_pair "$STEPS" "${RUN_LIMIT:-230}"
for mode in interp baseline; do
  last=$(ls /tmp/$mode/samples | tail -1)
  cp "/tmp/$mode/samples/$last" "$OUT/${mode}_${last}"
done
ls -la "$OUT"
