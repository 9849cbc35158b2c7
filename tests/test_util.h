// Helpers shared by the tests: fixture paths and scratch directories.
#pragma once
#include <cstdint>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <string>
#include <cstring>
#include <vector>

#include "io/safetensors.h"

namespace pivotmt::test {

// n values ~ N(0, scale²) from a fixed seed (random data for kernel tests: never zeros).
inline std::vector<float> random_normal(size_t n, unsigned seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

// A tensor of a golden file as a vector of T (the stored dtype must have T's size).
template <typename T>
std::vector<T> read_tensor(const SafetensorsFile& f, const std::string& name) {
  const auto& t = f.at(name);
  std::vector<T> v(t.numel());
  if (t.nbytes() != v.size() * sizeof(T)) throw std::runtime_error(name + ": element size mismatch");
  std::memcpy(v.data(), f.data(t).data(), t.nbytes());
  return v;
}

std::string shared_dir();                     // ../shared (CI has it at the same place)
std::string fixture(const std::string& rel);  // shared_dir()/fixtures/rel
std::string source_dir();                     // the repository (tests/goldens/...)

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
