// BERT encoders as sentence-transformers stores them (all-MiniLM-L12-v2, LaBSE, ...):
// weight names and shapes (and, with the retrieval issue, the forward pass).
#include <fmt/format.h>

#include "models/weights.h"

namespace pivotmt {

std::vector<WeightSpec> bert_weights(const ModelConfig& c, const std::string& prefix) {
  const int64_t H = c.hidden_size, F = c.intermediate_size;
  std::vector<WeightSpec> w;
  const std::string e = prefix + "embeddings.";
  w.push_back({e + "word_embeddings.weight", {c.vocab_size, H}, WeightRole::Embedding});
  w.push_back({e + "position_embeddings.weight", {c.max_position_embeddings, H}, WeightRole::Embedding});
  w.push_back({e + "token_type_embeddings.weight", {c.type_vocab_size, H}, WeightRole::Embedding});
  w.push_back({e + "LayerNorm.weight", {H}, WeightRole::Norm});
  w.push_back({e + "LayerNorm.bias", {H}, WeightRole::Bias});
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = fmt::format("{}encoder.layer.{}.", prefix, l);
    for (const char* proj : {"query", "key", "value"}) {
      w.push_back({p + "attention.self." + proj + ".weight", {H, H}, WeightRole::Linear});
      w.push_back({p + "attention.self." + proj + ".bias", {H}, WeightRole::Bias});
    }
    w.push_back({p + "attention.output.dense.weight", {H, H}, WeightRole::Linear});
    w.push_back({p + "attention.output.dense.bias", {H}, WeightRole::Bias});
    w.push_back({p + "attention.output.LayerNorm.weight", {H}, WeightRole::Norm});
    w.push_back({p + "attention.output.LayerNorm.bias", {H}, WeightRole::Bias});
    w.push_back({p + "intermediate.dense.weight", {F, H}, WeightRole::Linear});
    w.push_back({p + "intermediate.dense.bias", {F}, WeightRole::Bias});
    w.push_back({p + "output.dense.weight", {H, F}, WeightRole::Linear});
    w.push_back({p + "output.dense.bias", {H}, WeightRole::Bias});
    w.push_back({p + "output.LayerNorm.weight", {H}, WeightRole::Norm});
    w.push_back({p + "output.LayerNorm.bias", {H}, WeightRole::Bias});
  }
  // BertModel always has a pooler (transformers counts it; sentence-transformers never
  // uses it, and some checkpoints omit it, in which case transformers initialises it).
  w.push_back({prefix + "pooler.dense.weight", {H, H}, WeightRole::Linear, true});
  w.push_back({prefix + "pooler.dense.bias", {H}, WeightRole::Bias, true});
  return w;
}

}  // namespace pivotmt
