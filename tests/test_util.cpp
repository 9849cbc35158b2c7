#include "test_util.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>

namespace pivotmt::test {
namespace fs = std::filesystem;

// PIVOTMT_SHARED_DIR in the environment overrides the build's path (a test bundle run on
// another machine, where ../shared is not beside the repository).
std::string shared_dir() {
  if (const char* dir = std::getenv("PIVOTMT_SHARED_DIR"); dir && *dir) return dir;
  return PIVOTMT_SHARED_DIR;
}
std::string fixture(const std::string& rel) { return (fs::path(shared_dir()) / "fixtures" / rel).string(); }
// PIVOTMT_SOURCE_DIR likewise (the bundle's tests run in a copy of the working tree).
std::string source_dir() {
  if (const char* dir = std::getenv("PIVOTMT_SOURCE_DIR"); dir && *dir) return dir;
  return PIVOTMT_SOURCE_DIR;
}

TempDir::TempDir() {
  std::random_device rd;
  path_ = fs::temp_directory_path() / ("pivotmt-test-" + std::to_string(::getpid()) + "-" + std::to_string(rd()));
  fs::create_directories(path_);
}
TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& content) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

}  // namespace pivotmt::test
