// The Llama family (Llama-2 / TowerInstruct, Mistral, Llama-3 / Hermes): hyperparameters
// come from ModelConfig; this file holds its weight names and shapes (and, with the engine,
// its forward pass).
#include <fmt/format.h>

#include "models/weights.h"

namespace pivotmt {

std::vector<WeightSpec> llama_weights(const ModelConfig& c) {
  const int64_t H = c.hidden_size, V = c.vocab_size, F = c.intermediate_size;
  const int64_t q_out = c.num_heads * c.head_dim, kv_out = c.num_kv_heads * c.head_dim;
  std::vector<WeightSpec> w;
  w.push_back({"model.embed_tokens.weight", {V, H}, WeightRole::Embedding});
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    w.push_back({p + "input_layernorm.weight", {H}, WeightRole::Norm});
    w.push_back({p + "self_attn.q_proj.weight", {q_out, H}, WeightRole::Linear});
    w.push_back({p + "self_attn.k_proj.weight", {kv_out, H}, WeightRole::Linear});
    w.push_back({p + "self_attn.v_proj.weight", {kv_out, H}, WeightRole::Linear});
    w.push_back({p + "self_attn.o_proj.weight", {H, q_out}, WeightRole::Linear});
    w.push_back({p + "post_attention_layernorm.weight", {H}, WeightRole::Norm});
    w.push_back({p + "mlp.gate_proj.weight", {F, H}, WeightRole::Linear});
    w.push_back({p + "mlp.up_proj.weight", {F, H}, WeightRole::Linear});
    w.push_back({p + "mlp.down_proj.weight", {H, F}, WeightRole::Linear});
  }
  w.push_back({"model.norm.weight", {H}, WeightRole::Norm});
  // Tied: lm_head shares embed_tokens (transformers counts it once and may not store it).
  if (!c.tie_word_embeddings) w.push_back({"lm_head.weight", {V, H}, WeightRole::Output});
  return w;
}

}  // namespace pivotmt
