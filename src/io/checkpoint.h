// A Hugging Face checkpoint directory's weights: one model.safetensors, or shards listed
// in model.safetensors.index.json. Tensors are looked up by name across shards and
// converted on load to the compute dtype.
#pragma once
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace pivotmt {

class Checkpoint {
 public:
  // `dir` holds model.safetensors.index.json, model.safetensors, or exactly one other
  // *.safetensors file. Throws Error naming the directory / file otherwise.
  explicit Checkpoint(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const std::vector<std::string>& files() const { return file_names_; }
  bool sharded() const { return sharded_; }

  std::vector<std::string> tensor_names() const;  // sorted
  const TensorInfo* find(std::string_view name) const;
  const TensorInfo& at(std::string_view name) const;  // throws naming the tensor
  const SafetensorsFile& file_of(std::string_view name) const;
  std::span<const std::byte> raw(std::string_view name) const;

  // Converts a float tensor to `to` (F32, F16 or BF16) into `out` (exactly numel x size).
  void load_into(std::string_view name, DType to, std::span<std::byte> out) const;
  std::vector<float> load_f32(std::string_view name) const;

 private:
  struct Entry {
    const SafetensorsFile* file;
    const TensorInfo* info;
  };
  std::string dir_;
  bool sharded_ = false;
  std::vector<std::string> file_names_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Entry, std::less<>> tensors_;
};

}  // namespace pivotmt
