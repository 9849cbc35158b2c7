#!/usr/bin/env bash
# NLLB-200 on the GPU through the CLI, on the CUDA emulator: `translate --device cuda:0`
# gives the CPU's translations (F32, beam search); F16 storage asked of the GPU
# is named in a note and the GPU keeps F32; the ablation's baseline runs on the LLM's
# device and logs the same translations.
# usage: nllb_emulated_gpu.sh PIVOTMT_EMULATED SHARED_DIR GOLDENS_DIR
set -euo pipefail
PIVOTMT=$1
SHARED=$2
GOLDENS=$3
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
export HF_HOME=$W/hf HF_HUB_OFFLINE=1 PIVOTMT_CUDA_EMULATOR_DEVICES=1
POOL=$SHARED/fixtures/original/konkani_train_pool_reconstructed.jsonl
mkdir "$W/data"
sed -n 1,20p "$POOL" >"$W/data/train.jsonl"
sed -n 41,45p "$POOL" >"$W/data/test.jsonl"
NLLB=$GOLDENS/nllb_tiny
json_field() { sed -E "s/.*\"$1\":\"((\\\\.|[^\"\\\\])*)\".*/\\1/"; }

for beams in 3; do  # greedy: test_gpu_encoder's 70 golden cases
  "$PIVOTMT" -q translate --model "$NLLB" --weights f32 --beams $beams --device cpu -i "$W/data/test.jsonl" --json |
    json_field translation >"$W/cpu$beams.txt"
  "$PIVOTMT" -q translate --model "$NLLB" --weights f32 --beams $beams --device cuda:0 -i "$W/data/test.jsonl" --json |
    json_field translation >"$W/gpu$beams.txt"
  test "$(wc -l <"$W/gpu$beams.txt")" -eq 5
  diff "$W/cpu$beams.txt" "$W/gpu$beams.txt"
done
"$PIVOTMT" translate --model "$NLLB" --weights f16 --beams 3 --device cuda:0 -i "$W/data/test.jsonl" --json \
  2>"$W/err" | json_field translation >"$W/gpu_f16.txt"
grep -q "note: NLLB on cuda:0 (.*) keeps its weights in F32 (--weights f16 is a CPU storage format)" "$W/err"
diff "$W/cpu3.txt" "$W/gpu_f16.txt"

# The baseline of an ablation on the emulated GPU (the LLM's device): the CPU's translations.
"$PIVOTMT" -q ablate --data "$W/data" --model "$SHARED/fixtures/models/tiny-tower" -k 0 --max-new-tokens 4 --greedy \
  --device cuda:0 --baseline-model "$NLLB" --baseline-weights f32 --baseline-beams 3 --out "$W/run" >"$W/out" 2>/dev/null
grep -q "baseline: 5 rows translated" "$W/out"
sed -E 's/.*"i":([0-9]+),.*/\1/' "$W/run/baseline/rows.jsonl" | paste - <(json_field response <"$W/run/baseline/rows.jsonl") |
  sort -n | cut -f2 >"$W/logged.txt"
diff "$W/cpu3.txt" "$W/logged.txt"
echo OK
