// libFuzzer target: a safetensors file. The parser must either accept (and then every
// tensor range lies inside the input) or throw FormatError; nothing else.
//
// Inputs starting with 'R' are a recipe for a well-formed file (edge_numbers.h): header
// length, shapes and data_offsets from the edges of 64-bit arithmetic, so that element
// counts, byte sizes and offsets that would wrap are tried; other inputs are the file.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>

#include "edge_numbers.h"

#include "core/error.h"
#include "io/safetensors.h"

namespace {
std::string from_recipe(const uint8_t* data, size_t size) {
  static const char* dtypes[] = {"F32", "F16", "BF16", "I64", "U8", "BOOL", "F64", "I8"};
  pivotmt::fuzz::Recipe r{data, size};
  std::string header = "{";
  const size_t tensors = 1 + r.byte() % 3;
  for (size_t i = 0; i < tensors; ++i) {
    header += (i ? ",\"t" : "\"t") + std::to_string(i) + "\":{\"dtype\":\"" + dtypes[r.byte() % 8] + "\",\"shape\":[";
    const size_t rank = r.byte() % 4;
    for (size_t k = 0; k < rank; ++k) header += (k ? "," : "") + std::to_string(r.number());
    header += "],\"data_offsets\":[" + std::to_string(r.number()) + "," + std::to_string(r.number()) + "]}";
  }
  header += "}";
  const uint64_t claimed = r.byte() % 4 ? header.size() : r.number();  // the length prefix, now and then a lie
  std::string file;
  for (int i = 0; i < 8; ++i) file += char((claimed >> (8 * i)) & 0xff);
  file += header + std::string(size_t(r.byte()) * 8, '\x01');
  return file;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string recipe = size > 0 && data[0] == 'R' ? from_recipe(data + 1, size - 1) : std::string();
  if (!recipe.empty()) data = reinterpret_cast<const uint8_t*>(recipe.data()), size = recipe.size();
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
