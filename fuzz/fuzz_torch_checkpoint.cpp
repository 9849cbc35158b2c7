// libFuzzer target: a torch.save checkpoint. Either tensors whose every element lies
// inside the file, or an Error; never anything executed, never a crash.
//
// Two kinds of input (the first byte chooses): raw bytes as the file (mutations of real
// checkpoints: the zip structure, the pickle), or a recipe for a well-formed archive whose
// numbers are the fuzzer's (tests/torch_writer.h): storage sizes, offsets, shapes and
// strides drawn from values near the edges of 64-bit arithmetic (0, 1, 2^31, 2^32, 2^62,
// 2^63 - 1, ...), so that every size x stride and offset + extent that can wrap around is
// tried, which random byte flips inside a zip archive almost never reach.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.h"
#include "io/torch_checkpoint.h"
#include "edge_numbers.h"
#include "torch_writer.h"

namespace {

std::string from_recipe(const uint8_t* data, size_t size) {
  static const char* types[] = {"FloatStorage", "HalfStorage", "DoubleStorage", "ByteStorage", "LongStorage", "BoolStorage"};
  pivotmt::fuzz::Recipe r{data, size};
  auto number = [&] { return int64_t(r.number()); };
  std::vector<pivotmt::test::CraftedTensor> tensors(1 + r.byte() % 3);
  for (size_t i = 0; i < tensors.size(); ++i) {
    auto& t = tensors[i];
    t.name = "t" + std::to_string(i);
    t.storage_type = types[r.byte() % 6];
    t.storage_key = std::to_string(r.byte() % 2);  // two tensors may share a storage
    t.storage_numel = number();
    t.storage_bytes = size_t(r.byte()) * 4;
    t.offset = number();
    const size_t rank = r.byte() % 4;
    t.shape.clear();
    t.stride.clear();
    for (size_t k = 0; k < rank; ++k) t.shape.push_back(number());
    for (size_t k = 0; k < rank; ++k) t.stride.push_back(number());
    if (r.byte() % 8 == 0) t.stride.push_back(1);  // a rank mismatch now and then
  }
  return pivotmt::test::crafted_torch_checkpoint(tensors);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path =
      (std::filesystem::temp_directory_path() / ("pivotmt-fuzz-torch-" + std::to_string(getpid()) + ".bin")).string();
  const std::string bytes = size > 0 && data[0] == 'R' ? from_recipe(data + 1, size - 1)
                                                        : std::string(reinterpret_cast<const char*>(data), size);
  std::ofstream(path, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
  try {
    const pivotmt::TorchCheckpoint ckpt(path);
    for (const auto& t : ckpt.tensors()) (void)ckpt.contiguous_bytes(t);
  } catch (const pivotmt::Error&) {
  }
  return 0;
}
