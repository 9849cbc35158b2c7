// Numbers at the edges of 32- and 64-bit arithmetic, for the fuzzers' structure-aware
// inputs: a file built well-formed around them reaches the size x stride, count x width
// and offset + length computations that random byte flips almost never reach.
#pragma once
#include <cstddef>
#include <cstdint>

namespace pivotmt::fuzz {

// Takes the input's bytes one at a time (zeros once they run out).
struct Recipe {
  const uint8_t* p;
  size_t n;
  uint8_t byte() { return n ? (--n, *p++) : 0; }
  // An edge value most of the time, else 8 bytes as they are.
  uint64_t number() {
    static const uint64_t edges[] = {0, 1, 2, 3, 4, 7, 8, 16, 255, 256, 4096, 65536, (uint64_t(1) << 31) - 1,
                                     uint64_t(1) << 31, uint64_t(1) << 32, (uint64_t(1) << 32) + 1, uint64_t(1) << 40,
                                     uint64_t(1) << 61, uint64_t(1) << 62, (uint64_t(1) << 62) + 4,
                                     (uint64_t(1) << 63) - 1, uint64_t(1) << 63, (uint64_t(1) << 63) - (uint64_t(1) << 39),
                                     ~uint64_t(0), ~uint64_t(0) - 1};
    const uint8_t b = byte();
    if (b < 200) return edges[b % (sizeof edges / sizeof edges[0])];
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = (v << 8) | byte();
    return v;
  }
};

}  // namespace pivotmt::fuzz
