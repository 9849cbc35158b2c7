#!/usr/bin/env bash
# pivotmt finetune end to end on the tiny Tower fixture: a run killed with SIGKILL at random
# moments and rerun until done gives the same losses and the same adapter bytes as an
# uninterrupted run (after a dry run's plan in the same folder); other settings on the same folder are refused; JSONL chats with
# --loss-on response train; the adapter works with generate --adapter and merge.
# usage: finetune_resume.sh PIVOTMT SHARED_DIR
set -euo pipefail
PIVOTMT=$1
SHARED=$2
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
MODEL=$SHARED/fixtures/models/tiny-tower
POOL=$SHARED/fixtures/original/konkani_train_pool_reconstructed.jsonl
mkdir "$W/data"
sed -n 1,24p "$POOL" >"$W/data/train.jsonl"
ARGS=(finetune --data "$W/data" --model "$MODEL" --retriever bm25 --k 1 --max-seq-len 200 --steps 9 --warmup 2
      --lr 1e-3 --batch-size 1 --grad-accum 2 --save-every 2 --lora-r 4)

# A dry run plans (memory by purpose, time) and trains nothing; the real run then uses the folder.
"$PIVOTMT" -q "${ARGS[@]}" --out "$W/ref" --dry-run --plan-device h100 >"$W/plan.md"
grep -q "## Fine-tuning plan on h100" "$W/plan.md"
grep -q "checkpointing\|no checkpointing" "$W/plan.md"
grep -q "^Fits.$" "$W/plan.md"
python3 -c "import json,sys; p=json.load(open(sys.argv[1])); assert p['fits'] and p['bytes']['total'] > p['bytes']['embeddings'] > 0 and p['tokens'] > 0, p" \
  "$W/ref/finetune_plan.json"
test ! -e "$W/ref/adapter_model.safetensors"
"$PIVOTMT" -q "${ARGS[@]}" --out "$W/ref"
test -s "$W/ref/adapter_model.safetensors"
test -s "$W/ref/loss_curve.png"
test "$(wc -l <"$W/ref/train_log.jsonl")" -eq 10  # the header, then 9 steps
head -1 "$W/ref/train_log.jsonl" | grep -q '"loss_normalization":"predicted"' 

# Kill at random moments until the run completes.
for attempt in $(seq 1 40); do
  test -f "$W/run/trainer_state.json" && break
  "$PIVOTMT" -q "${ARGS[@]}" --out "$W/run" &
  pid=$!
  sleep "0.$((RANDOM % 9 + 1))"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
done
"$PIVOTMT" -q "${ARGS[@]}" --out "$W/run"  # finishes (or says it is complete)
strip() { sed -E 's/"(peak_rss_bytes|seconds|tokens_per_second)":[^,}]*,?//g' "$1"; }
diff <(strip "$W/ref/train_log.jsonl") <(strip "$W/run/train_log.jsonl")
cmp "$W/ref/adapter_model.safetensors" "$W/run/adapter_model.safetensors"
echo "killed and resumed: identical losses and adapter (attempts: $attempt)"

# Another learning rate on the same folder is refused, naming the setting.
if "$PIVOTMT" -q "${ARGS[@]/1e-3/2e-3}" --out "$W/run" 2>"$W/err"; then exit 1; fi
grep -q 'lr: was 0.001, now 0.002' "$W/err"

# JSONL chats, loss on the answers only.
for i in 1 2 3 4 5 6; do
  printf '{"messages": [{"role": "user", "content": "Translate %s"}, {"role": "assistant", "content": "answer number %s"}]}\n' "$i" "$i"
done >"$W/chats.jsonl"
"$PIVOTMT" -q finetune --data "$W/chats.jsonl" --model "$MODEL" --loss-on response --steps 3 --warmup 0 --batch-size 2 \
  --grad-accum 1 --base-weights f16 --log-json --out "$W/chats" >"$W/chats.log"
test "$(grep -c '"loss"' "$W/chats.log")" -eq 3
# The answers only: a handful of target tokens per window, far fewer than the tokens.
python3 - "$W/chats.log" <<'PY' 2>/dev/null || awk -F'"target_tokens":' '{split($2,a,","); if (a[1] + 0 > 40) exit 1}' "$W/chats.log"
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    assert 0 < r["target_tokens"] < r["tokens"] / 2, r
PY

# Use the adapter: unmerged at inference, and merged into a checkpoint.
"$PIVOTMT" -q generate -m "$MODEL" --dtype f32 --adapter "$W/ref" --prompt "Hello" --greedy --max-new-tokens 4 --json >"$W/gen.json"
grep -q '"text"' "$W/gen.json"
"$PIVOTMT" -q merge -m "$MODEL" --adapter "$W/ref" --out "$W/merged"
"$PIVOTMT" -q inspect "$W/merged" >/dev/null
if "$PIVOTMT" -q merge -m "$MODEL" --adapter "$W/ref" --out "$W/merged" 2>/dev/null; then exit 1; fi
echo OK
