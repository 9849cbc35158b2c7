#!/usr/bin/env bash
# One prepared run on a GPU machine: the op harness (and once under compute-sanitizer's
# memcheck on small shapes), the GPU tests, the README's demo ablation on the GPU compared
# with the CPU's, and a speed smoke test on a 7B-shape model made on the device. Full logs go
# to OUTDIR; a summary table is printed last (and written to OUTDIR/summary.md).
#
#   bash scripts/gpu-check.sh OUTDIR
#
# OUTDIR/summary.md and OUTDIR/all-logs.tar.gz hold everything (for a device run that
# brings back only a few files: bash scripts/gpu-check.sh /tmp/gc; cp /tmp/gc/summary.md
# /tmp/gc/all-logs.tar.gz "$OUT"/).
#
# Rehearsal without a GPU: PIVOTMT_GPU_CHECK_DEVICE=cpu PIVOTMT_GPU_CHECK_PRESET=tiny runs
# the same steps on the CPU (every step but the device query and memcheck then passes).
# PIVOTMT_GPU_CHECK_EMULATED=1 runs the GPU steps on cuda:0 of the tests' CUDA emulator
# (tests/cuda_emulator, two emulated devices; from build/): the same CUDA code paths and
# this script's handling of them, with the harness on small shapes and nothing timed.
#
# Programs come from, in order: .gpu-bundle.tar.xz (made by scripts/gpu-bundle.sh on the
# development machine: for a GPU machine without our -dev packages), else build/ (a machine
# that builds pivotmt itself). Needs the NVIDIA driver and cuBLAS (the CUDA toolkit, or
# PyTorch's nvidia-cublas wheel), Python 3 for the comparison. No network.
set -uo pipefail
OUTDIR="${1:?usage: gpu-check.sh OUTDIR}"
cd "$(dirname "$0")/.."
ROOT="$PWD"
mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
START=$(date +%s)
DEV="${PIVOTMT_GPU_CHECK_DEVICE:-cuda:0}"
PRESET="${PIVOTMT_GPU_CHECK_PRESET:-7b-shape}"
declare -a ROWS=()
row() { ROWS+=("| $1 | $2 | $3 |"); echo "== $1: $2 ($3)"; }
# Every step runs under a time limit: its own, and what is left of the whole run's budget
# (PIVOTMT_GPU_CHECK_BUDGET seconds, default 480), so the summary always comes.
BUDGET="${PIVOTMT_GPU_CHECK_BUDGET:-480}"
limit() { local left=$(( BUDGET - ($(date +%s) - START) )); (( left < $1 )) && echo $(( left > 5 ? left : 5 )) || echo "$1"; }
elapsed() { echo "$(( $(date +%s) - $1 )) s"; }

# --- Programs
EMULATED="${PIVOTMT_GPU_CHECK_EMULATED:-0}"
if [[ "$EMULATED" == 1 ]]; then
  BIN="$ROOT/build/bundle-bin-emulated"
  mkdir -p "$BIN"
  for p in pivotmt ops_harness test_cuda test_gpu_engine; do ln -sf "$ROOT/build/tests/${p}_emulated" "$BIN/$p"; done
  export PIVOTMT_CUDA_EMULATOR_DEVICES=2
  LIBS=""
elif [[ -f .gpu-bundle.tar.xz ]]; then
  WORK="$(mktemp -d /tmp/pivotmt-gpu.XXXXXX)"
  # tar's xz filter needs the xz program; Python's tarfile reads xz by itself.
  tar -C "$WORK" -xJf .gpu-bundle.tar.xz 2>/dev/null ||
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' .gpu-bundle.tar.xz "$WORK" ||
    { echo "cannot unpack .gpu-bundle.tar.xz"; exit 2; }
  B="$WORK/pivotmt-gpu"
  BIN="$B/bin"
  export PIVOTMT_SHARED_DIR="$B/shared"
  LIBS="$B/lib"
  echo "bundle of commit $(cat "$B/COMMIT") (repository at $(git rev-parse HEAD 2>/dev/null || echo '?'))"
else
  BIN="$ROOT/build/bundle-bin"
  mkdir -p "$BIN"
  for p in apps/pivotmt/pivotmt tests/ops_harness tests/test_cuda tests/test_gpu_engine bench/bench_gpu; do
    ln -sf "$ROOT/build/$p" "$BIN/$(basename "$p")"
  done
  LIBS=""
fi
# cuBLAS: the toolkit's, else PyTorch's wheel.
CUBLAS_DIRS="/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib"
PYCUBLAS="$(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null || true)"
[[ -n "$PYCUBLAS" ]] && CUBLAS_DIRS="$CUBLAS_DIRS:$PYCUBLAS"
# Our programs see the bundle's libraries; nothing else does (python3, nvidia-smi and
# compute-sanitizer keep the machine's own).
OUR_LD="${LIBS:+$LIBS:}$CUBLAS_DIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
LOADER=(env "LD_LIBRARY_PATH=$OUR_LD")
# Through the bundled loader and C library when the machine's C library is older than the
# one the programs were built against.
if [[ -n "$LIBS" ]] && ! "${LOADER[@]}" "$BIN/pivotmt" --version >/dev/null 2>"$OUTDIR/loader-probe.log"; then
  LOADER=("$LIBS/glibc/ld-linux-x86-64.so.2" --library-path "$LIBS/glibc:$OUR_LD")
  echo "the machine's C library is older than Debian 12's ($(cat "$LIBS/glibc/VERSION")): using the bundled one"
fi
run() { local p="$1"; shift; "${LOADER[@]}" "$BIN/$p" "$@"; }
PIVOTMT() { run pivotmt "$@"; }

{ nvidia-smi || true; PIVOTMT info; } >"$OUTDIR/info.log" 2>&1
GPU="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)"
if [[ "$EMULATED" == 1 ]]; then
  row "device" "emulated" "the tests' CUDA emulator, $PIVOTMT_CUDA_EMULATOR_DEVICES devices"
else
  row "device" "$( [[ -n "$GPU" ]] && echo ok || echo MISSING )" "${GPU:-nvidia-smi found no GPU}"
fi
grep -q "cuda:0" "$OUTDIR/info.log" && row "pivotmt info" ok "$(grep 'cuda:0' "$OUTDIR/info.log" | head -1 | sed 's/^ *//')" \
  || row "pivotmt info" FAIL "no cuda:0 listed (see info.log)"

# --- 1. The op harness: every CUDA op against the CPU reference.
t=$(date +%s)
# (The emulator's GEMM is a plain loop: small shapes there.)
timeout "$(limit 120)" "${LOADER[@]}" "$BIN/ops_harness" --device "$DEV" $([[ "$EMULATED" == 1 ]] && echo --small) \
  >"$OUTDIR/ops_harness.log" 2>&1
rc=$?
row "op harness ($DEV vs CPU reference)" "$([[ $rc == 0 ]] && echo ok || echo "FAIL rc=$rc")" \
  "$(tail -1 "$OUTDIR/ops_harness.log"); $(grep -m1 seed "$OUTDIR/ops_harness.log" | sed 's/.*seed/seed/'); $(elapsed $t)"

# --- 2. Once under compute-sanitizer memcheck, small shapes.
t=$(date +%s)
if [[ "$EMULATED" == 1 ]]; then
  row "memcheck (ops_harness --small)" "not available" "the emulator checks device memory itself (guard pages, ranges)"
elif command -v compute-sanitizer >/dev/null; then
  timeout "$(limit 150)" compute-sanitizer --tool memcheck --error-exitcode 9 "${LOADER[@]}" "$BIN/ops_harness" --device "$DEV" --small \
    >"$OUTDIR/memcheck.log" 2>&1
  rc=$?
  if grep -q "Device not supported\|Target application terminated before first instrumented API call" "$OUTDIR/memcheck.log"; then
    row "memcheck (ops_harness --small)" "not available" "compute-sanitizer cannot instrument this device (see memcheck.log)"
  else
    row "memcheck (ops_harness --small)" "$([[ $rc == 0 ]] && echo ok || echo "FAIL rc=$rc")" \
      "$(grep -m1 'ERROR SUMMARY' "$OUTDIR/memcheck.log" || tail -1 "$OUTDIR/memcheck.log"); $(elapsed $t)"
  fi
else
  row "memcheck (ops_harness --small)" "not available" "no compute-sanitizer on PATH"
fi

# --- 3. The GPU tests (gtest).
for t_name in test_cuda test_gpu_engine; do
  t=$(date +%s)
  timeout "$(limit 200)" "${LOADER[@]}" "$BIN/$t_name" --gtest_color=no >"$OUTDIR/$t_name.log" 2>&1
  rc=$?
  summary="$(grep -E '^\[  (PASSED|FAILED|SKIPPED) +\] [0-9]+ tests?[.,]' "$OUTDIR/$t_name.log" | sed 's/\[ *//; s/ *\]//; s/, listed below://' | tr '\n' ' ')"
  row "$t_name" "$([[ $rc == 0 ]] && echo ok || echo "FAIL rc=$rc")" "$summary; $(elapsed $t)"
done

# --- 4. The README's demo ablation on the GPU, and greedy on both devices compared.
t=$(date +%s)
DEMO="$OUTDIR/demo"
mkdir -p "$DEMO"
# On the emulator (kernels run one CUDA thread at a time), the demo's first row only.
DEMO_LIMIT="$([[ "$EMULATED" == 1 ]] && echo "--limit 1")"
export DEMO ROOT DEV DEMO_LIMIT
timeout "$(limit 150)" bash -c '
  set -e
  "$@" dev make-model --arch llama --preset tiny --byte-tokenizer --out "$DEMO/tiny-byte-tower" --seed 1 >/dev/null
  common=(--data "$ROOT/data/demo" --pivot hin --source mar --target gom --model "$DEMO/tiny-byte-tower" --retriever bm25
          --max-new-tokens 48 --force --quiet $DEMO_LIMIT)
  "$@" ablate "${common[@]}" --device "$DEV" --out "$DEMO/cuda-sampled"
  "$@" ablate "${common[@]}" --device "$DEV" --greedy --out "$DEMO/cuda-greedy"
  "$@" ablate "${common[@]}" --device cpu --greedy --out "$DEMO/cpu-greedy"
' demo "${LOADER[@]}" "$BIN/pivotmt" >"$OUTDIR/demo.log" 2>&1
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
  row "demo ablation --device "$DEV"" ok "$cmp; outputs: $files; $(elapsed $t)"
  grep -h "Device:" "$DEMO/cuda-sampled/report.md" >>"$OUTDIR/demo.log" || true
else
  row "demo ablation --device "$DEV"" "FAIL rc=$rc" "see demo.log: $(tail -1 "$OUTDIR/demo.log")"
fi

# --- 4b. Every GPU of the machine in one command (--devices all): one worker per GPU on
# interleaved shards, merged; its greedy rows must be those of the single-process run.
t=$(date +%s)
# (The CPU rehearsal: the same mechanism with two CPU workers.)
WORKERS="$([[ "$DEV" == cpu ]] && echo "--workers 2" || echo "--devices all")"
# Workers start this binary again; through the bundle's loader when it needs one.
{ printf '#!/bin/bash\nexec'; printf ' %q' "${LOADER[@]}" "$BIN/pivotmt"; printf ' "$@"\n'; } >"$OUTDIR/pivotmt-self"
chmod +x "$OUTDIR/pivotmt-self"
PIVOTMT_EXEC="$OUTDIR/pivotmt-self" timeout "$(limit 120)" "${LOADER[@]}" "$BIN/pivotmt" ablate --data "$ROOT/data/demo" \
  --pivot hin --source mar --target gom --model "$DEMO/tiny-byte-tower" --retriever bm25 --max-new-tokens 48 --greedy \
  $DEMO_LIMIT $WORKERS --out "$DEMO/devices-all" --force >"$OUTDIR/devices_all.log" 2>&1
rc=$?
if [[ $rc == 0 ]]; then
  same=yes
  for f in "$DEMO"/cuda-greedy/k_*/results_k*.csv; do
    cmp -s "$f" "$DEMO/devices-all/${f#"$DEMO"/cuda-greedy/}" || same=no
  done
  # Different rows from the same device and model: batch invariance broken across shards.
  row "ablate $WORKERS" "$([[ $same == yes ]] && echo ok || echo FAIL)" "$(ls -d "$DEMO"/devices-all/shards/*-of-* | wc -l) workers; greedy rows identical to one process: $same; $(elapsed $t)"
else
  row "ablate $WORKERS" "FAIL rc=$rc" "see devices_all.log: $(tail -1 "$OUTDIR/devices_all.log")"
fi

# --- 5. Speed smoke test: 7B shapes, weights made on the device.
t=$(date +%s)
if [[ "$EMULATED" == 1 ]]; then
  row "speed smoke ($PRESET)" "not run" "the CUDA emulator times nothing"
  row "op perf (model shapes)" "not run" "the CUDA emulator times nothing"
else
  timeout "$(limit 180)" "${LOADER[@]}" "$BIN/bench_gpu" --preset "$PRESET" --device "$DEV" >"$OUTDIR/bench_gpu.log" 2>&1
  rc=$?
  row "speed smoke ($PRESET)" "$([[ $rc == 0 ]] && echo ok || echo "FAIL rc=$rc")" \
    "$(grep -E '^decode batch' "$OUTDIR/bench_gpu.log" | sed 's/ after [0-9]* tokens//; s/;.*//' | tr '\n' ' '); $(elapsed $t)"

  # --- 6. Op perf on model shapes (figures for part 2).
  t=$(date +%s)
  timeout "$(limit 120)" "${LOADER[@]}" "$BIN/ops_harness" --device "$DEV" --perf >"$OUTDIR/ops_perf.log" 2>&1
  rc=$?
  row "op perf (model shapes)" "$([[ $rc == 0 ]] && echo ok || echo "FAIL rc=$rc")" "$(grep -m1 ceiling "$OUTDIR/ops_perf.log"); $(elapsed $t)"
fi

# --- Summary, last.
{
  echo "# pivotmt GPU check ($(date -u +%Y-%m-%dT%H:%MZ), $(elapsed $START) in all)"
  echo
  echo "| check | result | details |"
  echo "|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  grep -E "^(model|weights|ceilings|prefill|decode|peak)" "$OUTDIR/bench_gpu.log" 2>/dev/null | sed 's/^/    /'
} >"$OUTDIR/summary.md"
# Everything in one archive too (a device run brings back a few files, not a folder tree).
tar -czf "$OUTDIR/../gpu-check-logs.tar.gz" -C "$OUTDIR" --exclude=tiny-byte-tower --exclude=index . 2>/dev/null &&
  mv "$OUTDIR/../gpu-check-logs.tar.gz" "$OUTDIR/all-logs.tar.gz"
echo
cat "$OUTDIR/summary.md"
grep -q "FAIL" "$OUTDIR/summary.md" && exit 1
exit 0
