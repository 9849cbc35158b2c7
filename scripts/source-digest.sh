#!/usr/bin/env bash
# One SHA-256 over every source file pivotmt's programs are built from (src, apps, tests,
# bench, fuzz, CMakeLists.txt) under DIR: scripts/gpu-bundle.sh records it in the bundle and
# scripts/gpu-check.sh refuses a bundle whose digest is not the checkout's (git need not be
# on the GPU machine, and a commit that touches only docs keeps the same digest).
#   bash scripts/source-digest.sh [DIR]
set -euo pipefail
cd "${1:-$(dirname "$0")/..}"
find src apps tests bench fuzz CMakeLists.txt -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 |
  LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-64
