// A model's weights: a Hugging Face checkpoint directory (one model.safetensors, or shards
// listed in model.safetensors.index.json), or one GGUF file. Tensors are looked up by
// their Hugging Face names across shards and converted on load to the compute dtype.
//
// A GGUF file's tensors are presented under the names and shapes transformers gives them
// (blk.3.attn_q.weight is model.layers.3.self_attn.q_proj.weight), quantised ones as F32
// (what they dequantise to), and the rows of Q and K put back in the order llama.cpp's
// converter took them from (it interleaves each head's two rotary halves).
#pragma once
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "io/safetensors.h"

namespace pivotmt {

class Checkpoint {
 public:
  // `dir` holds model.safetensors.index.json, model.safetensors, or exactly one other
  // *.safetensors file; or `dir` is a GGUF file. Throws Error naming the directory / file
  // otherwise.
  explicit Checkpoint(const std::string& dir);

  const std::string& dir() const { return dir_; }
  const std::vector<std::string>& files() const { return file_names_; }
  bool sharded() const { return sharded_; }

  std::vector<std::string> tensor_names() const;  // sorted
  const TensorInfo* find(std::string_view name) const;
  const TensorInfo& at(std::string_view name) const;  // throws naming the tensor
  const SafetensorsFile& file_of(std::string_view name) const;
  // The stored bytes, laid out as `at(name)` says: only for tensors stored_as_is().
  std::span<const std::byte> raw(std::string_view name) const;
  // True when raw() holds the tensor as at(name) describes it: every safetensors tensor,
  // and a GGUF tensor stored as F32, F16 or BF16 whose rows need no reordering.
  bool stored_as_is(std::string_view name) const;

  // A GGUF tensor as the file stores it (nullopt for safetensors checkpoints): its ggml
  // type, its bytes ([rows][ggml_row_bytes(type, cols)]) and, for Q and K, the heads whose
  // rows are interleaved: Hugging Face row h·d + s·d/2 + i is stored as row h·d + 2i + s.
  struct GgmlView {
    GgmlType type = GgmlType::F32;
    std::span<const std::byte> bytes;
    size_t rows = 0, cols = 0;
    size_t interleaved_heads = 0;  // 0: rows in order
    size_t stored_row(size_t row) const;
  };
  std::optional<GgmlView> ggml_view(std::string_view name) const;
  const GgufFile* gguf() const { return gguf_.get(); }

  // Converts a float tensor to `to` (F32, F16 or BF16) into `out` (exactly numel x size).
  void load_into(std::string_view name, DType to, std::span<std::byte> out) const;
  std::vector<float> load_f32(std::string_view name) const;

 private:
  struct Entry {
    const SafetensorsFile* file = nullptr;
    const TensorInfo* info = nullptr;
    const GgufTensorInfo* gguf = nullptr;  // GGUF checkpoints
    size_t interleaved_heads = 0;
  };
  void open_gguf(const std::string& path);
  std::string dir_;
  bool sharded_ = false;
  std::vector<std::string> file_names_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::unique_ptr<GgufFile> gguf_;
  std::vector<std::unique_ptr<TensorInfo>> gguf_infos_;  // the Hugging Face view of its tensors
  std::map<std::string, Entry, std::less<>> tensors_;
};

}  // namespace pivotmt
