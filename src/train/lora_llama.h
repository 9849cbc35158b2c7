// A Llama-family model for LoRA training on the CPU: the base frozen (F32, F16 or NF4
// storage; compute F32), LoRA adapters on its projections trained. Forward keeps each
// layer's input only; backward recomputes a layer's activations just before it needs them
// (gradient checkpointing per layer), so memory grows with layers × tokens × hidden, not
// with every intermediate. One sequence at a time, no padding: a micro-batch of several
// sequences is the sum of their passes (what padding with an attention mask computes).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models/model_config.h"
#include "quant/nf4.h"
#include "train/lora.h"
#include "train/train_ops.h"

namespace pivotmt {

enum class BaseWeights { F32, F16, NF4 };
// Gradient checkpointing: Always recomputes each layer in backward (memory: one layer's
// activations); Never keeps all layers'; Auto keeps them while they fit a quarter of the
// available memory. The results are identical bit for bit.
enum class Checkpointing { Auto, Always, Never };
Checkpointing parse_checkpointing(const std::string& s);  // "auto" | "always" | "never"
const char* base_weights_name(BaseWeights b);
BaseWeights parse_base_weights(const std::string& s);  // "f32" | "f16" | "nf4"

// A frozen weight matrix W [out, in] in its storage format, read as F32.
class FrozenMatrix {
 public:
  size_t out = 0, in = 0;
  BaseWeights storage = BaseWeights::F32;
  std::vector<float> f32;
  std::vector<uint16_t> f16;
  nf4::Quantized q;  // NF4 with double quantisation (QLoRA's default)
  // W as F32: the stored values, or converted / dequantised into `scratch`.
  const float* as_f32(std::vector<float>& scratch) const;
  void rows_f32(size_t r0, size_t r1, float* out) const;  // rows [r0, r1) as F32
  size_t bytes() const;
};

// One training sequence: token ids and, per token, whether it is a prediction target
// (the loss covers target tokens; position t predicts token t + 1).
struct TrainSequence {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> target;  // [tokens.size()]
  size_t target_count() const;  // targets after the first token (what the loss averages over)
};

class LoraLlama {
 public:
  LoraLlama(const std::string& model_dir, BaseWeights base, train::Kernels kernels = train::Kernels::Fast);
  ~LoraLlama();
  LoraLlama(LoraLlama&&) noexcept;
  const ModelConfig& config() const { return cfg_; }
  size_t base_bytes() const;

  // The adapter this model trains (a copy is taken; read it back with adapter()).
  void set_adapter(const LoraAdapter& a);
  const LoraAdapter& adapter() const { return adapter_; }
  LoraAdapter& adapter() { return adapter_; }
  // Gradients, the same layout as the adapter; zeroed by zero_grad().
  LoraAdapter& grads() { return grads_; }
  void zero_grad();

  // Forward and backward of one sequence: adds d(scale · loss)/dθ into grads() and
  // returns the summed cross-entropy over its targets. `dropout_key` picks the dropout
  // masks (a function of the key alone, so a rerun or a resumed run draws the same).
  double forward_backward(const TrainSequence& s, float scale, uint64_t dropout_key);
  // The summed loss only (evaluation: no dropout, no gradients).
  double loss(const TrainSequence& s);

  void set_checkpointing(Checkpointing c) { checkpointing_ = c; }

  // Logits [T, V] of a token sequence with the adapter applied (tests).
  std::vector<float> logits(const std::vector<int32_t>& tokens);

 private:
  struct Layer;
  struct Activations;
  struct Grads;
  struct Lora {
    LoraPair* w = nullptr;
    LoraPair* g = nullptr;
  };
  double run(const TrainSequence* s, const std::vector<int32_t>& tokens, float scale, bool backward, uint64_t key,
             std::vector<float>* logits_out);
  void layer_forward(size_t l, const float* x, size_t T, Activations& a, uint64_t key, bool dropout, float* x_out);
  void layer_backward(size_t l, const float* x, size_t T, Activations& a, Grads& g, uint64_t key, bool dropout, float* dx);
  void linear_forward(const FrozenMatrix& W, const Lora& lora, size_t layer, size_t module, const float* x, size_t T,
                      float* y, uint64_t key, bool dropout);
  void linear_backward(const FrozenMatrix& W, const Lora& lora, size_t layer, size_t module, const float* x, size_t T,
                       const float* dy, float* dx, uint64_t key, bool dropout);
  void bind_lora();

  ModelConfig cfg_;
  train::Kernels kernels_;
  std::vector<Layer> layers_;
  FrozenMatrix embed_, lm_head_;  // lm_head_ empty when tied
  std::vector<float> final_norm_;
  std::vector<float> inv_freq_;
  LoraAdapter adapter_, grads_;
  std::vector<std::vector<Lora>> lora_;  // [layer][module index of llama_lora_modules]
  float scaling_ = 1, dropout_ = 0;
  std::vector<float> scratch_w_;  // a dequantised weight matrix
  std::vector<Activations> acts_;      // one layer's (checkpointing) or every layer's activations
  std::unique_ptr<Grads> grads_buf_;   // one layer's gradient buffers
  train::RopeTables rope_;             // cos / sin of the sequence in progress
  Checkpointing checkpointing_ = Checkpointing::Auto;
  size_t activation_budget_bytes_ = 0;
  std::vector<float> lora_x_, lora_h_, lora_dh_, lora_dx_;  // LoRA branch scratch
  std::vector<float> xs_;  // each layer's input [L + 1][T, H], kept for the recomputation
};

}  // namespace pivotmt
