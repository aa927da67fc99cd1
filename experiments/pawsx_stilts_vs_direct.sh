#!/usr/bin/env bash
# The #5 experiment: PAWS-X STILTs (NLI intermediate) vs PAWS-X direct, seeds 0-2, on the offline
# e5-small base, zero-shot in 7 languages on PAWS-X ids 1500-1999; then the paired comparison.
#
# Jobs (condition, seed) run two at a time, one thread each (on a 2-core CPU that beats one
# process with two threads), in the order direct 0, stilts 0, direct 1, ... so finished pairs are
# usable while later seeds train. Re-running resumes: finished seeds are skipped and interrupted
# phases resume from their last evaluation. Extra arguments are overrides for the STILTs runs,
# e.g. --set intermediate.epochs=1 (direct fine-tuning has no intermediate phase).
set -euo pipefail
OUT=${1:-runs}
shift || true
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$OUT/logs"
STILTS_OVERRIDES="$*"
export OUT STILTS_OVERRIDES

run_job() {
    local condition=$1 seed=$2 extra=""
    [ "$condition" = stilts ] && extra=$STILTS_OVERRIDES
    # shellcheck disable=SC2086
    polyprobe train --recipe "pawsx-$condition" --set "seeds=[$seed]" \
        --set "output_dir=$OUT/pawsx-$condition" $extra > "$OUT/logs/$condition-$seed.log" 2>&1
}
export -f run_job

printf '%s\n' "direct 0" "stilts 0" "direct 1" "stilts 1" "direct 2" "stilts 2" |
    xargs -P 2 -L 1 bash -c 'run_job "$0" "$1"'

# All seeds finished: these passes only collect them into summary.json.
polyprobe train --recipe pawsx-direct --set "output_dir=$OUT/pawsx-direct"
# shellcheck disable=SC2086
polyprobe train --recipe pawsx-stilts --set "output_dir=$OUT/pawsx-stilts" $STILTS_OVERRIDES
polyprobe train-compare "$OUT/pawsx-direct" "$OUT/pawsx-stilts" --out "$OUT/comparison"
