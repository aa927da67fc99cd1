#!/usr/bin/env bash
# The #5 experiment: PAWS-X STILTs (NLI intermediate) vs PAWS-X direct, seeds 0-2, on the offline
# e5-small base, zero-shot in 7 languages on PAWS-X ids 1500-1999; then the paired comparison.
# Runs seed by seed so finished pairs are usable while later seeds train; re-running resumes.
set -euo pipefail
OUT=${1:-runs}
for seed in 0 1 2; do
    polyprobe train --recipe pawsx-direct --set "seeds=[$seed]" --set "output_dir=$OUT/pawsx-direct"
    polyprobe train --recipe pawsx-stilts --set "seeds=[$seed]" --set "output_dir=$OUT/pawsx-stilts"
done
polyprobe train --recipe pawsx-direct --set "output_dir=$OUT/pawsx-direct"
polyprobe train --recipe pawsx-stilts --set "output_dir=$OUT/pawsx-stilts"
polyprobe train-compare "$OUT/pawsx-direct" "$OUT/pawsx-stilts" --out "$OUT/comparison"
