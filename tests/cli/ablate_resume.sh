#!/usr/bin/env bash
# pivotmt ablate: a run killed with SIGKILL at several moments and rerun writes the same
# outputs as an uninterrupted run; sampled runs do not depend on batching; shards joined by
# --merge (one shard killed and resumed) equal the single run; a folder of another
# configuration is refused unless --force; --log-json writes JSON lines; pivotmt translate
# reads lines and a table file.
# usage: ablate_resume.sh PIVOTMT SHARED_DIR
set -euo pipefail
PIVOTMT=$1
SHARED=$2
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
POOL=$SHARED/fixtures/original/konkani_train_pool_reconstructed.jsonl
mkdir "$W/data"
sed -n 1,40p "$POOL" >"$W/data/train.jsonl"
sed -n 41,52p "$POOL" >"$W/data/test.jsonl"
ARGS=(ablate --data "$W/data" --model "$SHARED/fixtures/models/tiny-tower" -k 0 1 3 --max-new-tokens 24)

# Outputs that must not depend on interruptions (timings excluded).
same_outputs() {
  local a=$1 b=$2
  for k in 0 1 3; do
    cmp "$a/k_$k/results_k$k.csv" "$b/k_$k/results_k$k.csv"
    diff <(grep -v inference_time_minutes "$a/k_$k/scores_k$k.json") <(grep -v inference_time_minutes "$b/k_$k/scores_k$k.json")
  done
  diff <(cut -d, -f1-5,7 "$a/ablation_summary.csv") <(cut -d, -f1-5,7 "$b/ablation_summary.csv")
}

"$PIVOTMT" -q "${ARGS[@]}" --greedy --max-batch 2 --out "$W/ref" >/dev/null
test "$(wc -l <"$W/ref/k_3/results_k3.csv")" -ge 13

for delay in 0.1 0.4 0.8 1.2 1.6; do
  "$PIVOTMT" -q "${ARGS[@]}" --greedy --max-batch 2 --out "$W/killed" >/dev/null 2>&1 &
  pid=$!
  sleep "$delay"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
done
msg=$("$PIVOTMT" -q "${ARGS[@]}" --greedy --max-batch 2 --out "$W/killed")
echo "$msg"
resumed=$(echo "$msg" | sed -n 's/.* \([0-9]*\) resumed.*/\1/p')
test "$resumed" -gt 0
same_outputs "$W/ref" "$W/killed"
# Every row exactly once in each log.
for k in 0 1 3; do
  test "$(wc -l <"$W/killed/k_$k/rows.jsonl")" -eq 12
done

# Three shards (the second killed once and resumed), merged: the single run's outputs.
"$PIVOTMT" -q "${ARGS[@]}" --greedy --shard 2/3 --max-batch 1 --out "$W/sh2" >/dev/null 2>&1 &
pid=$!
sleep 0.5
kill -9 "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
for i in 1 2 3; do
  "$PIVOTMT" -q "${ARGS[@]}" --greedy --shard $i/3 --max-batch $i --out "$W/sh$i" | grep -q "shard $i/3"
done
test ! -e "$W/sh1/ablation_summary.csv"
if "$PIVOTMT" ablate --merge "$W/sh1" "$W/sh3" --out "$W/merged" 2>"$W/err"; then
  echo "expected a missing-shard error" >&2
  exit 1
fi
grep -q "shard 2/3 is missing" "$W/err"
"$PIVOTMT" ablate --merge "$W/sh1" "$W/sh2" "$W/sh3" --out "$W/merged" >/dev/null
same_outputs "$W/ref" "$W/merged"

# Two models: a folder each and the cross-run tables; their shards merge folder by folder.
TWO=(ablate --data "$W/data" --model "$SHARED/fixtures/models/tiny-tower" --model "$SHARED/fixtures/models/tiny-sharded"
  -k 0 1 --max-new-tokens 8 --limit 4 --greedy)
"$PIVOTMT" -q "${TWO[@]}" --out "$W/two" >/dev/null
grep -q "| tiny-sharded |" "$W/two/cross_report.md"
"$PIVOTMT" -q "${TWO[@]}" --shard 1/2 --out "$W/two1" >/dev/null
"$PIVOTMT" -q "${TWO[@]}" --shard 2/2 --out "$W/two2" >/dev/null
"$PIVOTMT" -q ablate --merge "$W/two1" "$W/two2" --out "$W/two-merged" >/dev/null
for m in tiny-tower tiny-sharded; do
  for k in 0 1; do cmp "$W/two/$m/k_$k/results_k$k.csv" "$W/two-merged/$m/k_$k/results_k$k.csv"; done
done

# --dry-run: the plan, no model loaded, nothing written but the index.
"$PIVOTMT" -q "${ARGS[@]}" --dry-run --out "$W/dry" >"$W/plan"
test ! -e "$W/dry/ablation_config.json"
test ! -e "$W/dry/k_0"
grep -q '^| 3 | 0 | 12 | ' "$W/plan"
"$PIVOTMT" -q "${ARGS[@]}" --greedy --max-batch 2 --dry-run --out "$W/ref" | grep -q '^| 3 | 12 | 0 | '

# --log-json: one JSON object per line, ending with the outcome.
"$PIVOTMT" "${ARGS[@]}" --greedy --limit 3 --log-json --out "$W/json" >/dev/null 2>"$W/log"
grep -q '^{"event":"progress",' "$W/log"
tail -n 1 "$W/log" | grep -q '^{"event":"done",.*"rows_generated":9'
if grep -v '^{' "$W/log"; then
  echo "non-JSON line in --log-json output" >&2
  exit 1
fi

# translate: pivot<TAB>source lines from stdin, or a table file; one translation per line.
head -n 3 "$W/data/test.jsonl" >"$W/three.jsonl"
test "$("$PIVOTMT" -q translate --data "$W/data" --model "$SHARED/fixtures/models/tiny-tower" --greedy \
  --max-new-tokens 8 --shots 2 --index "$W/tindex" --input "$W/three.jsonl" | wc -l)" -eq 3
printf 'एक\tएक\nदोन\tदोन\n' | "$PIVOTMT" -q translate --data "$W/data" --model "$SHARED/fixtures/models/tiny-tower" \
  --max-new-tokens 8 --index "$W/tindex" --json >"$W/t.jsonl"
test "$(grep -c '"translation":' "$W/t.jsonl")" -eq 2
if printf 'no tab here\n' | "$PIVOTMT" -q translate --data "$W/data" --model "$SHARED/fixtures/models/tiny-tower" \
  --index "$W/tindex" 2>"$W/err"; then
  echo "expected a missing-tab error" >&2
  exit 1
fi
grep -q "stdin:1: expected 'pivot<TAB>source'" "$W/err"

# A TOML config (toml++): tables group keys, the command line wins, errors name the line.
cat >"$W/run.toml" <<EOF
data = "$W/data"
model = "$SHARED/fixtures/models/tiny-tower"
k = [0]
limit = 2
[generation]
greedy = true
max-new-tokens = 5
seed = 9
EOF
"$PIVOTMT" -q ablate "$W/run.toml" --seed 11 --out "$W/toml" >/dev/null
grep -q '"max_new_tokens": 5' "$W/toml/ablation_config.json"
grep -q '"seed": 11' "$W/toml/ablation_config.json"
grep -q '"greedy": true' "$W/toml/ablation_config.json"
printf 'limit = 2\nmax-new-token = 5\n' >"$W/bad.toml"
if "$PIVOTMT" -q ablate "$W/bad.toml" 2>"$W/err"; then
  echo "expected an unknown-key error" >&2
  exit 1
fi
grep -q "bad.toml:2: unknown key 'max-new-token'" "$W/err"
# translate reads the same config: ablate's own keys (k, limit) are skipped.
test "$(printf 'एक\tएक\n' | "$PIVOTMT" -q translate "$W/run.toml" --index "$W/tindex" | wc -l)" -eq 1

# Sampling: per-row seeds make the outputs independent of the batch size.
"$PIVOTMT" -q "${ARGS[@]}" --seed 3 --max-batch 1 --out "$W/s1" >/dev/null
"$PIVOTMT" -q "${ARGS[@]}" --seed 3 --max-batch 5 --out "$W/s5" >/dev/null
same_outputs "$W/s1" "$W/s5"

# Another configuration in the same folder: refused, then replaced with --force.
if "$PIVOTMT" -q "${ARGS[@]}" --seed 4 --out "$W/s1" 2>"$W/err"; then
  echo "expected a refusal" >&2
  exit 1
fi
grep -q "another configuration (differs in: seed)" "$W/err"
"$PIVOTMT" -q "${ARGS[@]}" --seed 4 --force --out "$W/s1" >/dev/null
echo OK
