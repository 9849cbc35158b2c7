#include "io/temp_path.h"

#include <unistd.h>

#include <atomic>

#include <fmt/format.h>

namespace pivotmt {

std::string unique_temp_path(const std::string& final_path) {
  static std::atomic<uint64_t> counter{0};
  return fmt::format("{}.tmp.{}.{}", final_path, ::getpid(), counter++);
}

}  // namespace pivotmt
