#include "models/weights.h"

#include <fmt/format.h>

#include "core/error.h"
#include "io/checkpoint.h"
#include "quant/ggml_quants.h"

namespace pivotmt {

uint64_t WeightSpec::numel() const {
  uint64_t n = 1;
  for (auto d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

std::vector<WeightSpec> expected_weights(const ModelConfig& c, const Checkpoint& ckpt) {
  if (c.arch != Architecture::Bert) return llama_weights(c);
  return bert_weights(c, bert_prefix(ckpt));
}

std::string bert_prefix(const Checkpoint& ckpt) {
  for (const char* p : {"bert.", "roberta.", "encoder.model."})
    if (ckpt.find(std::string(p) + "embeddings.word_embeddings.weight")) return p;
  return "";
}

void verify_weights(const ModelConfig& c, const Checkpoint& ckpt) {
  for (const auto& w : expected_weights(c, ckpt)) {
    const TensorInfo* t = ckpt.find(w.name);
    if (!t) {
      if (w.optional) continue;
      throw FormatError(fmt::format("{}: missing tensor '{}' (expected shape {})", ckpt.dir(), w.name,
                                    shape_to_string(w.shape)));
    }
    if (t->shape != w.shape)
      throw FormatError(fmt::format("{}: tensor '{}' has shape {}, the config implies {}", ckpt.dir(), w.name,
                                    shape_to_string(t->shape), shape_to_string(w.shape)));
    if (!dtype_is_float(t->dtype))
      throw FormatError(fmt::format("{}: tensor '{}' is stored as {}, expected a float type", ckpt.dir(), w.name,
                                    dtype_name(t->dtype)));
  }
}

uint64_t parameter_count(const std::vector<WeightSpec>& weights) {
  uint64_t n = 0;
  for (const auto& w : weights) n += w.numel();
  return n;
}

uint64_t gguf_in_place_weight_bytes(const std::vector<WeightSpec>& weights, const Checkpoint& ckpt) {
  if (!ckpt.gguf()) return 0;
  uint64_t bytes = 0;
  for (const auto& w : weights) {
    if (!ckpt.find(w.name)) continue;  // a tied output layer: the embedding's
    const auto view = ckpt.ggml_view(w.name);
    if (w.role == WeightRole::Norm || w.role == WeightRole::Bias) bytes += 4 * w.numel();
    else if (view && w.shape.size() == 2 && view->rows == uint64_t(w.shape[0]) && view->cols == uint64_t(w.shape[1]) &&
             ggml_multiplied_in_place(view->type, view->cols))
      bytes += view->bytes.size();
    else bytes += 2 * w.numel();
  }
  return bytes;
}

}  // namespace pivotmt
