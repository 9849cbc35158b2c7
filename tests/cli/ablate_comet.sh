#!/usr/bin/env bash
# COMET in pivotmt ablate, report and score: the tiny COMET given as a hub-style folder
# (checkpoints/model.ckpt + hparams.yaml) is converted once into HF_HOME; every k's
# scores_k{k}.json, the summary, report.md (with the paired test) and a plot carry it; the
# same rows scored by `pivotmt score --csv` and rescored by `pivotmt report` give the same
# numbers; a rerun (nothing to generate) reconverts nothing and writes the same scores.
# usage: ablate_comet.sh PIVOTMT SHARED_DIR GOLDENS_DIR
set -euo pipefail
PIVOTMT=$1
SHARED=$2
GOLDENS=$3
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
export HF_HOME=$W/hf HF_HUB_OFFLINE=1
POOL=$SHARED/fixtures/original/konkani_train_pool_reconstructed.jsonl
mkdir "$W/data"
sed -n 1,40p "$POOL" >"$W/data/train.jsonl"
sed -n 41,50p "$POOL" >"$W/data/test.jsonl"
ARGS=(ablate --data "$W/data" --model "$SHARED/fixtures/models/tiny-tower" -k 0 1 --max-new-tokens 12 --greedy
      --comet-model "$GOLDENS/comet_tiny_hub" --comet-encoder "$GOLDENS/unigram" --out "$W/run")

"$PIVOTMT" -q "${ARGS[@]}" 2>"$W/err1" >/dev/null
grep -q "converting" "$W/err1"
test -f "$(find "$W/hf/pivotmt/comet" -name model.safetensors | head -1)"
comet_of() { sed -n 's/^ *"COMET Score": \(-\{0,1\}[0-9][0-9.e+-]*\),\{0,1\}$/\1/p' "$1"; }
for k in 0 1; do
  test -n "$(comet_of "$W/run/k_$k/scores_k$k.json")"
  # An interval and a signature beside the score.
  test "$(grep -c '"COMET": ' "$W/run/k_$k/scores_k$k.json")" -eq 2
  # The signature names the model as given, not the cache folder its checkpoint became.
  grep -q "\"COMET\": \"model:$GOLDENS/comet_tiny_hub|" "$W/run/k_$k/scores_k$k.json"
  if grep -q 'model:[^|]*pivotmt/comet' "$W/run/k_$k/scores_k$k.json"; then echo "cache folder in the signature" >&2; exit 1; fi
done
head -1 "$W/run/ablation_summary.csv" | grep -q ",COMET$"
grep -q "ΔCOMET" "$W/run/report.md"
test -s "$W/run/ablation_comet.png"
test -s "$W/run/ablation_comet.svg"

# The k = 1 rows through pivotmt score: the same COMET.
want=$(printf '%.4f' "$(comet_of "$W/run/k_1/scores_k1.json")")
got=$("$PIVOTMT" score --csv "$W/run/k_1/results_k1.csv" --hyp-column response --ref-column gom --source-column mar \
      --metrics comet --comet-model "$GOLDENS/comet_tiny_hub" --comet-encoder "$GOLDENS/unigram" 2>/dev/null |
      sed -n 's/^COMET = \([-0-9.]*\) .*/\1/p')
test "$got" = "$want" || { echo "score gives $got, the ablation $want" >&2; exit 1; }
# With F16 weights: within 1e-3 of the F32 score, and the output says which weights.
"$PIVOTMT" score --csv "$W/run/k_1/results_k1.csv" --hyp-column response --ref-column gom --source-column mar \
  --metrics comet --comet-model "$GOLDENS/comet_tiny_hub" --comet-encoder "$GOLDENS/unigram" --comet-weights f16 \
  2>/dev/null >"$W/f16.txt"
grep -q "^COMET = .*, F16 weights)" "$W/f16.txt"
f16=$(sed -n 's/^COMET = \([-0-9.]*\) .*/\1/p' "$W/f16.txt")
awk -v a="$f16" -v b="$want" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 1e-3) }' ||
  { echo "F16 weights give $f16, F32 $want" >&2; exit 1; }
if "$PIVOTMT" score --hyp "$W/f16.txt" --ref "$W/f16.txt" --comet-weights f16 2>"$W/err_w"; then
  echo "expected an error for --comet-weights without --comet-model" >&2; exit 1
fi
grep -q -- "--comet-weights without --metrics comet" "$W/err_w"

# pivotmt report: rescored with the model, and read from the folder without one.
"$PIVOTMT" report "$W/run" --comet-model "$GOLDENS/comet_tiny_hub" --comet-encoder "$GOLDENS/unigram" 2>/dev/null >"$W/report.md"
grep -q "^## COMET" "$W/report.md"
grep -F -q "$want" "$W/report.md"
"$PIVOTMT" report "$W/run" 2>/dev/null | grep -F -q "$want"

# A rerun: nothing generated, nothing converted again, the same scores.
cp "$W/run/k_1/scores_k1.json" "$W/before.json"
"$PIVOTMT" -q "${ARGS[@]}" 2>"$W/err2" >/dev/null
if grep -q "converting" "$W/err2"; then echo "converted twice" >&2; exit 1; fi
diff <(grep -v inference_time "$W/before.json") <(grep -v inference_time "$W/run/k_1/scores_k1.json")

# A metric folder with neither weights nor a checkpoint: a clear error, before any generation.
mkdir "$W/empty"
if "$PIVOTMT" -q ablate --data "$W/data" --model "$SHARED/fixtures/models/tiny-tower" -k 0 --out "$W/run2" \
   --comet-model "$W/empty" --comet-encoder "$GOLDENS/unigram" 2>"$W/err3"; then
  echo "expected an error for a COMET folder without weights" >&2; exit 1
fi
grep -q "neither model.safetensors nor checkpoints/model.ckpt" "$W/err3"
test ! -e "$W/run2/k_0/rows.jsonl"
echo OK
