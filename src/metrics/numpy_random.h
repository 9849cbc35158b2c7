// NumPy's default random generator, reproduced bit for bit so that bootstrap resampling
// draws the same indices as sacrebleu (numpy.random.default_rng(seed)):
// SeedSequence(seed) -> PCG64 (128-bit LCG, XSL-RR output) -> Generator.choice /
// Generator.integers(2, dtype=bool).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace pivotmt::metrics {

// numpy.random.SeedSequence(entropy).generate_state(n_words, uint64) for an integer seed.
std::vector<uint64_t> seed_sequence_state(uint64_t seed, size_t n_words);

class Pcg64 {
 public:
  explicit Pcg64(uint64_t seed);  // as numpy.random.default_rng(seed)
  uint64_t next_uint64();
  // numpy's next_uint32: the low half of a 64-bit draw, then its high half.
  uint32_t next_uint32();
  unsigned __int128 state() const { return state_; }
  unsigned __int128 increment() const { return inc_; }

  // Generator.choice(n, size=count, replace=True): uniform integers in [0, n)
  // (Lemire's method on 32-bit draws when n - 1 fits 32 bits, as numpy does).
  std::vector<int64_t> choice(int64_t n, size_t count);
  // Generator.integers(2, size=count, dtype=bool): one bit per draw from 32-bit words.
  std::vector<uint8_t> random_bools(size_t count);

 private:
  void step();
  unsigned __int128 state_ = 0, inc_ = 0;
  bool has_uint32_ = false;
  uint32_t uinteger_ = 0;
};

}  // namespace pivotmt::metrics
