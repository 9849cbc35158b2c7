#include "train/frozen_matrix.h"

#include <cstring>

#include <fmt/format.h>

#include "core/dtype.h"
#include "core/error.h"

namespace pivotmt {

const char* base_weights_name(BaseWeights b) {
  switch (b) {
    case BaseWeights::F32: return "f32";
    case BaseWeights::F16: return "f16";
    case BaseWeights::NF4: return "nf4";
  }
  return "?";
}

BaseWeights parse_base_weights(const std::string& s) {
  if (s == "f32") return BaseWeights::F32;
  if (s == "f16") return BaseWeights::F16;
  if (s == "nf4") return BaseWeights::NF4;
  throw Error(fmt::format("base weights '{}': expected f32, f16 or nf4", s));
}

void FrozenMatrix::rows_f32(size_t r0, size_t r1, float* dst) const {
  switch (storage) {
    case BaseWeights::F32: std::memcpy(dst, f32.data() + r0 * in, (r1 - r0) * in * sizeof(float)); break;
    case BaseWeights::F16: convert_floats(DType::F16, f16.data() + r0 * in, DType::F32, dst, (r1 - r0) * in); break;
    case BaseWeights::NF4: nf4::dequantize(q, r0 * in, r1 * in, dst); break;
  }
}

size_t FrozenMatrix::bytes() const {
  return storage == BaseWeights::F32 ? out * in * 4 : storage == BaseWeights::F16 ? out * in * 2 : q.bytes();
}

}  // namespace pivotmt
