#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh needs on a GPU machine that has the NVIDIA driver, the
# CUDA 13 toolkit (cuBLAS), CMake and Python but none of our Debian -dev packages and no
# network: the GPU-side programs (stripped), every shared library they load except the
# driver's and cuBLAS (the machine's own), Debian's dynamic loader and C library (used only
# if the machine's C library is older than the one we build against), and the model
# fixtures the GPU tests read. Writes .gpu-bundle.tar.xz (git-ignored) in the repository.
#
#   bash scripts/gpu-bundle.sh            # builds first (scripts/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
SHARED="${PIVOTMT_SHARED_DIR:-$ROOT/../shared}"
bash scripts/build.sh >/dev/null
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
B="$STAGE/pivotmt-gpu"
mkdir -p "$B/bin" "$B/lib" "$B/shared/fixtures/models"

programs=(apps/pivotmt/pivotmt tests/ops_harness tests/test_cuda tests/test_cuda_kernels tests/test_gpu_engine
          tests/test_gpu_encoder tests/test_gpu_train bench/bench_gpu bench/bench_nllb bench/bench_train bench/bench_comet)
for p in "${programs[@]}"; do strip -o "$B/bin/$(basename "$p")" "build/$p"; done

# Shared libraries: everything ldd resolves except the driver (libcuda). cuBLAS is not
# linked (pivotmt loads it when it makes GPU ops): the machine's toolkit or wheel provides it. The C library and loader go in lib/glibc,
# used only when the machine's own is too old.
mkdir -p "$B/lib/glibc"
for p in "${programs[@]}"; do ldd "build/$p"; done | awk '/=>/ {print $3}' | sort -u | while read -r lib; do
  [[ -z "$lib" || ! -f "$lib" ]] && continue
  name="$(basename "$lib")"
  case "$name" in
    libcuda.so*|libcublas.so*|libcublasLt.so*) ;;
    libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|libmvec.so.*) cp -L "$lib" "$B/lib/glibc/$name" ;;
    *) cp -L "$lib" "$B/lib/$name" ;;
  esac
done
cp -L /lib64/ld-linux-x86-64.so.2 "$B/lib/glibc/"
ldd --version | awk 'NR == 1 {print $NF}' >"$B/lib/glibc/VERSION"  # awk reads it all: no SIGPIPE under pipefail

# Fixtures (../shared is not on the GPU machine): tiny-tower without its 14 MB golden (its
# prompts.json carries the real prompts; its parity is checked against the CPU engine).
for m in tiny-gqa tiny-bf16-tied tiny-sharded tiny-tower tiny-minilm; do
  mkdir -p "$B/shared/fixtures/models/$m"
  for f in "$SHARED/fixtures/models/$m"/*; do
    [[ "$m" == tiny-tower && "$(basename "$f")" == golden.safetensors ]] && continue
    cp -r "$f" "$B/shared/fixtures/models/$m/"
  done
done
# The example pools the COMET side by side takes its distinct triples from (~0.9 MB).
mkdir -p "$B/shared/fixtures/original"
cp "$SHARED"/fixtures/original/{konkani,arabic}_train_pool_reconstructed.jsonl "$B/shared/fixtures/original/"
# What it was built from: gpu-check.sh refuses it for a checkout with other sources.
{ git rev-parse HEAD; git diff --quiet HEAD -- src apps tests bench fuzz CMakeLists.txt || echo "(with uncommitted changes)"; } |
  paste -sd' ' >"$B/COMMIT"
bash scripts/source-digest.sh >"$B/SOURCES"
# -9: 2.7 MB smaller than -6 (48.1 against 50.9 MB on 2026-12-07) for a minute more here;
# the working tree and the bundle together must stay under the device's 64 MiB.
tar -C "$STAGE" -cf - pivotmt-gpu | xz -T2 -9 >"$ROOT/.gpu-bundle.tar.xz"
du -sh "$B"
bundle_bytes=$(stat -c %s "$ROOT/.gpu-bundle.tar.xz")
tree_bytes=$({ git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 -r stat -c %s -- 2>/dev/null |
             awk '{s += $1} END {print s + 0}')
limit=$((64 * 1024 * 1024))
awk -v b="$bundle_bytes" -v t="$tree_bytes" -v l="$limit" \
  'BEGIN {printf "bundle %.1f MB + working tree %.1f MB = %.1f MB of the %.1f MB a device run carries\n", b/1e6, t/1e6, (b+t)/1e6, l/1e6}'
if (( bundle_bytes + tree_bytes > limit )); then
  echo "gpu-bundle.sh: the bundle and the working tree exceed the 64 MiB a device run carries" >&2
  exit 1
fi
