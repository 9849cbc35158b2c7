#include "metrics/numpy_random.h"

#include "core/error.h"

namespace pivotmt::metrics {
namespace {
// SeedSequence's hashing constants (numpy/random/bit_generator.pyx).
constexpr uint32_t kInitA = 0x43b0d7e5, kMultA = 0x931e8875;
constexpr uint32_t kInitB = 0x8b51f9dd, kMultB = 0x58f38ded;
constexpr uint32_t kMixMultL = 0xca01f9dd, kMixMultR = 0x4973f715;
constexpr int kXShift = 16;
constexpr size_t kPoolSize = 4;

constexpr unsigned __int128 kPcgMultiplier =
    (static_cast<unsigned __int128>(0x2360ed051fc65da4ull) << 64) | 0x4385df649fccf645ull;

uint32_t hashmix(uint32_t value, uint32_t& hash_const) {
  value ^= hash_const;
  hash_const *= kMultA;
  value *= hash_const;
  value ^= value >> kXShift;
  return value;
}

uint32_t mix(uint32_t x, uint32_t y) {
  uint32_t result = kMixMultL * x - kMixMultR * y;
  result ^= result >> kXShift;
  return result;
}
}  // namespace

std::vector<uint64_t> seed_sequence_state(uint64_t seed, size_t n_words) {
  // The integer entropy as little-endian 32-bit words (at least one word).
  std::vector<uint32_t> entropy;
  do {
    entropy.push_back(static_cast<uint32_t>(seed & 0xffffffffu));
    seed >>= 32;
  } while (seed != 0);

  uint32_t pool[kPoolSize];
  uint32_t hash_const = kInitA;
  for (size_t i = 0; i < kPoolSize; ++i) pool[i] = hashmix(i < entropy.size() ? entropy[i] : 0, hash_const);
  for (size_t src = 0; src < kPoolSize; ++src)
    for (size_t dst = 0; dst < kPoolSize; ++dst)
      if (src != dst) pool[dst] = mix(pool[dst], hashmix(pool[src], hash_const));
  for (size_t src = kPoolSize; src < entropy.size(); ++src)
    for (size_t dst = 0; dst < kPoolSize; ++dst) pool[dst] = mix(pool[dst], hashmix(entropy[src], hash_const));

  std::vector<uint32_t> words(2 * n_words);
  uint32_t hb = kInitB;
  for (size_t i = 0; i < words.size(); ++i) {
    uint32_t v = pool[i % kPoolSize];
    v ^= hb;
    hb *= kMultB;
    v *= hb;
    v ^= v >> kXShift;
    words[i] = v;
  }
  std::vector<uint64_t> out(n_words);
  for (size_t i = 0; i < n_words; ++i) out[i] = uint64_t(words[2 * i]) | (uint64_t(words[2 * i + 1]) << 32);
  return out;
}

Pcg64::Pcg64(uint64_t seed) {
  const auto s = seed_sequence_state(seed, 4);
  const unsigned __int128 initstate = (static_cast<unsigned __int128>(s[0]) << 64) | s[1];
  const unsigned __int128 initseq = (static_cast<unsigned __int128>(s[2]) << 64) | s[3];
  state_ = 0;
  inc_ = (initseq << 1) | 1;
  step();
  state_ += initstate;
  step();
}

void Pcg64::step() { state_ = state_ * kPcgMultiplier + inc_; }

uint64_t Pcg64::next_uint64() {
  step();
  const uint64_t hi = static_cast<uint64_t>(state_ >> 64), lo = static_cast<uint64_t>(state_);
  const unsigned rot = static_cast<unsigned>(state_ >> 122);
  const uint64_t x = hi ^ lo;
  return (x >> rot) | (x << ((64 - rot) & 63));
}

uint32_t Pcg64::next_uint32() {
  if (has_uint32_) {
    has_uint32_ = false;
    return uinteger_;
  }
  const uint64_t v = next_uint64();
  has_uint32_ = true;
  uinteger_ = static_cast<uint32_t>(v >> 32);
  return static_cast<uint32_t>(v & 0xffffffffu);
}

std::vector<int64_t> Pcg64::choice(int64_t n, size_t count) {
  if (n <= 0) throw Error("choice: population must be positive");
  std::vector<int64_t> out(count, 0);
  const uint64_t rng = uint64_t(n - 1);
  if (rng == 0) return out;
  if (rng > 0xffffffffull) throw Error("choice: populations above 2^32 are not supported");
  if (rng == 0xffffffffull) {
    for (auto& v : out) v = next_uint32();
    return out;
  }
  // Lemire's nearly divisionless bounded integers on 32-bit draws.
  const uint32_t rng_excl = static_cast<uint32_t>(rng) + 1;
  for (auto& v : out) {
    uint64_t m = uint64_t(next_uint32()) * rng_excl;
    uint32_t leftover = static_cast<uint32_t>(m);
    if (leftover < rng_excl) {
      const uint32_t threshold = (UINT32_MAX - static_cast<uint32_t>(rng)) % rng_excl;
      while (leftover < threshold) {
        m = uint64_t(next_uint32()) * rng_excl;
        leftover = static_cast<uint32_t>(m);
      }
    }
    v = static_cast<int64_t>(m >> 32);
  }
  return out;
}

std::vector<uint8_t> Pcg64::random_bools(size_t count) {
  std::vector<uint8_t> out(count);
  uint32_t buf = 0;
  int bits = 0;
  for (auto& b : out) {
    if (bits == 0) {
      buf = next_uint32();
      bits = 31;
    } else {
      buf >>= 1;
      --bits;
    }
    b = buf & 1u;
  }
  return out;
}

}  // namespace pivotmt::metrics
