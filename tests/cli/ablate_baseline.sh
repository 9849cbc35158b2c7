#!/usr/bin/env bash
# The NLLB-200 baseline of pivotmt ablate and pivotmt translate, on the tiny NLLB model of
# tests/goldens (make_nllb_golden.py) beside the tiny Tower fixture:
#   - OUT/baseline holds rows.jsonl, results_baseline.csv and scores_baseline.json; the
#     summary, report.md, the detailed results and the manifest carry it; the plots draw;
#   - its translations are those of `pivotmt translate` with the same model and settings;
#   - a torn log resumes (only the missing rows are translated; the same files result);
#   - another baseline configuration is refused, --force replaces it;
#   - two shards and their merge give the single run's baseline;
#   - `pivotmt report` shows a baseline column; the dry run counts its rows;
#   - the hub layout (pytorch_model.bin only) is converted once into HF_HOME;
#   - bad language codes and a non-NLLB model are clear errors.
# usage: ablate_baseline.sh PIVOTMT SHARED_DIR GOLDENS_DIR
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
sed -n 41,52p "$POOL" >"$W/data/test.jsonl"
NLLB=$GOLDENS/nllb_tiny
LLM=(ablate --data "$W/data" --model "$SHARED/fixtures/models/tiny-tower" -k 0 1 --max-new-tokens 8 --greedy)
ARGS=("${LLM[@]}" --baseline-model "$NLLB" --baseline-weights f32)

"$PIVOTMT" -q "${ARGS[@]}" --baseline-beams 2 --out "$W/run" >"$W/out1" 2>"$W/err1"
grep -q "baseline: 12 rows translated" "$W/out1"
for f in rows.jsonl results_baseline.csv scores_baseline.json baseline_config.json; do test -s "$W/run/baseline/$f"; done
test "$(wc -l <"$W/run/baseline/rows.jsonl")" -eq 12
grep -q '"k": "baseline"' "$W/run/baseline/scores_baseline.json"
# Konkani is not an NLLB-200 language: Marathi stands in, named as a proxy everywhere, and
# the Hindi pivot is translated (the Marathi source is the proxy's language itself).
grep -q '"src_lang":"hin_Deva"' <(tr -d ' \n' <"$W/run/baseline/baseline_config.json")
grep -q '"tgt_lang":"mar_Deva"' <(tr -d ' \n' <"$W/run/baseline/baseline_config.json")
grep -q '"proxy":"GoanKonkani(gom)isnotanNLLB-200language' <(tr -d ' \n' <"$W/run/baseline/baseline_config.json")
grep -q '"proxy"' "$W/run/baseline/scores_baseline.json"
grep -q "Proxy target:.*Goan Konkani" "$W/run/report.md"
grep -q 'Goan Konkani' "$W/run/manifest.json"
grep -q "^baseline," "$W/run/ablation_summary.csv"
grep -q "^| baseline |" "$W/run/report.md"
grep -q "## Change over the baseline" "$W/run/report.md"
grep -q '"baseline"' "$W/run/ablation_detailed_results.json"
grep -q '"baseline"' "$W/run/manifest.json"
test -s "$W/run/ablation_plots.png"

# The same translations through pivotmt translate (the table's source column, beams 2, F32),
# compared as JSON strings (rows.jsonl: in the order rows finished, so sorted by row).
json_field() { sed -E "s/.*\"$1\":\"((\\\\.|[^\"\\\\])*)\".*/\\1/"; }
logged() { sed -E 's/.*"i":([0-9]+),.*/\1/' "$1" | paste - <(json_field response <"$1") | sort -n | cut -f2; }
"$PIVOTMT" -q translate --model "$NLLB" --weights f32 --beams 2 -i "$W/data/test.jsonl" --json | json_field translation >"$W/translated.txt"
test "$(wc -l <"$W/translated.txt")" -eq 12
logged "$W/run/baseline/rows.jsonl" >"$W/logged.txt"
diff "$W/translated.txt" "$W/logged.txt"

# A torn log: the first 5 rows kept plus half a line; the rerun translates the other 7.
cp "$W/run/baseline/results_baseline.csv" "$W/results_before.csv"
head -5 "$W/run/baseline/rows.jsonl" >"$W/five"
printf '{"i": 9, "resp' >>"$W/five"
cp "$W/five" "$W/run/baseline/rows.jsonl"
"$PIVOTMT" -q "${ARGS[@]}" --baseline-beams 2 --out "$W/run" >"$W/out2" 2>/dev/null
grep -q "baseline: 7 rows translated" "$W/out2"
diff "$W/results_before.csv" "$W/run/baseline/results_baseline.csv"

# Another baseline configuration: refused, then replaced with --force.
if "$PIVOTMT" -q "${ARGS[@]}" --baseline-beams 3 --out "$W/run" >/dev/null 2>"$W/err3"; then
  echo "expected a refusal of another baseline configuration" >&2; exit 1
fi
grep -q "baseline of another configuration (differs in: num_beams)" "$W/err3"
"$PIVOTMT" -q "${ARGS[@]}" --baseline-beams 3 --out "$W/run" --force >"$W/out3" 2>/dev/null
grep -q "baseline: 12 rows translated" "$W/out3"

# Two shards and their merge: the single run's baseline.
"$PIVOTMT" -q "${ARGS[@]}" --baseline-beams 2 --out "$W/s1" --shard 1/2 >/dev/null 2>&1
"$PIVOTMT" -q "${ARGS[@]}" --baseline-beams 2 --out "$W/s2" --shard 2/2 >/dev/null 2>&1
"$PIVOTMT" -q ablate --merge "$W/s1" "$W/s2" --out "$W/merged" >/dev/null 2>&1
diff "$W/results_before.csv" "$W/merged/baseline/results_baseline.csv"
grep -q "^baseline," "$W/merged/ablation_summary.csv"

# pivotmt report: a baseline column; --plots draws its lines.
"$PIVOTMT" report "$W/merged" --plots "$W/plots" 2>/dev/null >"$W/report.md"
grep -q "| run | k=0 | k=1 | baseline |" "$W/report.md"
test -s "$W/plots/merged_plots.png"

# The dry run counts the baseline's rows, and plans the baseline and COMET beside generation
# (COMET from the named model's architecture: nothing downloaded).
"$PIVOTMT" -q "${ARGS[@]}" --baseline-beams 2 --comet-model Unbabel/wmt22-comet-da --out "$W/dry" --dry-run \
  --plan-device h100 2>/dev/null >"$W/dry.md"
grep -q "baseline .* 0 rows done, 12 to translate" "$W/dry.md"
grep -q "^| NLLB-200 baseline (12) | " "$W/dry.md"
grep -q "^| COMET (36) | " "$W/dry.md"  # 2 k values × 12 rows and the baseline's 12
grep -q "^COMET: XLM-R large (the encoder of Unbabel/wmt22-comet-da): 558 M parameters" "$W/dry.md"

# The hub's layout: pytorch_model.bin converted once into HF_HOME, the same translations.
"$PIVOTMT" -q translate --model "$GOLDENS/nllb_tiny_bin" --weights f32 --beams 2 -i "$W/data/test.jsonl" --json 2>"$W/err4" |
  json_field translation >"$W/bin.txt"
grep -q "converting" "$W/err4"
diff "$W/translated.txt" "$W/bin.txt"
"$PIVOTMT" -q translate --model "$GOLDENS/nllb_tiny_bin" --weights f32 -i "$W/data/test.jsonl" -o "$W/bin2.txt" 2>"$W/err5"
if grep -q "converting" "$W/err5"; then echo "converted twice" >&2; exit 1; fi

# Errors: an unknown code names the closest; NLLB options with an LLM; a non-NLLB baseline.
if "$PIVOTMT" -q translate --model "$NLLB" --tgt-lang gom_Latn -i "$W/data/test.jsonl" >/dev/null 2>"$W/err6"; then exit 1; fi
grep -q "unknown language code 'gom_Latn'.*closest: gom_Deva" "$W/err6"
if "$PIVOTMT" -q translate --model "$SHARED/fixtures/models/tiny-tower" --data "$W/data" --tgt-lang gom_Deva -i "$W/data/test.jsonl" \
   >/dev/null 2>"$W/err7"; then exit 1; fi
grep -q "need an NLLB-200 model" "$W/err7"
if "$PIVOTMT" -q "${LLM[@]}" --baseline-model "$SHARED/fixtures/models/tiny-tower" --out "$W/bad" \
   >/dev/null 2>"$W/err8"; then exit 1; fi
grep -q "not an NLLB-200" "$W/err8"
echo OK
