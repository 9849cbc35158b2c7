// libFuzzer target: arbitrary bytes as a torch.save checkpoint. Either tensors whose every
// element lies inside the file, or an Error; never anything executed.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.h"
#include "io/torch_checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path =
      (std::filesystem::temp_directory_path() / ("pivotmt-fuzz-torch-" + std::to_string(getpid()) + ".bin")).string();
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(data), std::streamsize(size));
  try {
    const pivotmt::TorchCheckpoint ckpt(path);
    for (const auto& t : ckpt.tensors()) (void)ckpt.contiguous_bytes(t);
  } catch (const pivotmt::Error&) {
  }
  return 0;
}
