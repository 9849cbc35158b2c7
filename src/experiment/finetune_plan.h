// The plan of a fine-tuning run (`pivotmt finetune --dry-run`): before hours of training,
// what memory LoraLlama will hold on the device and how long the steps will take, from the
// model's config.json, the LoRA settings and the data's sequence lengths alone (no weights).
//
// Memory is LoraLlama's own accounting, buffer by buffer (lora_llama.cpp and the training
// device's scratch): the frozen base in its storage format, the output layer (and on the
// CPU or when tied the embedding table), the adapter with its gradients and AdamW's two moments, each layer's input kept for
// the recomputation, one layer's activations (all layers' without checkpointing), one
// layer's gradient buffers, the logits of a 64 MiB block of rows, the LoRA branch's and the
// base GEMM's scratch. Sequences run one at a time (a micro-batch is the sum of its
// sequences), so memory follows the longest sequence, not the batch size.
//
// Time: FLOPs per token (the base's products forward, backward to the inputs and — with
// checkpointing — recomputed; the output layer forward and backward; the LoRA products;
// causal attention at each sequence's length, 2.5x or 3.5x forward for its backward) at the
// device's GEMM rates: on a GPU in --base-compute f16 the base and the output layer at the
// F16 tensor-core rate and attention at the TF32 rate, the LoRA products in F32; otherwise
// everything at the F32 rate; attention's time the larger of its GEMMs' and its
// probabilities' passes through memory at the device's bandwidth.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "experiment/run_plan.h"
#include "models/model_config.h"
#include "train/frozen_matrix.h"
#include "train/lora.h"
#include "train/lora_llama.h"
#include "train/train_device.h"

namespace pivotmt {

struct FinetuneSetup {
  BaseWeights base = BaseWeights::NF4;
  LoraConfig lora;
  Checkpointing checkpointing = Checkpointing::Auto;
  train::BaseCompute compute = train::BaseCompute::F16;  // a GPU's base products
  std::vector<size_t> sequence_tokens;  // every training sequence's length
  int64_t steps = 0;
  size_t window = 1;  // sequences per optimiser step (batch × accumulation)
  size_t mlp_block_rows = kMlpBlockRows;  // LoraLlama's (tests set fewer)
  bool offload_inputs = true;             // LoraLlama::set_offload_inputs (a GPU with checkpointing)
};

// Bytes by purpose; total() is what the device holds at the peak (after the first backward).
struct FinetuneMemory {
  uint64_t base = 0;          // the frozen projections in their storage format, and the norms
  uint64_t embeddings = 0;    // the CPU: table and output layer, F32 (one when tied); a GPU: the output layer
  uint64_t adapter = 0;       // LoRA A/B, gradients, AdamW's two moments (F32)
  uint64_t saved_inputs = 0;  // each layer's input [L + 1, T, H] for the recomputation (offloading: two)
  uint64_t offloaded = 0;     // host memory (pinned, not in total()): the inputs offloaded, [L - 1, T, H]
  uint64_t activations = 0;   // one layer's (checkpointing) or every layer's
  uint64_t gradients = 0;     // one layer's gradient buffers
  uint64_t head = 0;          // final norm, backward's buffers, a block of logits rows
  uint64_t scratch = 0;       // the LoRA branch's, the base GEMM's (a dequantised matrix, F16 inputs), attention's
  uint64_t workspace = 0;     // cuBLAS (a GPU)
  uint64_t total() const {
    return base + embeddings + adapter + saved_inputs + activations + gradients + head + scratch + workspace;
  }
};

struct FinetunePlan {
  DeviceCeiling device;
  bool gpu = false;
  bool keep_all_layers = false;  // checkpointing off (Never, or Auto with room)
  size_t longest = 0;            // tokens of the longest sequence
  uint64_t adapter_parameters = 0;
  FinetuneMemory memory;
  bool fits = false;
  double tokens = 0;                       // over all steps
  // Over all steps: the base's products, the output layer's, attention's, the LoRA branch's.
  double base_flops = 0, head_flops = 0, attention_flops = 0, lora_flops = 0;
  double attention_bytes = 0;  // the tensor-core attention's probabilities through memory (F16 mode)
  double seconds = 0;
  nlohmann::json to_json() const;
};

// Memory for sequences of up to T tokens (`device_memory`: what Auto checkpointing compares
// with, as LoraLlama does: all layers' activations kept while they take at most a quarter).
FinetuneMemory finetune_memory(const ModelConfig& model, const FinetuneSetup& setup, size_t T, bool gpu,
                               bool keep_all_layers);
FinetunePlan make_finetune_plan(const ModelConfig& model, const FinetuneSetup& setup, const DeviceCeiling& device);
std::string finetune_plan_markdown(const FinetunePlan& plan);

}  // namespace pivotmt
