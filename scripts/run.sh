#!/usr/bin/env bash
# The main command (README): sets up, builds and runs the study.
# With TowerInstruct-7B in the Hugging Face cache (or PIVOTMT_MODEL=dir-or-hub-id) it runs
# the original's Konkani k-ablation (configs/konkani-tower.toml) with that model;
# otherwise a demonstration: a tiny random model and the project's small demo corpus
# (data/demo), a full ablation (on the GPU when one is visible, else the CPU) with every output file.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== building pivotmt (the program only: the tests build when scripts/test.sh asks; a few minutes)"
# ninja's [done/total] lines as a percentage every 10% (warnings and errors pass through).
bash scripts/build.sh -- pivotmt 2>&1 | awk '
  match($0, /^\[[0-9]+\/[0-9]+\]/) {
    split(substr($0, 2, RLENGTH - 2), n, "/")
    p = int(100 * n[1] / n[2])
    if (p >= last + 10 || n[1] == n[2]) { printf "build: %3d%% (%d of %d steps)\n", p, n[1], n[2]; fflush(); last = p }
    next
  }
  { print; fflush() }'
PIVOTMT=./build/apps/pivotmt/pivotmt
OUT="${PIVOTMT_OUT:-out/demo}"
mkdir -p "$OUT"

$PIVOTMT info
MODEL="${PIVOTMT_MODEL:-Unbabel/TowerInstruct-7B-v0.1}"
if HF_HUB_OFFLINE=1 $PIVOTMT -q inspect "$MODEL" >"$OUT/inspect.txt" 2>/dev/null; then
  echo "== $MODEL (from the cache)"
  cat "$OUT/inspect.txt"
  $PIVOTMT ablate configs/konkani-tower.toml --model "$MODEL" --out "$OUT/konkani-tower"
  exit 0
fi
echo
echo "== $MODEL is not in the Hugging Face cache and cannot be downloaded here."
echo "   Demonstration on a tiny generated model instead (random weights: only the"
echo "   machinery is real). To use the real model: pivotmt download $MODEL"
echo
$PIVOTMT dev make-model --arch llama --preset tiny --shards 2 --out "$OUT/tiny-tower" --seed 1
$PIVOTMT inspect "$OUT/tiny-tower"
$PIVOTMT inspect --json "$OUT/tiny-tower" >"$OUT/tiny-tower.inspect.json"
echo
echo "== Ablation demo: data/demo (30 example rows, 6 test rows; Hindi pivot, Marathi source,"
echo "   Konkani target), k = 0 1 3 5 7 10, BM25 retrieval, the original's sampling settings,"
echo "   on a tiny random model with a byte-level tokenizer and TowerInstruct's chat template."
echo "   Its translations are gibberish and its scores near zero: only the machinery is real."
echo "   The NLLB-200 baseline beside it is the tests' tiny random M2M100 model (tests/goldens/nllb_tiny)."
$PIVOTMT dev make-model --arch llama --preset tiny --byte-tokenizer --out "$OUT/tiny-byte-tower" --seed 1 >/dev/null
$PIVOTMT ablate --data data/demo --pivot hin --source mar --target gom --model "$OUT/tiny-byte-tower" \
  --retriever bm25 --max-new-tokens 48 --baseline-model tests/goldens/nllb_tiny --baseline-beams 4 \
  --out "$OUT/ablation" --force
echo
cat "$OUT/ablation/ablation_summary.csv"
echo
echo "== Fine-tuning demo: QLoRA (NF4 base, LoRA r 16 on every projection) of the same model on the"
echo "   demo corpus formatted as the study's prompts with their answers, 20 steps; then the"
echo "   ablation again with the adapter (k = 0 1 3), to compare base and fine-tuned."
$PIVOTMT finetune --data data/demo --pivot hin --source mar --target gom --model "$OUT/tiny-byte-tower" \
  --retriever bm25 --steps 20 --warmup 2 --lr 1e-3 --save-every 10 --out "$OUT/finetune"
$PIVOTMT ablate --data data/demo --pivot hin --source mar --target gom --model "$OUT/tiny-byte-tower" \
  --retriever bm25 --max-new-tokens 48 -k 0 1 3 --adapter "$OUT/finetune" --out "$OUT/ablation-finetuned" --force
cat "$OUT/ablation-finetuned/ablation_summary.csv"
echo
echo "outputs in $OUT/ (the ablation in $OUT/ablation: k_*/results_k*.csv, k_*/scores_k*.json, report.md,"
echo "manifest.json, ablation_summary.csv, ablation_detailed_results.json, ablation_plots.png/.svg,"
echo "ablation_bars.png/.svg, baseline/ (NLLB); the fine-tuning in $OUT/finetune: adapter_config.json, adapter_model.safetensors,"
echo "train_log.jsonl, loss_curve.png/.svg, checkpoints/). For the real study:"
echo "  ./build/apps/pivotmt/pivotmt download Unbabel/TowerInstruct-7B-v0.1 && bash scripts/run.sh"
