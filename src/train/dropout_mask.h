// LoRA dropout masks drawn from (key, layer, module, element) alone: the same mask when a
// layer is recomputed in backward, when a resumed run replays a step, and on every device
// (the functions are __host__ __device__: the GPU's kernels draw the CPU's masks).
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "backends/random_fill.h"

namespace pivotmt::train {

PIVOTMT_RANDOM_HD inline uint64_t mask_seed(uint64_t key, size_t layer, size_t module) {
  return random_fill::splitmix64(key ^ random_fill::splitmix64(0x4c6f5241ull + layer * 16 + module));
}
// Keep element i unless its 16-bit uniform falls below `threshold` = round(p · 65536) (the
// dropout probability in steps of 1/65536); four elements per splitmix64 draw.
PIVOTMT_RANDOM_HD inline bool keep(uint64_t seed, size_t i, uint32_t threshold) {
  return uint32_t((random_fill::splitmix64(seed + i / 4) >> (16 * (i % 4))) & 0xffff) >= threshold;
}
inline uint32_t drop_threshold(float p) { return uint32_t(std::lround(double(p) * 65536.0)); }

}  // namespace pivotmt::train
