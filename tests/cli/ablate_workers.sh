#!/usr/bin/env bash
# pivotmt ablate --workers / --devices: worker processes on interleaved shards, merged when
# all finish, give the single run's files; a failing worker is reported with its shard,
# device and log while the others finish; rerunning resumes only its rows.
# usage: ablate_workers.sh PIVOTMT SHARED_DIR
set -euo pipefail
PIVOTMT=$1
SHARED=$2
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
export HF_HUB_OFFLINE=1
POOL=$SHARED/fixtures/original/konkani_train_pool_reconstructed.jsonl
mkdir "$W/data"
sed -n 1,40p "$POOL" >"$W/data/train.jsonl"
sed -n 41,51p "$POOL" >"$W/data/test.jsonl"
ARGS=(ablate --data "$W/data" --model "$SHARED/fixtures/models/tiny-tower" -k 0 2 --max-new-tokens 8 --greedy)
same_outputs() {  # the results of two runs, k by k (timings aside)
  for k in 0 2; do cmp "$1/k_$k/results_k$k.csv" "$2/k_$k/results_k$k.csv"; done
  diff <(cut -d, -f1-5,7 "$1/ablation_summary.csv") <(cut -d, -f1-5,7 "$2/ablation_summary.csv")
}

"$PIVOTMT" -q "${ARGS[@]}" --out "$W/single" >/dev/null 2>&1

# Three CPU workers: three shards, merged.
"$PIVOTMT" "${ARGS[@]}" --workers 3 --out "$W/three" >"$W/out1" 2>"$W/err1"
for i in 1 2 3; do test -f "$W/three/shards/$i-of-3/ablation_config.json"; grep -q "== worker $i/3: exit status 0" "$W/three/shards/$i-of-3/worker.log"; done
grep -q "3 workers: 22/22 rows" "$W/err1"
same_outputs "$W/single" "$W/three"

# A worker on a device that is not there fails; the other finishes; the error names it.
if "$PIVOTMT" -q "${ARGS[@]}" --devices cpu,cuda:7 --out "$W/two" >/dev/null 2>"$W/err2"; then
  echo "expected a failed worker" >&2; exit 1
fi
grep -q "1 of 2 workers failed" "$W/err2"
grep -q "worker 2 (shard 2/2, device cuda:7): exit status 1; log $W/two/shards/2-of-2/worker.log" "$W/err2"
grep -q "== worker 1/2: exit status 0" "$W/two/shards/1-of-2/worker.log"
test ! -f "$W/two/ablation_summary.csv"
# Rerun on CPUs: shard 1 has every row (nothing generated again), shard 2 runs; merged as one run.
"$PIVOTMT" -q "${ARGS[@]}" --devices cpu,cpu --out "$W/two" >/dev/null 2>&1
grep -q '"rows_generated":0' <(tr -d ' ' <"$W/two/shards/1-of-2/worker.log" | grep '"event":"done"' | tail -1)
same_outputs "$W/single" "$W/two"

# Bad plans are refused before anything starts.
if "$PIVOTMT" -q "${ARGS[@]}" --workers 2 --devices cpu --out "$W/x" 2>"$W/err3"; then exit 1; fi
grep -q "disagree" "$W/err3"
if "$PIVOTMT" -q "${ARGS[@]}" --devices cpu,gpu3 --out "$W/x" 2>"$W/err4"; then exit 1; fi
grep -q "'gpu3' is not cpu or cuda:N" "$W/err4"
echo OK
