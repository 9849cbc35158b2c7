#!/usr/bin/env bash
# The test command (README, .ci/run): installs what is needed, builds, passes the tests.
#  1. main build (g++, CUDA on when the toolkit is there; GPU tests skip without a GPU)
#  2. sanitizer build (clang, ASan + UBSan, CPU) running the same unit tests
#  3. the libFuzzer targets, each for FUZZ_SECONDS on its seed corpus
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
JOBS="$(nproc)"

bash scripts/setup.sh

echo "== main build"
bash scripts/build.sh
(cd build && ctest --output-on-failure -j "$JOBS")

echo "== sanitizer build (ASan + UBSan, clang) with fuzz targets"
# -O1, as AddressSanitizer's documentation advises for reasonable speed: the tests below ran
# in 162 s instead of 806 s at -O0 (fresh clone, 2 cores), which pays for the real model's
# forward pass and the significance tests that -O0 could not afford, and the fuzzers try
# ~3x the inputs in their time.
CC=clang CXX=clang++ cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_C_FLAGS_DEBUG="-g -O1" -DCMAKE_CXX_FLAGS_DEBUG="-g -O1" -DPIVOTMT_CUDA=OFF \
  -DPIVOTMT_SANITIZE=ON -DPIVOTMT_FUZZ=ON -DPIVOTMT_BENCH=OFF >/dev/null
ninja -C build-asan
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LSAN_OPTIONS=suppressions=$PWD/scripts/lsan.supp:print_suppressions=0
# Left to the main build, each for minutes under ASan on two cores (-O1) and no code path of
# its own: the 3004-segment WMT17 suites (100 s; the edge-case and mini-set goldens run
# here), and the real model's longer passes (reference ops 87 s, file blocks 146 s, INT8
# activations 192 s; its logits and greedy tokens, 52 s, run here).
(cd build-asan && ctest --output-on-failure -j "$JOBS" -L "unit|cli" \
  -E "Wmt17Systems|SmolLm2\.(ReferenceOps|FileBlocks|Int8Activations)")

echo "== fuzzing (${FUZZ_SECONDS}s per target)"
corpus="$(mktemp -d)"
trap 'rm -rf "$corpus"' EXIT
for target in safetensors model_config metrics table tokenizer adapter torch_checkpoint gguf replay; do
  mkdir -p "$corpus/$target"
  cp fuzz/corpus/$target/* "$corpus/$target/"
done
# Real checkpoints written by Hugging Face's library as extra seeds (when ../shared is there).
# Parquet files written by other implementations (Apache parquet-testing) seed the table fuzzer.
for f in ../shared/fixtures/parquet-testing/*.parquet; do
  [[ -f "$f" && $(stat -c %s "$f") -lt 65536 ]] && cp "$f" "$corpus/table/"
done
# GGUF files written by llama.cpp's converter (their first 64 KiB: header, vocabulary).
for f in ../shared/fixtures/tokenizers/llama.cpp-vocab-tests/*.gguf ../shared/fixtures/models/*/*.gguf; do
  [[ -f "$f" ]] && head -c 65536 "$f" >"$corpus/gguf/$(basename "$f")"
done
for f in ../shared/fixtures/models/*/model.safetensors; do
  [[ -f "$f" ]] && head -c 65536 "$f" >"$corpus/safetensors/$(basename "$(dirname "$f")").safetensors"
done
mkdir -p build-asan/fuzz-artifacts
for target in safetensors model_config metrics table tokenizer adapter torch_checkpoint gguf replay; do
  log="build-asan/fuzz-artifacts/$target.log"
  # The JSON targets get values of other types and edge numbers as a dictionary: without it,
  # 30 s of byte flips had never written a float id (undefined behaviour in two parsers).
  dict=()
  case "$target" in model_config|tokenizer|adapter|safetensors|table) dict=(-dict=fuzz/json.dict) ;; esac
  if ! ./build-asan/fuzz/fuzz_$target -max_total_time="$FUZZ_SECONDS" -max_len=65536 -print_final_stats=1 "${dict[@]}" \
    -artifact_prefix=build-asan/fuzz-artifacts/$target- "$corpus/$target" >"$log" 2>&1; then
    # The whole report: the error, its stack and the input that caused it.
    grep -v '^#' "$log" | tail -n 80
    echo "fuzz_$target failed; its input is in build-asan/fuzz-artifacts/"
    exit 1
  fi
  tail -n 4 "$log"
done
echo "all test stages passed"
