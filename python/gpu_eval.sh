#!/usr/bin/env bash
# On a GPU machine: build, train SynthFaces 64 px interpretable and baseline (same seed and steps), then
# `interpgan eval` and `interpgan report` on the pair. Copies configs, logs, metrics.json, the report and its
# PNGs to ${OUT:-bench/results/gpu_eval}.
OUT=${OUT:-bench/results/gpu_eval}
STEPS=${STEPS:-4000}
. "$(dirname "$0")/gpu_common.sh"
train_pair "$STEPS" "${RUN_LIMIT:-200}"
eval_args="--baseline /tmp/baseline --images ${IMAGES:-2000} --pairs 64 --seg-steps ${SEG_STEPS:-3000} --no-progress"
timeout 240 python3 -m interpgan_ext eval /tmp/interp $eval_args 2>&1 | tee "$OUT/eval.txt" | tail -20
if grep -q "below --min-seg-miou" "$OUT/eval.txt"; then  # the segmenter missed the bar: measure anyway, and say so
  echo "== segmenter below the bar; measuring with --min-seg-miou 0" | tee -a "$OUT/eval.txt"
  timeout 240 python3 -m interpgan_ext eval /tmp/interp $eval_args --min-seg-miou 0 2>&1 | tee -a "$OUT/eval.txt" | tail -20
fi
timeout 120 python3 -m interpgan_ext report /tmp/interp --baseline /tmp/baseline 2>&1 | tail -2
cp /tmp/interp/metrics.json "$OUT/" 2>/dev/null
# the device tool brings back a few files only: the report's PNGs travel as one archive
tar czf "$OUT/report.tgz" -C /tmp/interp report samples 2>/dev/null
ls -la "$OUT"
