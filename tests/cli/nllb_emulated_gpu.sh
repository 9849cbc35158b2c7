#!/usr/bin/env bash
# NLLB-200 on the GPU through the CLI, on the CUDA emulator: `translate --device cuda:0
# --weights f32` gives the CPU's translations (F32, beam search); --weights f16 (the
# default) runs on the tensor cores and translates every line; int8, a CPU storage, is
# named in a note and stored as F16 (the F16 run's translations); the ablation's baseline
# runs on the LLM's device and logs the F32 translations. Then COMET with F16 weights
# through `score --device cuda:0`: within 1e-3 of the CPU's F32 score.
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
"$PIVOTMT" -q translate --model "$NLLB" --weights f16 --beams 3 --device cuda:0 -i "$W/data/test.jsonl" --json |
  json_field translation >"$W/gpu_f16.txt"
test "$(wc -l <"$W/gpu_f16.txt")" -eq 5
echo "F16 weights on the device: $(diff "$W/cpu3.txt" "$W/gpu_f16.txt" | grep -c '^>' || true) of 5 translations differ from the CPU's F32"
"$PIVOTMT" translate --model "$NLLB" --weights int8 --beams 3 --device cuda:0 -i "$W/data/test.jsonl" --json \
  2>"$W/err" | json_field translation >"$W/gpu_int8.txt"
grep -q "note: NLLB on cuda:0 (.*F16 weights.*) stores its weights as F16 (--weights int8 is a CPU storage format)" "$W/err"
diff "$W/gpu_f16.txt" "$W/gpu_int8.txt"

# The baseline of an ablation on the emulated GPU (the LLM's device): the CPU's translations.
"$PIVOTMT" -q ablate --data "$W/data" --model "$SHARED/fixtures/models/tiny-tower" -k 0 --max-new-tokens 4 --greedy \
  --device cuda:0 --baseline-model "$NLLB" --baseline-weights f32 --baseline-beams 3 --out "$W/run" >"$W/out" 2>/dev/null
grep -q "baseline: 5 rows translated" "$W/out"
sed -E 's/.*"i":([0-9]+),.*/\1/' "$W/run/baseline/rows.jsonl" | paste - <(json_field response <"$W/run/baseline/rows.jsonl") |
  sort -n | cut -f2 >"$W/logged.txt"
diff "$W/cpu3.txt" "$W/logged.txt"

# COMET with F16 weights on the device.
COMET=(--metrics comet --comet-model "$GOLDENS/comet_tiny_hub" --comet-encoder "$GOLDENS/unigram" --src "$W/cpu3.txt"
       --hyp "$W/gpu_f16.txt" --ref "$W/cpu3.txt")
cpu=$("$PIVOTMT" score "${COMET[@]}" --device cpu 2>/dev/null | sed -n 's/^COMET = \([-0-9.]*\) .*/\1/p')
"$PIVOTMT" score "${COMET[@]}" --device cuda:0 --comet-weights f16 --json 2>/dev/null >"$W/comet.json"
grep -q '"weights": "f16"' "$W/comet.json"
grep -q '"device": "cuda:0 (.*F16 weights on the tensor cores' "$W/comet.json"
gpu=$(sed -n 's/^ *"score": \([-0-9.e]*\),\{0,1\}$/\1/p' "$W/comet.json" | head -1)
awk -v a="$gpu" -v b="$cpu" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(a != "" && d < 1e-3) }' ||
  { echo "COMET with F16 weights on the device: $gpu, the CPU's F32: $cpu" >&2; exit 1; }
echo OK
