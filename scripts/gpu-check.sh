#!/usr/bin/env bash
# One prepared run on a GPU machine: the op harness, the GPU tests (kernels, engine), the
# README's demo ablation on the GPU compared with the CPU's, `--devices all`, a speed smoke
# test on a 7B-shape model made on the device, op perf on model shapes, and last the op
# harness once under compute-sanitizer's memcheck.
#
#   bash scripts/gpu-check.sh OUTDIR [WORKDIR]
#
# OUTDIR gets two files, rewritten after every step so that a run killed by its time limit
# still brings back what it measured: summary.md (a row per step, appended as the step
# ends; a last line when the whole run finished) and logs.tar.gz (every log so far). The
# logs, the demo's models and outputs live in WORKDIR (default: a fresh /tmp folder). The
# whole run stays within PIVOTMT_GPU_CHECK_BUDGET seconds (default 300; 1200 emulated): each step gets the
# smaller of its own limit and what is left, and is killed (timeout -k) when it runs over.
#
# On the device machine (the README's "GPU" section has the exact call): the working tree
# plus .gpu-bundle.tar.xz carried, `bash scripts/gpu-check.sh "$OUT"`.
#
# Programs come from, in order: .gpu-bundle.tar.xz (scripts/gpu-bundle.sh on the
# development machine, for a GPU machine without our -dev packages; refused when built from
# other sources than this checkout's), else build/ (a machine that builds pivotmt itself).
# Needs the NVIDIA driver and cuBLAS 13 (the CUDA toolkit, PyTorch's CUDA 13 wheels, or a
# library ldconfig knows), Python 3 for the comparisons. No network.
#
# Rehearsal without a GPU: PIVOTMT_GPU_CHECK_DEVICE=cpu PIVOTMT_GPU_CHECK_PRESET=tiny runs
# the same steps on the CPU (every step but the device query and memcheck then passes).
# PIVOTMT_GPU_CHECK_EMULATED=1 runs the GPU steps on cuda:0 of the tests' CUDA emulator
# (tests/cuda_emulator, two emulated devices; from build/): the same CUDA code paths and
# this script's handling of them, with the harness on small shapes and nothing timed.
set -uo pipefail
OUTDIR="${1:?usage: gpu-check.sh OUTDIR [WORKDIR]}"
cd "$(dirname "$0")/.."
ROOT="$PWD"
mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
WORKDIR="${2:-$(mktemp -d /tmp/pivotmt-gpu-check.XXXXXX)}"
mkdir -p "$WORKDIR"
WORKDIR="$(cd "$WORKDIR" && pwd)"
LOGS="$WORKDIR/logs"
mkdir -p "$LOGS"
START=$(date +%s)
DEV="${PIVOTMT_GPU_CHECK_DEVICE:-cuda:0}"
PRESET="${PIVOTMT_GPU_CHECK_PRESET:-7b-shape}"
EMULATED="${PIVOTMT_GPU_CHECK_EMULATED:-0}"
# On the emulator (kernels run one CUDA thread at a time on the CPU) and in the CPU rehearsal
# every step takes longer: limits 4 times the GPU's, budget 1200 s (the budget is about
# device time).
SCALE=$([[ "$EMULATED" == 1 || "$DEV" == cpu ]] && echo 4 || echo 1)
BASE_BUDGET=$([[ "${PIVOTMT_GPU_CHECK_REPLAY:-}" == full ]] && echo 480 || echo 300)  # the whole replay: its own run
BUDGET="${PIVOTMT_GPU_CHECK_BUDGET:-$(( BASE_BUDGET * SCALE ))}"
SUMMARY="$OUTDIR/summary.md"
elapsed() { echo "$(( $(date +%s) - $1 )) s"; }

# The logs so far, as one archive in OUTDIR (written beside, then renamed: never half a file).
pack_logs() {
  tar -czf "$OUTDIR/.logs.tar.gz.tmp" -C "$LOGS" . 2>/dev/null && mv "$OUTDIR/.logs.tar.gz.tmp" "$OUTDIR/logs.tar.gz"
}
# A step's row, appended to the summary at once (and echoed).
row() {
  echo "| $1 | $2 | $3 |" >>"$SUMMARY"
  echo "== $1: $2 ($3)"
  pack_logs
}
# Seconds a step may run: its own limit, or what is left of the budget (at least 5).
limit() {
  local want=$(( $1 * SCALE )) left=$(( BUDGET - ($(date +%s) - START) ))
  (( left < want )) && echo $(( left > 5 ? left : 5 )) || echo "$want"
}
# timeout with a kill after 10 s more: a step that ignores SIGTERM cannot eat the budget.
bounded() { local s="$1"; shift; timeout -k 10 "$s" "$@"; }

{
  echo "# pivotmt GPU check (started $(date -u +%Y-%m-%dT%H:%MZ), budget ${BUDGET} s)"
  echo
  echo "| check | result | details |"
  echo "|---|---|---|"
} >"$SUMMARY"

# --- Programs
if [[ "$EMULATED" == 1 ]]; then
  BIN="$ROOT/build/bundle-bin-emulated"
  mkdir -p "$BIN"
  for p in pivotmt ops_harness test_cuda test_cuda_kernels test_gpu_engine test_gpu_encoder test_gpu_train bench_gpu; do
    ln -sf "$ROOT/build/tests/${p}_emulated" "$BIN/$p"
  done
  export PIVOTMT_CUDA_EMULATOR_DEVICES=2
  LIBS=""
elif [[ -f .gpu-bundle.tar.xz ]]; then
  # tar's xz filter needs the xz program; Python's tarfile reads xz by itself.
  tar -C "$WORKDIR" -xJf .gpu-bundle.tar.xz 2>/dev/null ||
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' .gpu-bundle.tar.xz "$WORKDIR" ||
    { row "bundle" FAIL "cannot unpack .gpu-bundle.tar.xz"; exit 2; }
  B="$WORKDIR/pivotmt-gpu"
  BIN="$B/bin"
  export PIVOTMT_SHARED_DIR="$B/shared" PIVOTMT_SOURCE_DIR="$ROOT"  # fixtures; tests/goldens
  LIBS="$B/lib"
  here="$(bash scripts/source-digest.sh "$ROOT")"
  built="$(cat "$B/SOURCES" 2>/dev/null || echo none)"
  if [[ "$here" != "$built" ]]; then
    row "bundle" FAIL "built from commit $(cat "$B/COMMIT" 2>/dev/null || echo '?') whose sources differ from this checkout's (bundle $built, checkout $here): rebuild it with bash scripts/gpu-bundle.sh"
    echo "refusing to test programs built from other sources" >&2
    exit 2
  fi
  row "bundle" ok "commit $(cat "$B/COMMIT"), sources $here (same as the checkout's)"
else
  BIN="$ROOT/build/bundle-bin"
  mkdir -p "$BIN"
  for p in apps/pivotmt/pivotmt tests/ops_harness tests/test_cuda tests/test_cuda_kernels tests/test_gpu_engine \
    tests/test_gpu_encoder tests/test_gpu_train bench/bench_gpu bench/bench_nllb bench/bench_train bench/bench_comet; do
    ln -sf "$ROOT/build/$p" "$BIN/$(basename "$p")"
  done
  LIBS=""
fi

# --- cuBLAS 13: what the dynamic loader finds (LD_LIBRARY_PATH, ldconfig's cache), the
# toolkit's folders, PyTorch's CUDA 13 wheels (nvidia/cu13/lib) or CUDA 12-style wheels
# (nvidia/cublas/lib). pivotmt also searches these itself; `pivotmt info` names the file.
CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
CUBLAS_DIRS=""
add_dir() { [[ -f "$1/libcublas.so.13" ]] && CUBLAS_DIRS="${CUBLAS_DIRS:+$CUBLAS_DIRS:}$1"; }
add_dir "$CUDA_HOME/lib64"
add_dir "$CUDA_HOME/targets/x86_64-linux/lib"
while read -r site; do
  add_dir "$site/nvidia/cu13/lib"
  add_dir "$site/nvidia/cublas/lib"
done < <(python3 -c 'import site; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null)
LDCONFIG_CUBLAS="$( (ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null) | awk '/libcublas\.so\.13 / {print $NF; exit}')"
# Our programs see the bundle's libraries; nothing else does (python3, nvidia-smi and
# compute-sanitizer keep the machine's own).
OUR_LD="${LIBS:+$LIBS:}${CUBLAS_DIRS}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
LOADER=(env "LD_LIBRARY_PATH=$OUR_LD")
# Through the bundled loader and C library when the machine's C library is older than the
# one the programs were built against.
if [[ -n "$LIBS" ]] && ! "${LOADER[@]}" "$BIN/pivotmt" --version >/dev/null 2>"$LOGS/loader-probe.log"; then
  LOADER=("$LIBS/glibc/ld-linux-x86-64.so.2" --library-path "$LIBS/glibc:$OUR_LD")
  echo "the machine's C library is older than Debian 12's ($(cat "$LIBS/glibc/VERSION")): using the bundled one"
fi
run() { local p="$1"; shift; "${LOADER[@]}" "$BIN/$p" "$@"; }

{ nvidia-smi || true; run pivotmt info; } >"$LOGS/info.log" 2>&1
GPU="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)"
if [[ "$EMULATED" == 1 ]]; then
  row "device" "emulated" "the tests' CUDA emulator, $PIVOTMT_CUDA_EMULATOR_DEVICES devices"
else
  row "device" "$( [[ -n "$GPU" ]] && echo ok || echo MISSING )" "${GPU:-nvidia-smi found no GPU}"
fi
if grep -q "cuda:0" "$LOGS/info.log"; then
  row "pivotmt info" ok "$(grep 'cuda:0' "$LOGS/info.log" | head -1 | sed 's/^ *//'); $(grep -m1 '^cuBLAS:' "$LOGS/info.log" || echo 'cuBLAS: ?')"
else
  row "pivotmt info" FAIL "no cuda:0 listed (see info.log); cuBLAS folders found: ${CUBLAS_DIRS:-none}, ldconfig: ${LDCONFIG_CUBLAS:-none}"
fi
grep -h "^warning:" "$LOGS/info.log" | head -3 | while read -r w; do row "warning" "note" "$w"; done

# PIVOTMT_GPU_CHECK_REPLAY=full: after the setup above, only the whole study replayed
# (bench/data/tower_study.replay.zst, 3,355 requests) on the preset's shapes, then a
# 7B-shaped checkpoint written to disk and loaded from the page cache (the load-time
# target), then stop.
if [[ "${PIVOTMT_GPU_CHECK_REPLAY:-}" == full ]]; then
  t=$(date +%s)
  bounded "$(limit 400)" "${LOADER[@]}" "$BIN/bench_gpu" --preset "$PRESET" --device "$DEV" \
    $([[ "$EMULATED" == 1 ]] && echo --no-ceilings) --replay bench/data/tower_study.replay.zst \
    ${PIVOTMT_GPU_CHECK_REPLAY_ARGS:-} >"$LOGS/replay_full.log" 2>&1
  rc=$?
  row "replay, whole study ($PRESET)" "$([[ $rc == 0 ]] && echo ok || echo "FAIL rc=$rc")" \
    "$(grep -E '^(ceilings|replay wall|forward passes|peak)' "$LOGS/replay_full.log" | tr '\n' ' '); $(elapsed $t)"
  replay_rc=$rc
  t=$(date +%s)
  CKPT="$WORKDIR/checkpoint-$PRESET"
  export CKPT PRESET
  bounded "$(limit 150)" bash -c '
    set -e
    "$@" dev make-model --arch llama --preset "$PRESET" --dtype f16 --out "$CKPT" --seed 1 >/dev/null
    cat "$CKPT"/*.safetensors >/dev/null  # in the page cache (just written: normally already)
  ' make "${LOADER[@]}" "$BIN/pivotmt" >"$LOGS/checkpoint.log" 2>&1 &&
    bounded "$(limit 60)" "${LOADER[@]}" "$BIN/bench_gpu" --model "$CKPT" --device "$DEV" --batches 1 --steps 8 \
      $([[ "$EMULATED" == 1 ]] && echo "--no-ceilings --context 8") >>"$LOGS/checkpoint.log" 2>&1
  rc=$?
  row "$PRESET checkpoint loaded from the page cache" "$([[ $rc == 0 ]] && echo ok || echo "FAIL rc=$rc")" \
    "$(grep -E '^(weights loaded|decode batch)' "$LOGS/checkpoint.log" | tr '\n' ' '); $(elapsed $t)"
  rm -rf "$CKPT"
  [[ $rc == 0 && $replay_rc == 0 ]]
  rc=$?
  echo "Finished in $(elapsed "$START") ($(date -u +%Y-%m-%dT%H:%MZ))." >>"$SUMMARY"
  pack_logs
  cat "$SUMMARY"
  [[ $rc == 0 ]]
  exit
fi

# --- 1. The op harness: every CUDA op against the CPU reference.
t=$(date +%s)
# (The emulator's GEMM is a plain loop: small shapes there.)
bounded "$(limit 60)" "${LOADER[@]}" "$BIN/ops_harness" --device "$DEV" $([[ "$EMULATED" == 1 ]] && echo --small) \
  >"$LOGS/ops_harness.log" 2>&1
rc=$?
row "op harness ($DEV vs CPU reference)" "$([[ $rc == 0 ]] && echo ok || echo "FAIL rc=$rc")" \
  "$(tail -1 "$LOGS/ops_harness.log"); $(grep -m1 seed "$LOGS/ops_harness.log" | sed 's/.*seed/seed/'); $(elapsed $t)"

# --- 2. The GPU tests (gtest): kernels called directly, then the engine (its KV pool
# uncapped: 90% of the free memory, as a user's run has it).
for t_name in test_cuda test_cuda_kernels test_gpu_engine test_gpu_encoder test_gpu_train; do
  t=$(date +%s)
  bounded "$(limit 120)" "${LOADER[@]}" "$BIN/$t_name" --gtest_color=no >"$LOGS/$t_name.log" 2>&1
  rc=$?
  summary="$(grep -E '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ tests?[.,]' "$LOGS/$t_name.log" | sed 's/\[ *//; s/ *\]//; s/, listed below://' | tr '\n' ' ')"
  failed="$(grep -E '^\[  FAILED  \] [A-Za-z]' "$LOGS/$t_name.log" | sed 's/\[  FAILED  \] //; s/ (.*//' | sort -u | tr '\n' ' ')"
  row "$t_name" "$([[ $rc == 0 ]] && echo ok || echo "FAIL rc=$rc")" "$summary${failed:+ failed: $failed}; $(elapsed $t)"
done

# --- 3. The README's demo ablation on the GPU, and greedy on both devices compared.
t=$(date +%s)
DEMO="$WORKDIR/demo"
mkdir -p "$DEMO"
# On the emulator (kernels run one CUDA thread at a time), the demo's first row only.
DEMO_LIMIT="$([[ "$EMULATED" == 1 ]] && echo "--limit 1")"
export DEMO ROOT DEV DEMO_LIMIT
bounded "$(limit 90)" bash -c '
  set -e
  "$@" dev make-model --arch llama --preset tiny --byte-tokenizer --out "$DEMO/tiny-byte-tower" --seed 1 >/dev/null
  common=(--data "$ROOT/data/demo" --pivot hin --source mar --target gom --model "$DEMO/tiny-byte-tower" --retriever bm25
          --max-new-tokens 48 --force --quiet $DEMO_LIMIT)
  "$@" ablate "${common[@]}" --device "$DEV" --out "$DEMO/cuda-sampled"
  "$@" ablate "${common[@]}" --device "$DEV" --greedy --out "$DEMO/cuda-greedy"
  "$@" ablate "${common[@]}" --device cpu --greedy --out "$DEMO/cpu-greedy"
' demo "${LOADER[@]}" "$BIN/pivotmt" >"$LOGS/demo.log" 2>&1
rc=$?
if [[ $rc == 0 ]]; then
  cmp="$(python3 - "$DEMO/cpu-greedy" "$DEMO/cuda-greedy" "$DEV" <<'PY'
import csv, glob, os, sys
a, b = sys.argv[1], sys.argv[2]
same = total = 0
for path in sorted(glob.glob(os.path.join(a, "k_*", "results_k*.csv"))):
    other = os.path.join(b, os.path.relpath(path, a))
    ra, rb = list(csv.DictReader(open(path))), list(csv.DictReader(open(other)))
    for x, y in zip(ra, rb):
        total += 1
        same += x["response"] == y["response"]
print(f"{same}/{total} greedy rows identical on {sys.argv[3]} and the CPU")
PY
)"
  files=$(ls "$DEMO/cuda-sampled" | tr '\n' ' ')
  row "demo ablation --device $DEV" ok "$cmp; outputs: $files; $(elapsed $t)"
  grep -h "Device:" "$DEMO/cuda-sampled/report.md" >>"$LOGS/demo.log" || true
  cp "$DEMO/cuda-sampled/report.md" "$LOGS/demo-report.md" 2>/dev/null || true
else
  row "demo ablation --device $DEV" "FAIL rc=$rc" "see demo.log: $(tail -1 "$LOGS/demo.log")"
fi

# --- 3b. Every GPU of the machine in one command (--devices all): one worker per GPU on
# interleaved shards, merged; its greedy rows must be those of the single-process run.
t=$(date +%s)
# (The CPU rehearsal: the same mechanism with two CPU workers.)
WORKERS="$([[ "$DEV" == cpu ]] && echo "--workers 2" || echo "--devices all")"
# Workers start this binary again; through the bundle's loader when it needs one.
{ printf '#!/bin/bash\nexec'; printf ' %q' "${LOADER[@]}" "$BIN/pivotmt"; printf ' "$@"\n'; } >"$WORKDIR/pivotmt-self"
chmod +x "$WORKDIR/pivotmt-self"
PIVOTMT_EXEC="$WORKDIR/pivotmt-self" bounded "$(limit 60)" "${LOADER[@]}" "$BIN/pivotmt" ablate --data "$ROOT/data/demo" \
  --pivot hin --source mar --target gom --model "$DEMO/tiny-byte-tower" --retriever bm25 --max-new-tokens 48 --greedy \
  $DEMO_LIMIT $WORKERS --out "$DEMO/devices-all" --force >"$LOGS/devices_all.log" 2>&1
rc=$?
if [[ $rc == 0 ]]; then
  same=yes
  for f in "$DEMO"/cuda-greedy/k_*/results_k*.csv; do
    cmp -s "$f" "$DEMO/devices-all/${f#"$DEMO"/cuda-greedy/}" || same=no
  done
  # Different rows from the same device and model: batch invariance broken across shards.
  row "ablate $WORKERS" "$([[ $same == yes ]] && echo ok || echo FAIL)" "$(ls -d "$DEMO"/devices-all/shards/*-of-* | wc -l) workers; greedy rows identical to one process: $same; $(elapsed $t)"
else
  row "ablate $WORKERS" "FAIL rc=$rc" "see devices_all.log: $(tail -1 "$LOGS/devices_all.log")"
fi

# --- 4. Speed smoke test: 7B shapes, weights made on the device; op perf on model shapes.
if [[ "$EMULATED" == 1 ]]; then
  row "speed smoke ($PRESET)" "not run" "the CUDA emulator times nothing"
  row "op perf (model shapes)" "not run" "the CUDA emulator times nothing"
  row "replay subset" "not run" "the CUDA emulator times nothing (emulated.bench_replay checks it at a tiny scale)"
else
  t=$(date +%s)
  bounded "$(limit 60)" "${LOADER[@]}" "$BIN/bench_gpu" --preset "$PRESET" --device "$DEV" >"$LOGS/bench_gpu.log" 2>&1
  rc=$?
  row "speed smoke ($PRESET)" "$([[ $rc == 0 ]] && echo ok || echo "FAIL rc=$rc")" \
    "$(grep -E '^decode batch' "$LOGS/bench_gpu.log" | sed 's/ after [0-9]* tokens//; s/;.*//' | tr '\n' ' '); $(elapsed $t)"
  # The study replayed (bench/data): a subset here — the first 20 Konkani rows, k = 10..0 —;
  # the whole replay is its own command (README, "GPU").
  t=$(date +%s)
  bounded "$(limit 60)" "${LOADER[@]}" "$BIN/bench_gpu" --preset "$PRESET" --device "$DEV" \
    --replay bench/data/tower_study.replay.zst --limit 220 >"$LOGS/replay.log" 2>&1
  rc=$?
  row "replay subset ($PRESET, 220 requests)" "$([[ $rc == 0 ]] && echo ok || echo "FAIL rc=$rc")" \
    "$(grep -E '^replay wall' "$LOGS/replay.log" | sed 's/ prompt tokens computed.*; / ... /'); $(elapsed $t)"
  t=$(date +%s)
  bounded "$(limit 40)" "${LOADER[@]}" "$BIN/ops_harness" --device "$DEV" --perf >"$LOGS/ops_perf.log" 2>&1
  rc=$?
  row "op perf (model shapes)" "$([[ $rc == 0 ]] && echo ok || echo "FAIL rc=$rc")" "$(grep -m1 ceiling "$LOGS/ops_perf.log"); $(grep -E '^perf (decode|prefill) attention|^perf linear gate_up.* T=1 ' "$LOGS/ops_perf.log" | sed 's/^perf //' | tr -s ' ' | tr '\n' ';') $(elapsed $t)"
fi

# --- 4b. NLLB-200 on the device through the CLI (the tiny golden model, 4 beams: with F32
# weights the CPU's translations expected; F16 weights on the tensor cores run and say how
# many agree), then side by side with transformers on a 600M-shaped random model, F32 and
# F16 against transformers F32 and F16 (bench/side_by_side_nllb.py; where Python has torch
# and transformers, not on the emulator).
t=$(date +%s)
export NLLB="$ROOT/tests/goldens/nllb_tiny" WORKDIR
bounded "$(limit 40)" bash -c '
  set -e
  for d in "$DEV" cpu; do
    "$@" -q translate --model "$NLLB" --weights f32 --beams 4 --device "$d" -i "$ROOT/data/demo/test.jsonl" \
      >"$WORKDIR/nllb-$d.txt"
  done
  "$@" -q translate --model "$NLLB" --weights f16 --beams 4 --device "$DEV" -i "$ROOT/data/demo/test.jsonl" \
    >"$WORKDIR/nllb-f16.txt"
' nllb "${LOADER[@]}" "$BIN/pivotmt" >"$LOGS/nllb.log" 2>&1
rc=$?
if [[ $rc == 0 ]] && cmp -s "$WORKDIR/nllb-$DEV.txt" "$WORKDIR/nllb-cpu.txt"; then
  row "NLLB translate --device $DEV" ok "$(wc -l <"$WORKDIR/nllb-cpu.txt") translations (4 beams) identical to the CPU's; F16 weights: $(awk 'NR == FNR { a[FNR] = $0; next } a[FNR] == $0 { n++ } END { print n + 0 }' "$WORKDIR/nllb-cpu.txt" "$WORKDIR/nllb-f16.txt") of $(wc -l <"$WORKDIR/nllb-f16.txt") lines as the CPU's F32; $(elapsed $t)"
else
  row "NLLB translate --device $DEV" "FAIL rc=$rc" "see nllb.log; outputs differ from the CPU's or the run failed"
fi
if [[ "$EMULATED" == 1 ]] || ! python3 -c "import torch, transformers" 2>/dev/null || [[ ! -x "$BIN/bench_nllb" ]]; then
  row "NLLB side by side" "not run" "needs a GPU, Python with torch and transformers, and bench_nllb"
else
  t=$(date +%s)
  mkdir -p "$BIN/bench-layout/bench"
  ln -sf "$BIN/bench_nllb" "$BIN/bench-layout/bench/bench_nllb"
  LAUNCH="$(printf '%q ' "${LOADER[@]}")"
  PIVOTMT_BENCH_LAUNCH="$LAUNCH" bounded "$(limit 90)" python3 bench/side_by_side_nllb.py "$BIN/bench-layout" \
    "$WORKDIR/nllb-side" --sentences 8 --max-length 32 --device "$([[ "$DEV" == cpu ]] && echo cpu || echo cuda)" \
    >"$LOGS/nllb_side_by_side.md" 2>"$LOGS/nllb_side_by_side.log"
  rc=$?
  row "NLLB side by side (600M shape)" "$([[ $rc == 0 ]] && echo ok || echo "FAIL rc=$rc")" \
    "$(grep -E '^\| (greedy|4 beams)' "$LOGS/nllb_side_by_side.md" | awk -F'|' '{printf "%s b%s: F32 %s, F16 %s (%s same);", $2, $3, $6, $10, $11}') $(grep -E '^CUDA graphs' "$LOGS/nllb_side_by_side.md"); $(elapsed $t)"
fi

# --- 4d. COMET on the device against a peer on the same GPU: wmt22-comet-da's shape (XLM-R
# large, random weights) scoring 256 distinct triples, pivotmt with F32 and with F16 weights;
# the peer is unbabel-comet where it is installed, else COMET's forward written in torch
# (F16 autocast against the F16 weights; bench/side_by_side_comet.py).
if [[ "$EMULATED" == 1 ]] || ! python3 -c "import torch, transformers, safetensors" 2>/dev/null || [[ ! -x "$BIN/bench_comet" ]]; then
  row "COMET side by side" "not run" "needs a GPU, Python with torch, transformers and safetensors, and bench_comet"
else
  t=$(date +%s)
  PIVOTMT_BENCH_LAUNCH="$(printf '%q ' "${LOADER[@]}")" bounded "$(limit 90)" python3 bench/side_by_side_comet.py \
    --work "$WORKDIR/comet-side" --segments 256 --device "$([[ "$DEV" == cpu ]] && echo cpu || echo cuda)" --weights f32,f16 \
    --bench "$BIN/bench_comet" >"$LOGS/comet_side_by_side.md" 2>"$LOGS/comet_side_by_side.log"
  rc=$?
  row "COMET side by side (XLM-R large shape)" "$([[ $rc == 0 ]] && echo ok || echo "FAIL rc=$rc")" \
    "$(grep -E '^(speed-up|pivotmt:)' "$LOGS/comet_side_by_side.md" | tr '\n' ';'); $(elapsed $t)"
  rm -rf "$WORKDIR/comet-side"  # 2.2 GB of weights
fi

# --- 4c. QLoRA fine-tuning speed on the device: bench_train's `small` checkpoint (~110M
# parameters), F32 and NF4 bases, r 16 on every projection, 2 x 2 sequences of 512 tokens.
if [[ "$EMULATED" == 1 || ! -x "$BIN/bench_train" ]]; then
  row "fine-tuning speed" "not run" "$([[ "$EMULATED" == 1 ]] && echo "the CUDA emulator times nothing (test_gpu_train checks the numerics)" || echo "no bench_train")"
else
  t=$(date +%s)
  # The peer where torch is installed: PyTorch with an F16 base under autocast (peft and
  # bitsandbytes are not on the GPU machine: LoRA layers written as PEFT's).
  PEER=()
  python3 -c "import torch, transformers" 2>/dev/null && PEER=(--python python3)
  PIVOTMT_BENCH_LAUNCH="$(printf '%q ' "${LOADER[@]}")" bounded "$(limit 90)" "${LOADER[@]}" "$BIN/bench_train" --preset small --steps 2 --seq-len 512 --device "$DEV" \
    "${PEER[@]}" >"$LOGS/bench_train.log" 2>&1
  rc=$?
  row "fine-tuning speed (small, $DEV)" "$([[ $rc == 0 ]] && echo ok || echo "FAIL rc=$rc")" \
    "$(grep -E '^pivotmt' "$LOGS/bench_train.log" | tr -s ' ' | tr '\n' ';'); $(elapsed $t)"
fi

# --- 4e. Training attention alone (one 7B layer, forward + backward at 512, 2048 and 4096
# tokens): F32 kernels against F16 mode's tensor cores, fused (F16 scores, TF32 gradient
# products) and as blocks of TF32 GEMMs.
if [[ "$EMULATED" == 1 || ! -x "$BIN/bench_train" ]]; then
  row "training attention" "not run" "$([[ "$EMULATED" == 1 ]] && echo "the CUDA emulator times nothing (GpuTrain.EveryOp checks the three paths)" || echo "no bench_train")"
else
  t=$(date +%s)
  bounded "$(limit 30)" "${LOADER[@]}" "$BIN/bench_train" --attention 7b --device "$DEV" >"$LOGS/bench_train_attention.log" 2>&1
  rc=$?
  row "training attention (7B layer, $DEV)" "$([[ $rc == 0 ]] && echo ok || echo "FAIL rc=$rc")" \
    "$(grep -E '^(F32|tensor|fused)' "$LOGS/bench_train_attention.log" | tr -s ' ' | tr '\n' ';'); $(elapsed $t)"
fi

# --- 5. Last (it may take what is left): the op harness under compute-sanitizer memcheck,
# small shapes, the toolkit's own sanitizer, following child processes.
t=$(date +%s)
SANITIZER="$CUDA_HOME/bin/compute-sanitizer"
[[ -x "$SANITIZER" ]] || SANITIZER="$(command -v compute-sanitizer || true)"
if [[ "$EMULATED" == 1 ]]; then
  row "memcheck (ops_harness --small)" "not available" "the emulator checks device memory itself (guard pages, canaries, ranges)"
elif [[ -n "$SANITIZER" && -x "$SANITIZER" ]]; then
  bounded "$(limit 120)" "$SANITIZER" --tool memcheck --target-processes all --error-exitcode 9 "${LOADER[@]}" \
    "$BIN/ops_harness" --device "$DEV" --small >"$LOGS/memcheck.log" 2>&1
  rc=$?
  if grep -q "Device not supported\|Target application terminated before first instrumented API call" "$LOGS/memcheck.log"; then
    row "memcheck (ops_harness --small)" "not available" "compute-sanitizer cannot instrument this device (see memcheck.log)"
  else
    row "memcheck (ops_harness --small)" "$([[ $rc == 0 ]] && echo ok || echo "FAIL rc=$rc")" \
      "$(grep -m1 'ERROR SUMMARY' "$LOGS/memcheck.log" || tail -1 "$LOGS/memcheck.log"); $(elapsed $t)"
  fi
else
  row "memcheck (ops_harness --small)" "not available" "no compute-sanitizer in $CUDA_HOME/bin or on PATH"
fi

# --- The end: bench figures, and the line that says the run finished.
{
  echo
  grep -E "^(model|weights|ceilings|prefill|decode|peak)" "$LOGS/bench_gpu.log" 2>/dev/null | sed 's/^/    /'
  echo
  echo "Finished in $(elapsed $START) ($(date -u +%Y-%m-%dT%H:%MZ))."
} >>"$SUMMARY"
pack_logs
echo
cat "$SUMMARY"
grep -q "| FAIL" "$SUMMARY" && exit 1
exit 0
