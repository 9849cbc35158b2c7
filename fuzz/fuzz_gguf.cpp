// libFuzzer target: a GGUF file. The parser must either accept (and then every tensor's
// bytes lie inside the input, aligned, without overlaps, and dequantise without reading
// past them) or throw FormatError; nothing else.
//
// Inputs starting with 'R' are a recipe for a well-formed file (edge_numbers.h): metadata
// counts, array lengths, tensor dims, types and offsets from the edges of 64-bit
// arithmetic; other inputs are the file.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "edge_numbers.h"
#include "gguf_writer.h"

#include "core/error.h"
#include "io/gguf.h"
#include "quant/ggml_quants.h"

namespace {
std::string from_recipe(const uint8_t* data, size_t size) {
  pivotmt::fuzz::Recipe r{data, size};
  pivotmt::test::GgufWriter w;
  w.version = 2 + r.byte() % 2;
  if (r.byte() % 4 == 0) w.kv_u32("general.alignment", uint32_t(r.number()));
  const size_t kvs = r.byte() % 4;
  for (size_t i = 0; i < kvs; ++i) {
    std::string value;
    pivotmt::test::GgufWriter::put<uint32_t>(value, r.byte() % 13);  // an array's element type
    pivotmt::test::GgufWriter::put<uint64_t>(value, r.number());      // its count
    value += std::string(r.byte(), char(r.byte()));
    w.kv_raw("k" + std::to_string(i), r.byte() % 2 ? 9 : r.byte() % 14, value);
  }
  static const uint32_t types[] = {0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 30, 24, 99};
  const size_t tensors = r.byte() % 4;
  for (size_t i = 0; i < tensors; ++i) {
    std::vector<uint64_t> dims(r.byte() % 5);
    for (auto& d : dims) d = r.number();
    const int64_t offset = r.byte() % 2 ? int64_t(r.number() & 0x7fffffffffffffffull) : -1;
    w.tensor("t" + std::to_string(i), dims, types[r.byte() % 13], std::string(size_t(r.byte()) * 4, '\x3c'), offset);
  }
  const uint64_t claimed_tensors = r.byte() % 8 ? ~0ull : r.number();
  return w.bytes(claimed_tensors);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string recipe = size > 0 && data[0] == 'R' ? from_recipe(data + 1, size - 1) : std::string();
  if (!recipe.empty()) data = reinterpret_cast<const uint8_t*>(recipe.data()), size = recipe.size();
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  try {
    const auto h = pivotmt::parse_gguf(bytes, "fuzz-input");
    for (const auto& t : h.tensors) {
      // Invariants of an accepted file.
      if (h.data_start + t.offset + t.nbytes > size || t.offset % h.alignment) std::abort();
      const auto& traits = pivotmt::ggml_traits(t.type);
      if (!traits.dequantized || t.numel() > 4096) continue;
      std::vector<float> out(t.numel());
      pivotmt::ggml_dequantize(t.type, bytes.subspan(h.data_start + t.offset, t.nbytes), out.data(), t.numel());
    }
  } catch (const pivotmt::FormatError&) {
  }
  return 0;
}
