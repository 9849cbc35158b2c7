#!/usr/bin/env bash
# pivotmt ablate: a run killed with SIGKILL at several moments and rerun writes the same
# outputs as an uninterrupted run; sampled runs do not depend on batching; a folder of
# another configuration is refused unless --force.
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
