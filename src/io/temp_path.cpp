#include "io/temp_path.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "core/error.h"

namespace pivotmt {

std::string unique_temp_path(const std::string& final_path) {
  static std::atomic<uint64_t> counter{0};
  return fmt::format("{}.tmp.{}.{}", final_path, ::getpid(), counter++);
}

void write_file_atomically(const std::string& path, const std::string& text) {
  const std::string tmp = unique_temp_path(path);
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw Error(fmt::format("{}: cannot create", tmp));
    out << text;
    out.flush();
    if (!out) throw Error(fmt::format("{}: write failed", tmp));
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace pivotmt
