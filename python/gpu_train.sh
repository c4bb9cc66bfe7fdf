#!/usr/bin/env bash
# On a GPU machine: build, then train SynthFaces at 64 px twice with the same seed and steps, interpretable
# and baseline (lambda0 = 0). Copies configs, logs and the final sample grids to ${OUT:-bench/results/gpu_train}.
set -uo pipefail
OUT=${OUT:-bench/results/gpu_train}
STEPS=${STEPS:-3000}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16}
python3 -m pip install --no-build-isolation --no-deps -e . > /tmp/build.log 2>&1 || { grep -E "error" /tmp/build.log | head; exit 1; }
python3 -m pytest -q -m cuda tests/test_data.py 2>&1 | tail -1
for mode in interp baseline; do
  extra=""; [ "$mode" = baseline ] && extra="--baseline"
  timeout "${RUN_LIMIT:-230}" python3 -m interpgan_ext train --size 64 --width 64 --steps "$STEPS" --batch-size 64 \
      --n-images 50000 --seed 0 --out "/tmp/$mode" --no-progress $extra 2>&1 | tail -3
  last=$(ls /tmp/$mode/samples | tail -1)
  cp "/tmp/$mode/log.jsonl" "$OUT/${mode}_log.jsonl"; cp "/tmp/$mode/config.json" "$OUT/${mode}_config.json"
  cp "/tmp/$mode/samples/$last" "$OUT/${mode}_${last}"
done
ls -la "$OUT"
