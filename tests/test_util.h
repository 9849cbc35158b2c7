// Helpers shared by the tests: fixture paths and scratch directories.
#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace pivotmt::test {

std::string shared_dir();                     // ../shared (CI has it at the same place)
std::string fixture(const std::string& rel);  // shared_dir()/fixtures/rel

// A fresh directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  std::string str(const std::string& child = "") const { return (path_ / child).string(); }

 private:
  std::filesystem::path path_;
};

std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& content);

}  // namespace pivotmt::test
