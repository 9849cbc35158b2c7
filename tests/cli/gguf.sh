#!/usr/bin/env bash
# A GGUF file wherever a model is taken: the real SmolLM2-135M-Instruct (Q4_1) from
# ../shared is inspected (its ggml types), tokenizes with its own vocabulary, answers a
# chat greedily as transformers does (tests/goldens/smollm2: "The capital of France is
# Paris."), and runs a small k-ablation on the study's Konkani rows.
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
echo OK
