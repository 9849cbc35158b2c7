// safetensors: reader (mmap, validated before use) and writer.
// Format: u64 little-endian header length N, N bytes of JSON
//   {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
// then the data section; offsets are relative to its start, tensors tile it without holes.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "io/mapped_file.h"

namespace pivotmt {

// Largest header we accept: the Hugging Face library's own limit.
inline constexpr uint64_t kMaxSafetensorsHeader = 100'000'000;

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte range inside the data section

  uint64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

std::string shape_to_string(std::span<const int64_t> shape);

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // in file (offset) order
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // byte offset of the data section in the file
};

// Parses and validates the first bytes of a safetensors file (whole file or at least its
// header; `file_size` is the full size). Everything is checked before anything is used:
// header length within the file and the limit, valid JSON object, known dtypes, shapes,
// shape product x dtype size == byte range, ranges inside the data section, no overlaps,
// no holes, no duplicate names. `label` (usually the path) prefixes every error message.
SafetensorsHeader parse_safetensors(std::span<const std::byte> prefix, uint64_t file_size, const std::string& label);

// One mapped, validated .safetensors file.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);

  const std::string& path() const { return file_.path(); }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const TensorInfo* find(std::string_view name) const;  // nullptr when absent
  const TensorInfo& at(std::string_view name) const;    // throws naming file and tensor
  std::span<const std::byte> data(const TensorInfo& t) const;

 private:
  MappedFile file_;
  SafetensorsHeader header_;
  std::map<std::string, size_t, std::less<>> index_;
};

// Writer. Tensors are described up front so the header can be written first; each
// tensor's bytes are then produced by `fill` one at a time (so a 13 GB checkpoint never
// has to sit in memory). The file appears atomically (written to PATH.tmp, renamed).
struct TensorSpec {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
};
using TensorFill = std::function<void(const TensorSpec& spec, std::span<std::byte> out)>;
void write_safetensors(const std::string& path, const std::vector<TensorSpec>& tensors,
                       const std::map<std::string, std::string>& metadata, const TensorFill& fill);

// Convenience for small files: tensors given as (spec, bytes) pairs.
struct TensorData {
  TensorSpec spec;
  std::vector<std::byte> bytes;
};
void write_safetensors(const std::string& path, const std::vector<TensorData>& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

}  // namespace pivotmt
