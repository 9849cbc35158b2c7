// libFuzzer target: arbitrary bytes as a safetensors file. The parser must either accept
// (and then every tensor range lies inside the input) or throw FormatError; nothing else.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "core/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  try {
    const auto header = pivotmt::parse_safetensors(bytes, size, "fuzz-input");
    for (const auto& t : header.tensors) {
      // Invariants of an accepted file.
      if (header.data_start + t.end > size || t.begin > t.end) std::abort();
      if (t.numel() * pivotmt::dtype_size(t.dtype) != t.nbytes()) std::abort();
    }
  } catch (const pivotmt::FormatError&) {
  }
  return 0;
}
