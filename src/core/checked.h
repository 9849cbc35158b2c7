// Overflow-checked arithmetic for the sizes, strides, counts and offsets read from
// untrusted files: a product or sum that wraps around in 64 bits must be an error, never a
// small number that passes the bounds checks after it (a crafted torch checkpoint whose
// storage size was ~2^62 elements wrapped to 16 bytes and was then read far out of bounds).
// `where` names the file and the field; the message says which operation overflowed.
#pragma once
#include <cstdint>
#include <string>

#include <fmt/format.h>

#include "core/error.h"

namespace pivotmt {

inline uint64_t checked_mul(uint64_t a, uint64_t b, const std::string& where) {
  uint64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) throw FormatError(fmt::format("{}: {} x {} overflows 64 bits", where, a, b));
  return r;
}

inline uint64_t checked_add(uint64_t a, uint64_t b, const std::string& where) {
  uint64_t r = 0;
  if (__builtin_add_overflow(a, b, &r)) throw FormatError(fmt::format("{}: {} + {} overflows 64 bits", where, a, b));
  return r;
}

// The element count of a shape (every dimension >= 0).
template <class Dims>
uint64_t checked_numel(const Dims& shape, const std::string& where) {
  uint64_t n = 1;
  for (const auto d : shape) {
    if (d < 0) throw FormatError(fmt::format("{}: a negative dimension ({})", where, int64_t(d)));
    n = checked_mul(n, uint64_t(d), where);
  }
  return n;
}

}  // namespace pivotmt
