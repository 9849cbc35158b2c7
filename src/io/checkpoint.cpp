#include "io/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "quant/ggml_quants.h"
#include "io/json_file.h"

namespace pivotmt {
namespace fs = std::filesystem;

namespace {

// llama.cpp's tensor names for the Llama family (its convert_hf_to_gguf.py and
// gguf-py's tensor_mapping.py) and the Hugging Face names they came from.
struct GgufName {
  std::string hf;
  bool q = false, k = false;  // rows interleaved per head by the converter
};
std::optional<GgufName> hf_name(const std::string& gguf) {
  static const std::map<std::string, std::string, std::less<>> global = {
      {"token_embd.weight", "model.embed_tokens.weight"},
      {"output_norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"},
  };
  static const std::map<std::string, std::string, std::less<>> per_layer = {
      {"attn_norm.weight", "input_layernorm.weight"},   {"attn_q.weight", "self_attn.q_proj.weight"},
      {"attn_k.weight", "self_attn.k_proj.weight"},     {"attn_v.weight", "self_attn.v_proj.weight"},
      {"attn_output.weight", "self_attn.o_proj.weight"}, {"ffn_norm.weight", "post_attention_layernorm.weight"},
      {"ffn_gate.weight", "mlp.gate_proj.weight"},      {"ffn_up.weight", "mlp.up_proj.weight"},
      {"ffn_down.weight", "mlp.down_proj.weight"},
  };
  if (auto it = global.find(gguf); it != global.end()) return GgufName{it->second};
  if (gguf.rfind("blk.", 0) != 0) return std::nullopt;
  const size_t dot = gguf.find('.', 4);
  if (dot == std::string::npos || dot == 4 || dot - 4 > 6) return std::nullopt;
  const std::string layer = gguf.substr(4, dot - 4);
  if (layer.find_first_not_of("0123456789") != std::string::npos) return std::nullopt;
  const auto it = per_layer.find(std::string_view(gguf).substr(dot + 1));
  if (it == per_layer.end()) return std::nullopt;
  return GgufName{"model.layers." + std::to_string(std::stoul(layer)) + "." + it->second, it->first == "attn_q.weight",
                  it->first == "attn_k.weight"};
}

DType dtype_of(GgmlType t) {
  switch (t) {
    case GgmlType::F16: return DType::F16;
    case GgmlType::BF16: return DType::BF16;
    default: return DType::F32;  // F32, and what quantised types dequantise to
  }
}

}  // namespace

size_t Checkpoint::GgmlView::stored_row(size_t row) const {
  if (!interleaved_heads) return row;
  const size_t d = rows / interleaved_heads, h = row / d, r = row % d, half = d / 2;
  return h * d + 2 * (r % half) + r / half;
}

void Checkpoint::open_gguf(const std::string& path) {
  gguf_ = std::make_unique<GgufFile>(path);
  file_names_.push_back(fs::path(path).filename().string());
  const GgufFile& g = *gguf_;
  const std::string arch = g.get_string("general.architecture").value_or("");
  // The converter's permutation is of the Llama family's Q and K (llama, and Mistral,
  // which llama.cpp files as llama); other architectures keep their GGUF names.
  const bool llama = arch == "llama";
  const uint64_t heads = llama ? g.get_uint("llama.attention.head_count").value_or(0) : 0;
  const uint64_t kv_heads = llama ? g.get_uint("llama.attention.head_count_kv").value_or(heads) : 0;
  for (const auto& t : g.tensors()) {
    const auto mapped = llama ? hf_name(t.name) : std::nullopt;
    auto info = std::make_unique<TensorInfo>();
    info->name = mapped ? mapped->hf : t.name;
    info->dtype = dtype_of(t.type);
    info->shape = t.torch_shape();
    info->begin = g.header().data_start + t.offset;
    info->end = info->begin + t.nbytes;
    Entry e;
    e.gguf = &t;
    e.info = info.get();
    if (mapped && (mapped->q || mapped->k)) {
      const uint64_t n = mapped->q ? heads : kv_heads;
      const uint64_t rows = t.dims.size() == 2 ? t.dims[1] : 0;
      if (n == 0 || rows % n || (rows / n) % 2)
        throw FormatError(fmt::format("{}: tensor '{}' has {} rows, not {} heads of an even size (llama.attention."
                                      "head_count{})", path, t.name, rows, n, mapped->q ? "" : "_kv"));
      e.interleaved_heads = n;
    }
    if (!tensors_.emplace(info->name, e).second)
      throw FormatError(fmt::format("{}: two tensors are named '{}' once mapped to Hugging Face names", path, info->name));
    gguf_infos_.push_back(std::move(info));
  }
}

Checkpoint::Checkpoint(const std::string& dir) : dir_(dir) {
  if (is_gguf_path(dir)) {
    naming_file(dir, [&] { open_gguf(dir); });
    return;
  }
  if (!fs::is_directory(dir)) throw Error(fmt::format("{}: not a directory or GGUF file", dir));
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
  const auto* file = tensors_.find(name)->second.file;
  if (!file) throw Error(fmt::format("{}: tensor '{}' is in a GGUF file, not a safetensors file", dir_, name));
  return *file;
}

bool Checkpoint::stored_as_is(std::string_view name) const {
  at(name);
  const Entry& e = tensors_.find(name)->second;
  if (!e.gguf) return true;
  const GgmlType t = e.gguf->type;
  return (t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16) && !e.interleaved_heads;
}

std::span<const std::byte> Checkpoint::raw(std::string_view name) const {
  const auto& t = at(name);
  const Entry& e = tensors_.find(name)->second;
  if (e.gguf) {
    if (!stored_as_is(name))
      throw Error(fmt::format("{}: tensor '{}' is stored as {}{}; read it with load_into", dir_, name,
                              ggml_type_name(e.gguf->type), e.interleaved_heads ? " with its heads' rows interleaved" : ""));
    return gguf_->data(*e.gguf);
  }
  return file_of(name).data(t);
}

std::optional<Checkpoint::GgmlView> Checkpoint::ggml_view(std::string_view name) const {
  at(name);
  const Entry& e = tensors_.find(name)->second;
  if (!e.gguf) return std::nullopt;
  GgmlView v;
  v.type = e.gguf->type;
  v.bytes = gguf_->data(*e.gguf);
  v.cols = e.gguf->dims[0];
  v.rows = e.gguf->numel() / std::max<uint64_t>(v.cols, 1);
  v.interleaved_heads = e.interleaved_heads;
  return v;
}

void Checkpoint::load_into(std::string_view name, DType to, std::span<std::byte> out) const {
  const auto& t = at(name);
  if (const auto view = ggml_view(name); view && !stored_as_is(name)) {
    if (out.size() != t.numel() * dtype_size(to))
      throw Error(fmt::format("{}: tensor '{}': destination holds {} bytes, {} x {} needs {}", dir_, name, out.size(),
                              t.numel(), dtype_name(to), t.numel() * dtype_size(to)));
    // Row by row: dequantised (exactly as gguf-py), put back in Hugging Face order, converted.
    const uint64_t row_bytes = ggml_row_bytes(view->type, view->cols);
    std::vector<float> row(view->cols);
    for (size_t r = 0; r < view->rows; ++r) {
      const size_t from = view->stored_row(r);
      naming_file(dir_, [&] {
        ggml_dequantize(view->type, view->bytes.subspan(from * row_bytes, row_bytes), row.data(), view->cols);
      });
      convert_floats(DType::F32, row.data(), to, out.data() + r * view->cols * dtype_size(to), view->cols);
    }
    return;
  }
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
