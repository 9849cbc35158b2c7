#!/usr/bin/env bash
# Configures and builds the main (release, CUDA when available) configuration in build/:
# every target, or the ninja targets given after -- (scripts/run.sh builds `pivotmt` only).
#   bash scripts/build.sh [CMAKE_ARGS...] [-- TARGETS...]
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x /usr/local/cuda/bin/nvcc ]] && export PATH="/usr/local/cuda/bin:$PATH"
cmake_args=() targets=()
while (($#)); do
  if [[ "$1" == -- ]]; then shift; targets=("$@"); break; fi
  cmake_args+=("$1"); shift
done
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "${cmake_args[@]}" >/dev/null
ninja -C build "${targets[@]}"
