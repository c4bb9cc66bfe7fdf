#!/usr/bin/env bash
# On a GPU machine: train SynthFaces 64 px interpretable and baseline (same seed and steps), then run the analysis
# toolkit on them: compare, boundaries, sefa, latent-shift, ace. Brings back the logs, numbers and PNGs
# (as one archive) in ${OUT:-bench/results/gpu_compare}.
OUT=${OUT:-bench/results/gpu_compare}
STEPS=${STEPS:-3000}
. "$(dirname "$0")/gpu_common.sh"
train_pair "$STEPS" "${RUN_LIMIT:-150}"
ig() { timeout 120 python3 -m interpgan_ext "$@" 2>&1 | tee -a "$OUT/analysis.txt" | tail -3; }
ig compare /tmp/interp /tmp/baseline --images 1000 --samples 4000 --seg-steps 3000 --clf-steps 1500
cp /tmp/interp/compare.json "$OUT/"
cp /tmp/interp/segmenter_64px.pt /tmp/interp/attributes_64px.pt /tmp/baseline/  # trained once, on SynthFaces only
for run in interp baseline; do
  echo "== $run" >> "$OUT/analysis.txt"
  ig boundaries /tmp/$run --samples 5000 --clf-steps 1500 --out /tmp/$run/boundaries.png
  ig sefa /tmp/$run --k 4
  ig latent-shift /tmp/$run --seg-steps 3000
  ig ace /tmp/$run --part hair --samples 64
done
tar czf "$OUT/pngs.tgz" -C /tmp interp/boundaries.png interp/sefa.png interp/latent_shift.png interp/ace_hair.png \
    interp/compare_units_interpretable.png interp/compare_units_baseline.png baseline/boundaries.png \
    baseline/sefa.png baseline/latent_shift.png baseline/ace_hair.png 2>/dev/null
ls -la "$OUT"
