// libFuzzer target: bench_gpu's replay file (bench/replay.h). The parser must either accept
// — every request's prompt then rebuilt from in-bounds prefix references and tokens — or
// throw Error; nothing else. Inputs starting with 'Z' are the file itself (a zstd frame);
// others are its uncompressed records, so the fuzzer reaches the record parser directly.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "replay.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    if (size > 0 && data[0] == 'Z') {
      pivotmt::parse_replay(std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1), "fuzz");
    } else {
      const auto requests =
          pivotmt::parse_replay_records(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
      size_t tokens = 0;
      for (const auto& q : requests) tokens += q.prompt.size();
      if (tokens > (size_t(100) << 20)) __builtin_trap();
    }
  } catch (const pivotmt::Error&) {
  }
  return 0;
}
