#!/usr/bin/env bash
# A GGUF file wherever a model is taken: the real SmolLM2-135M-Instruct (Q4_1) from
# ../shared is inspected (its ggml types), tokenizes with its own vocabulary, answers a
# chat greedily as transformers does (tests/goldens/smollm2: "The capital of France is
# Paris."), runs a small k-ablation on the study's Konkani rows, and is a base for
# fine-tuning and merge.
# usage: gguf.sh PIVOTMT SHARED_DIR
set -euo pipefail
PIVOTMT=$1
SHARED=$2
MODEL=$SHARED/fixtures/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

out=$("$PIVOTMT" inspect "$MODEL")
echo "$out"
grep -q "Q4_1" <<<"$out"
grep -q "Q8_0" <<<"$out"
grep -q "all present with the expected shapes" <<<"$out"
"$PIVOTMT" inspect --json "$MODEL" | grep -q '"parameters": 134515008'

test "$("$PIVOTMT" tokenize -m "$MODEL" --text "<|im_start|>user 1969")" = "[1,4093,216,33,41,38,41]"

echo '[{"role":"user","content":"What is the capital of France?"}]' >"$W/chat.json"
answer=$("$PIVOTMT" generate -m "$MODEL" --messages "$W/chat.json" --greedy --weights f32 --max-new-tokens 16 2>/dev/null)
echo "answer: $answer"
test "$answer" = "The capital of France is Paris."
# The same answer with the file's Q4_1 / Q8_0 blocks multiplied in place.
answer=$("$PIVOTMT" generate -m "$MODEL" --messages "$W/chat.json" --greedy --weights gguf --max-new-tokens 16 2>/dev/null)
test "$answer" = "The capital of France is Paris."
# gguf-q8 (int8 activations, llama.cpp's arithmetic) answers as llama.cpp does on this
# file (its greedy tokens begin 60 23 39614: "L'Étoile" — not transformers' answer; see
# test_gguf's Int8ActivationsAgreeWithLlamaCpp).
ids=$("$PIVOTMT" generate -m "$MODEL" --messages "$W/chat.json" --greedy --weights gguf-q8 --max-new-tokens 3 --json 2>/dev/null)
echo "gguf-q8: $ids"
grep -q '"ids": *\[60, *23, *39614\]' <<<"$ids"

POOL=$SHARED/fixtures/original/konkani_train_pool_reconstructed.jsonl
mkdir "$W/data"
sed -n 1,30p "$POOL" >"$W/data/train.jsonl"
sed -n 31,34p "$POOL" >"$W/data/test.jsonl"
"$PIVOTMT" -q ablate --data "$W/data" --model "$MODEL" -k 0 1 --max-new-tokens 8 --greedy --weights f32 --out "$W/run" >/dev/null
for k in 0 1; do
  test "$(wc -l <"$W/run/k_$k/rows.jsonl")" -eq 4
done
# The prompts are the model's own chat template's (SmolLM2's default system turn).
grep -q "<|im_start|>system" "$W/run/k_1/results_k1.csv"
test -s "$W/run/ablation_summary.csv"

# A GGUF base for QLoRA fine-tuning and merge: the merged folder (safetensors, config.json,
# tokenizer.json written from the metadata) answers as the base with the adapter applied.
"$PIVOTMT" -q finetune --data "$W/data" -m "$MODEL" --out "$W/ft" --steps 2 --warmup 0 --batch-size 1 --grad-accum 1 \
  --k 0 --max-seq-len 96 --lora-r 4 --lr 1e-3 --base-weights f32 >/dev/null
"$PIVOTMT" merge -m "$MODEL" --adapter "$W/ft" --out "$W/merged"
test -s "$W/merged/tokenizer.json"
with_adapter=$("$PIVOTMT" generate -m "$MODEL" --adapter "$W/ft" --messages "$W/chat.json" --greedy --weights f32 --max-new-tokens 12 2>/dev/null)
merged=$("$PIVOTMT" generate -m "$W/merged" --messages "$W/chat.json" --greedy --weights f32 --max-new-tokens 12 2>/dev/null)
echo "adapter: $with_adapter / merged: $merged"
test "$with_adapter" = "$merged"
echo OK
