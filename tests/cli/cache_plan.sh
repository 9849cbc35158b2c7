#!/usr/bin/env bash
# pivotmt cache on a copy of the cache huggingface_hub wrote (tests/goldens/hf_cache): list,
# du, prune (a dry run, then --yes), verify (a damaged blob is named, exit status 1); and
# pivotmt plan on the demo data and the tiny fixture model (the rows, the plan, run_plan.json;
# nothing generated).
# usage: cache_plan.sh PIVOTMT SHARED_DIR GOLDENS_DIR
set -euo pipefail
PIVOTMT=$1
SHARED=$2
GOLDENS=$3
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
cp -a "$GOLDENS/hf_cache/hub" "$W/hub"
chmod -R u+w "$W/hub"
export HF_HUB_CACHE=$W/hub HF_HUB_OFFLINE=1

"$PIVOTMT" cache list >"$W/list"
grep -q "^pivotmt-test/tiny .* model .* 11.2K .* 4 .* main" "$W/list"
grep -q "^pivotmt-test/data .* dataset .* 1.1K .* 1 .* main,v1" "$W/list"
grep -q "2 repos, 12.3K on disk" "$W/list"
"$PIVOTMT" cache list -v | grep -q "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2 .*(detached)"
"$PIVOTMT" cache list --json | grep -q '"unreferenced_size": 580'
"$PIVOTMT" cache du | grep -q "prunable"

"$PIVOTMT" cache prune >"$W/dry"
grep -q "dry run: .* would be freed (3 paths)" "$W/dry"
test -d "$W/hub/models--pivotmt-test--tiny/snapshots/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2"
"$PIVOTMT" cache prune --yes | grep -q "^freed "
test ! -e "$W/hub/models--pivotmt-test--tiny/snapshots/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2"
"$PIVOTMT" cache prune | grep -q "nothing to prune"

"$PIVOTMT" cache verify | grep -q "4 blobs checked, 0 with other names skipped, 0 damaged"
blob=$(readlink "$W/hub/models--pivotmt-test--tiny/snapshots/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1/model.safetensors")
echo damaged >"$W/hub/models--pivotmt-test--tiny/snapshots/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1/$blob"
if "$PIVOTMT" cache verify >"$W/verify" 2>&1; then echo "a damaged blob passed" >&2; exit 1; fi
grep -q "pivotmt-test/tiny: blobs/$(basename "$blob"): SHA-256 is" "$W/verify"

# pivotmt plan: the dry run with the plan, for the CPU (measured) and a stated H200.
DEMO=$GOLDENS/../../data/demo
"$PIVOTMT" plan --data "$DEMO" --model "$SHARED/fixtures/models/tiny-tower" -k 0 3 --out "$W/run" --plan-device cpu >"$W/plan"
grep -q "^| 3 | 0 | 6 |" "$W/plan"
grep -q "## Run plan on cpu" "$W/plan"
grep -q "measured here" "$W/plan"
grep -q "Fits. Within 24 h it wants 1 device" "$W/plan"
grep -q '"prompt_tokens"' "$W/run/run_plan.json"
test ! -d "$W/run/k_0"
"$PIVOTMT" plan --data "$DEMO" --model "$SHARED/fixtures/models/tiny-tower" -k 0 \
  --out "$W/run" --plan-device h200 | grep -q "stated roofline"
echo OK
