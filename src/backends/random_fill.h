// Deterministic pseudo-random weights, identical on every device: element i of a tensor
// with seed s is a function of (s, i) alone (splitmix64), so a random-weight model built on
// a GPU holds exactly the values the CPU builds (before rounding to the storage dtype).
// Used for benchmark models "generated on the device" (no 14 GB checkpoint to write or read).
#pragma once
#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define PIVOTMT_RANDOM_HD __host__ __device__
#else
#define PIVOTMT_RANDOM_HD
#endif

namespace pivotmt::random_fill {

PIVOTMT_RANDOM_HD inline uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// offset + scale * u with u uniform in [-1, 1) (24 random bits: exact in F32), the product
// and the sum each rounded once. nvcc contracts a * b + c into one FMA by default (one
// rounding), the host compiler does not (x86-64 has no FMA without -march): the device
// spells the two roundings out so that both give the same bits.
PIVOTMT_RANDOM_HD inline float value(uint64_t seed, uint64_t i, float scale, float offset) {
  const uint64_t bits = splitmix64(seed * 0x100000001b3ull ^ splitmix64(i)) >> 40;  // 24 bits
#if defined(__CUDA_ARCH__)
  const float u = __fadd_rn(__fmul_rn(float(bits), 2.0f / 16777216.0f), -1.0f);
  return __fadd_rn(offset, __fmul_rn(scale, u));
#else
  const float u = float(bits) * (2.0f / 16777216.0f) - 1.0f;
  return offset + scale * u;
#endif
}

}  // namespace pivotmt::random_fill
