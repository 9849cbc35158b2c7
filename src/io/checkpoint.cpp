#include "io/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/json_file.h"

namespace pivotmt {
namespace fs = std::filesystem;

Checkpoint::Checkpoint(const std::string& dir) : dir_(dir) {
  if (!fs::is_directory(dir)) throw Error(fmt::format("{}: not a directory", dir));
  const fs::path index_path = fs::path(dir) / "model.safetensors.index.json";
  std::map<std::string, std::string> weight_map;  // tensor -> file, from the index
  if (fs::exists(index_path)) {
    sharded_ = true;
    const auto index = read_json_file(index_path.string());
    const std::string label = index_path.string();
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
      throw FormatError(fmt::format("{}: expected an object with a 'weight_map' object", label));
    for (const auto& [tensor, file] : index["weight_map"].items()) {
      if (!file.is_string()) throw FormatError(fmt::format("{}: weight_map['{}'] is not a string", label, tensor));
      const auto& name = file.get_ref<const std::string&>();
      const fs::path p(name);
      if (name.empty() || p.is_absolute() || name.find("..") != std::string::npos)
        throw FormatError(fmt::format("{}: weight_map['{}'] = '{}' is not a file inside the checkpoint", label,
                                      tensor, name));
      weight_map[tensor] = name;
      if (std::find(file_names_.begin(), file_names_.end(), name) == file_names_.end()) file_names_.push_back(name);
    }
    if (file_names_.empty()) throw FormatError(fmt::format("{}: weight_map is empty", label));
  } else if (fs::exists(fs::path(dir) / "model.safetensors")) {
    file_names_.push_back("model.safetensors");
  } else {
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".safetensors") file_names_.push_back(e.path().filename().string());
    if (file_names_.size() != 1) {
      // PyTorch-only checkpoints: say how to get safetensors without running their pickles.
      std::string hint;
      for (const char* torch_file : {"pytorch_model.bin", "model.ckpt", "pytorch_model.bin.index.json"})
        if (fs::exists(fs::path(dir) / torch_file))
          hint = fmt::format("; it holds {} (PyTorch): convert it with `pivotmt convert {} {}`", torch_file,
                             (fs::path(dir) / torch_file).string(), (fs::path(dir) / "model.safetensors").string());
      throw Error(fmt::format(
          "{}: no model.safetensors or model.safetensors.index.json (found {} other .safetensors files){}", dir,
          file_names_.size(), hint));
    }
  }

  for (const auto& name : file_names_) {
    const fs::path p = fs::path(dir) / name;
    if (!fs::exists(p))
      throw Error(fmt::format("{}: shard '{}' listed in the index is missing", dir, name));
    files_.push_back(std::make_unique<SafetensorsFile>(p.string()));
    const auto& file = *files_.back();
    for (const auto& t : file.tensors()) {
      auto [it, inserted] = tensors_.emplace(t.name, Entry{&file, &t});
      if (!inserted)
        throw FormatError(fmt::format("{}: tensor '{}' is stored in both {} and {}", dir, t.name,
                                      fs::path(it->second.file->path()).filename().string(), name));
    }
  }
  for (const auto& [tensor, file] : weight_map) {
    auto it = tensors_.find(tensor);
    if (it == tensors_.end())
      throw FormatError(fmt::format("{}: the index maps tensor '{}' to {}, which does not contain it", dir, tensor,
                                    file));
    if (fs::path(it->second.file->path()).filename() != fs::path(file).filename())
      throw FormatError(fmt::format("{}: the index maps tensor '{}' to {} but it is stored in {}", dir, tensor, file,
                                    it->second.file->path()));
  }
}

std::vector<std::string> Checkpoint::tensor_names() const {
  std::vector<std::string> names;
  for (const auto& [name, e] : tensors_) names.push_back(name);
  return names;
}

const TensorInfo* Checkpoint::find(std::string_view name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second.info;
}

const TensorInfo& Checkpoint::at(std::string_view name) const {
  if (const auto* t = find(name)) return *t;
  throw Error(fmt::format("{}: checkpoint has no tensor '{}'", dir_, name));
}

const SafetensorsFile& Checkpoint::file_of(std::string_view name) const {
  at(name);
  return *tensors_.find(name)->second.file;
}

std::span<const std::byte> Checkpoint::raw(std::string_view name) const {
  const auto& t = at(name);
  return file_of(name).data(t);
}

void Checkpoint::load_into(std::string_view name, DType to, std::span<std::byte> out) const {
  const auto& t = at(name);
  if (!dtype_is_float(t.dtype) || t.dtype == DType::F8_E4M3 || t.dtype == DType::F8_E5M2)
    throw UnsupportedError(fmt::format("{}: tensor '{}' is stored as {}; expected F32, F16, BF16 or F64", dir_, name,
                                       dtype_name(t.dtype)));
  if (out.size() != t.numel() * dtype_size(to))
    throw Error(fmt::format("{}: tensor '{}': destination holds {} bytes, {} x {} needs {}", dir_, name, out.size(),
                            t.numel(), dtype_name(to), t.numel() * dtype_size(to)));
  convert_floats(t.dtype, raw(name).data(), to, out.data(), t.numel());
}

std::vector<float> Checkpoint::load_f32(std::string_view name) const {
  std::vector<float> v(at(name).numel());
  load_into(name, DType::F32, std::as_writable_bytes(std::span(v)));
  return v;
}

}  // namespace pivotmt
