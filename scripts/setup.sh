#!/usr/bin/env bash
# Installs every Debian package pivotmt needs to build, test and run. Idempotent: packages
# already present are left alone, and apt is only consulted when something is missing.
set -euo pipefail

PACKAGES=(
  cmake ninja-build g++ pkg-config
  clang libclang-rt-14-dev          # libFuzzer + sanitizer runtimes (CI's sanitizer build)
  libcli11-dev libtomlplusplus-dev nlohmann-json3-dev libfmt-dev
  libcurl4-openssl-dev libssl-dev   # hub client (HTTP, sha256)
  libcpp-httplib-dev                # test server standing in for the hub
  libicu-dev                        # Unicode categories and lowercasing (metrics)
  libsentencepiece-dev              # FLORES tokenizers (metrics), SentencePiece models
  libpcre2-dev                      # Unicode regexes of byte-level BPE pre-tokenizers
  libopenblas-dev                   # SGEMM for CPU prefill
  libsnappy-dev libzstd-dev zlib1g-dev  # Parquet page compression
  libfaiss-dev                      # HNSW vector search for large retrieval pools
  libcairo2-dev                     # ablation plots (PNG and SVG)
  libgtest-dev libbenchmark-dev
  slurmctld slurmd slurm-client munge  # the Slurm test runs a one-node cluster (tests/cli/slurm.sh)
  python3                           # standard library only: CSV comparisons in CLI tests
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all ${#PACKAGES[@]} packages present"
fi
if command -v nvcc >/dev/null 2>&1 || [[ -x /usr/local/cuda/bin/nvcc ]]; then
  echo "setup: CUDA toolkit found: the CUDA backend will be built"
else
  echo "setup: no CUDA toolkit: building the CPU-only configuration"
fi
