// A frozen base weight matrix in its storage format (QLoRA's base: F32, F16, or NF4 with
// double quantisation as bitsandbytes stores it), read as F32 — on the host here, on a GPU
// through train::TrainDevice.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "quant/nf4.h"

namespace pivotmt {

enum class BaseWeights { F32, F16, NF4 };
const char* base_weights_name(BaseWeights b);
BaseWeights parse_base_weights(const std::string& s);  // "f32" | "f16" | "nf4"

// A frozen weight matrix W [out, in] in its storage format, read as F32.
class FrozenMatrix {
 public:
  size_t out = 0, in = 0;
  BaseWeights storage = BaseWeights::F32;
  std::vector<float> f32;
  std::vector<uint16_t> f16;
  nf4::Quantized q;  // NF4 with double quantisation (QLoRA's default)
  void rows_f32(size_t r0, size_t r1, float* out) const;  // rows [r0, r1) as F32
  size_t bytes() const;
};

}  // namespace pivotmt
