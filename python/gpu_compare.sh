#!/usr/bin/env bash
# On a GPU machine: train SynthFaces 64 px interpretable and baseline (same seed and steps), then run the analysis
# toolkit on them: compare, boundaries, sefa, ganspace, latent-shift, ace. Brings back the numbers and PNGs
# (as one archive) in ${OUT:-bench/results/gpu_compare}.
set -uo pipefail
OUT=${OUT:-bench/results/gpu_compare}
STEPS=${STEPS:-3000}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16}
python3 -m pip install --no-build-isolation --no-deps -e . > /tmp/build.log 2>&1 || { grep -E "error" /tmp/build.log | head; exit 1; }
for mode in interp baseline; do
  extra=""; [ "$mode" = baseline ] && extra="--baseline"
  timeout "${RUN_LIMIT:-150}" python3 -m interpgan_ext train --size 64 --width 64 --steps "$STEPS" --batch-size 64 \
      --n-images 50000 --seed 0 --out "/tmp/$mode" --no-progress $extra 2>&1 | tail -1
done
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
