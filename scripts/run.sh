#!/usr/bin/env bash
# The main command (README): sets up, builds and runs what pivotmt can do today.
# With TowerInstruct-7B in the Hugging Face cache (or PIVOTMT_MODEL=dir-or-hub-id) it
# inspects that model; otherwise it generates a tiny random checkpoint and runs the same
# steps on it. (The ablation issue makes this the full translation study.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh >/dev/null
PIVOTMT=./build/apps/pivotmt/pivotmt
OUT="${PIVOTMT_OUT:-out/demo}"
mkdir -p "$OUT"

$PIVOTMT info
MODEL="${PIVOTMT_MODEL:-Unbabel/TowerInstruct-7B-v0.1}"
if HF_HUB_OFFLINE=1 $PIVOTMT -q inspect "$MODEL" >"$OUT/inspect.txt" 2>/dev/null; then
  echo "== $MODEL (from the cache)"
  cat "$OUT/inspect.txt"
  exit 0
fi
echo
echo "== $MODEL is not in the Hugging Face cache and cannot be downloaded here."
echo "   Demonstration on a tiny generated model instead (random weights: only the"
echo "   machinery is real). To use the real model: pivotmt download $MODEL"
echo
$PIVOTMT dev make-model --arch llama --preset tiny --shards 2 --out "$OUT/tiny-tower" --seed 1
$PIVOTMT inspect "$OUT/tiny-tower"
$PIVOTMT inspect --json "$OUT/tiny-tower" >"$OUT/tiny-tower.inspect.json"
$PIVOTMT dev make-model --arch llama3 --preset tiny --out "$OUT/tiny-llama3" --dtype bf16
$PIVOTMT inspect "$OUT/tiny-llama3"
echo
echo "outputs in $OUT/"
