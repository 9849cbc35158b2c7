// A Llama-family model for LoRA training on a device (train/train_device.h: the CPU, or a
// GPU): the base frozen (F32, F16 or NF4 storage, dequantised one matrix at a time just
// before its GEMM; compute F32), LoRA adapters on its projections trained. Forward keeps each
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
#include "train/frozen_matrix.h"
#include "train/lora.h"
#include "train/optimizer.h"
#include "train/train_device.h"
#include "train/train_ops.h"

namespace pivotmt {

// Gradient checkpointing: Always recomputes each layer in backward (memory: one layer's
// activations); Never keeps all layers'; Auto keeps them while they fit a quarter of the
// available memory. The results are identical bit for bit.
enum class Checkpointing { Auto, Always, Never };
Checkpointing parse_checkpointing(const std::string& s);  // "auto" | "always" | "never"

// The MLP runs over a sequence's rows a block at a time: its [rows, intermediate] gate, up,
// product and their gradients exist for one block only (1024 rows: 135 MB a buffer set for
// a 7B model instead of 541 MB at 4096 tokens), and a checkpointed layer's recomputation
// stops before the MLP, whose gate and up each block recomputes in backward.
inline constexpr size_t kMlpBlockRows = 1024;

// One training sequence: token ids and, per token, whether it is a prediction target
// (the loss covers target tokens; position t predicts token t + 1).
struct TrainSequence {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> target;  // [tokens.size()]
  size_t target_count() const;  // targets after the first token (what the loss averages over)
};

class LoraLlama {
 public:
  // `compute`: how a GPU multiplies by the base (train_device.h); the CPU computes in F32.
  LoraLlama(const std::string& model_dir, BaseWeights base, train::Kernels kernels = train::Kernels::Fast,
            const Device& device = Device{}, train::BaseCompute compute = train::BaseCompute::F16);
  ~LoraLlama();
  LoraLlama(LoraLlama&&) noexcept;
  const ModelConfig& config() const { return cfg_; }
  size_t base_bytes() const;  // the frozen base in device memory
  Device device() const { return dev_->device(); }
  std::string describe_device() const { return dev_->describe(); }

  // The adapter this model trains (a copy is taken; read it back with adapter()). It lives
  // on the model's device: on a GPU adapter() copies it to the host when the optimiser has
  // changed it there, and a caller who edits the host copy calls push_adapter() after.
  void set_adapter(const LoraAdapter& a);
  LoraAdapter& adapter();
  void push_adapter();
  // Gradients, the same layout as the adapter; zeroed by zero_grad(). On a GPU they
  // accumulate on the device: grads() copies them to the host first.
  LoraAdapter& grads();
  void zero_grad();

  // The optimiser, run where the adapter lives (a GPU: no parameter or gradient crosses to
  // the host per step). grad_norm: the global L2 norm of the gradients (optimizer.h's
  // global_norm); optimizer_step: clip to max_norm given that norm, then one AdamW step at
  // lr — optimizer.h's clip_gradients and adamw_step, the same floats on every device.
  double grad_norm();
  void optimizer_step(double norm, double max_norm, double lr, const train::AdamWConfig& c);
  // AdamW's moments and step (a host copy, for checkpoints; set_adapter resets them).
  const train::AdamWState& optimizer_state();
  void set_optimizer_state(const train::AdamWState& s);

  // Forward and backward of one sequence: adds d(scale · loss)/dθ into grads() and
  // returns the summed cross-entropy over its targets. `dropout_key` picks the dropout
  // masks (a function of the key alone, so a rerun or a resumed run draws the same).
  double forward_backward(const TrainSequence& s, float scale, uint64_t dropout_key);
  // The summed loss only (evaluation: no dropout, no gradients).
  double loss(const TrainSequence& s);

  void set_checkpointing(Checkpointing c) { checkpointing_ = c; }
  // Rows of the MLP's blocks (a multiple of 4: dropout masks are drawn four elements at a
  // time); tests use a few to run several blocks on short sequences.
  void set_mlp_block_rows(size_t rows);
  // A GPU with checkpointing keeps the layers' inputs in pinned host memory, copied there
  // and back beside the compute (default; where the host cannot pin that much, a warning
  // and device memory); false keeps them all in device memory. The results are the same
  // bits either way.
  void set_offload_inputs(bool on) { offload_inputs_ = on; }
  size_t offloaded_host_bytes() const { return host_inputs_n_ * sizeof(float); }  // the pinned host memory it holds

  // Logits [T, V] of a token sequence with the adapter applied (tests).
  std::vector<float> logits(const std::vector<int32_t>& tokens);

 private:
  struct Layer;
  struct Activations;
  struct Grads;
  // A module's adapter on the device: A [r, in], B [out, r] and their gradients (on the
  // CPU, views of adapter_'s and grads_' own vectors; on a GPU, of the flat buffers).
  struct Lora {
    LoraPair* w = nullptr;
    LoraPair* g = nullptr;
    Tensor A, B, gA, gB;
  };
  double run(const TrainSequence* s, const std::vector<int32_t>& tokens, float scale, bool backward, uint64_t key,
             std::vector<float>* logits_out);
  // Forward of layer l: x_out = layer(x); with mlp false (a checkpointed layer's
  // recomputation) up to the MLP's input only.
  void layer_forward(size_t l, const float* x, size_t T, Activations& a, uint64_t key, bool dropout, float* x_out,
                     bool mlp = true);
  void layer_backward(size_t l, const float* x, size_t T, Activations& a, Grads& g, uint64_t key, bool dropout, float* dx);
  // y [T, out] = module(x [T, in]) and its backward, for rows row0.. of the sequence (the
  // dropout masks' place); `module` indexes llama_lora_modules.
  void linear_forward(size_t layer, size_t module, const float* x, size_t T, float* y, uint64_t key, bool dropout,
                      size_t row0 = 0);
  void linear_backward(size_t layer, size_t module, const float* x, size_t T, const float* dy, float* dx, uint64_t key,
                       bool dropout, size_t row0 = 0);
  void bind_lora();
  void pull_adapter();
  template <class Fn>
  void for_each_lora(Fn&& fn);
  template <class Fn>
  void for_each_moment(Fn&& fn);
  bool on_host() const { return dev_->device().kind == DeviceKind::CPU; }
  Tensor& grow(Tensor& t, size_t n);  // t with room for n floats (reallocated when smaller)

  ModelConfig cfg_;
  std::unique_ptr<train::TrainDevice> dev_;
  std::vector<Layer> layers_;
  // Host copies: on the CPU both (lm_head_ empty when tied); on a GPU the untied embedding
  // table only (the device holds the output layer).
  FrozenMatrix embed_, lm_head_;
  std::unique_ptr<train::DeviceFrozen> embed_dev_, lm_head_dev_;
  Tensor final_norm_;
  std::vector<float> inv_freq_;
  LoraAdapter adapter_, grads_;
  bool grads_on_host_ = true;    // grads_ holds the device's gradients
  bool adapter_on_host_ = true;  // adapter_ holds the device's parameters
  train::AdamWState opt_;        // the moments a host copy of the device's when moments_on_host_
  bool moments_on_host_ = true;
  // A GPU's adapter: parameters, gradients and moments, flat [n] each (bind_lora's layout).
  Tensor params_, grads_flat_, moment1_, moment2_;
  size_t flat_n_ = 0;
  std::vector<std::vector<Lora>> lora_;  // [layer][module index of llama_lora_modules]
  float scaling_ = 1, dropout_ = 0;
  // Where the base's matrices are converted for their products: [0] the attention's, the
  // gate's (and a tied output layer's), [1] up's, [2] down's — the MLP's blocks alternate
  // between its three, each converted once a pass.
  train::WeightScratch weights_[3];
  size_t mlp_block_rows_ = kMlpBlockRows;
  std::vector<Activations> acts_;      // one layer's (checkpointing) or every layer's activations
  std::unique_ptr<Grads> grads_buf_;   // one layer's gradient buffers
  Checkpointing checkpointing_ = Checkpointing::Auto;
  size_t activation_budget_bytes_ = 0;
  Tensor lora_x_, lora_h_, lora_dh_, lora_dx_;  // LoRA branch scratch
  Tensor xs_;  // each layer's input [L + 1][T, H], kept for the recomputation (offloading: two slots)
  bool offload_inputs_ = true;
  std::shared_ptr<float> host_inputs_;  // offloaded inputs x_0 .. x_{L-2} [L - 1][T, H] (pinned)
  size_t host_inputs_n_ = 0;
  Tensor hn_, rinv_, dhn_, dx_, logits_;  // the head's and backward's buffers
};

}  // namespace pivotmt
