// The Llama family's forward pass (Llama-2 / TowerInstruct, Mistral's sliding window,
// Llama-3 / Hermes GQA and rope scaling), written once over the op interface
// (backends/ops.h), so the same layer sequence runs on the CPU or a GPU. Batched over
// sequences of different lengths with no padding: all new tokens of all sequences form one
// [T, hidden] activation; attention runs per sequence against its own KV cache.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backends/ops.h"
#include "models/model_config.h"
#include "tokenizer/bpe.h"

namespace pivotmt {

class Checkpoint;

struct LoadOptions {
  DType weights = DType::F32;  // CPU: F32, F16, I8 (weight-only INT8) or NF4, compute F32; GPU: F16
  OpsImpl ops = OpsImpl::Fast;
  bool int8_activations = false;  // I8 or GGML weights: int8 · int8 products (see OpsOptions)
  Device device;               // cpu, cuda:N
  size_t kv_capacity_bytes = 0;  // see OpsOptions
  size_t max_prefill_tokens = 4096;  // rows of activations a GPU keeps room for
  bool cuda_graphs = true;  // a GPU's decode steps as CUDA graphs (see OpsOptions)
  // Set: no checkpoint is read (config.json alone), the weights are made on the device from
  // this seed (random_fill.h; U(-0.035, 0.035) ≈ std 0.02, norms 1 ± 0.035). Benchmarks of
  // real shapes without writing or reading 14 GB.
  std::optional<uint64_t> random_weights_seed;
  // A PEFT LoRA adapter directory applied unmerged (y = W x + scaling · B A x), e.g. on an
  // NF4 base exactly as QLoRA trained it. Empty: none.
  std::string adapter;
};

class LlamaModel {
 public:
  LlamaModel(const std::string& dir, LoadOptions options = {});
  ~LlamaModel();
  const ModelConfig& config() const { return cfg_; }
  const Device& device() const { return options_.device; }
  Ops& ops() { return *ops_; }
  std::string describe_device() const { return ops_->describe(); }
  double load_seconds() const { return load_seconds_; }

  KvCache new_cache() const { return ops_->new_cache(); }
  // A cache holding the first n positions of `from` (n <= from.length): the keys and
  // values of a shared prompt prefix, copied (CPU) or referenced (GPU) instead of recomputed.
  KvCache prefix_of(const KvCache& from, size_t n) const { return ops_->prefix_of(from, n); }
  void truncate(KvCache& cache, size_t n) const { ops_->truncate(cache, n); }  // keep the first n positions
  // Room for `positions` in all, so appending never reallocates (no doubling overhead).
  void reserve(KvCache& cache, size_t positions) const { ops_->reserve(cache, positions); }
  // Makes room for `positions`; false when the device's KV memory is full right now.
  bool grow(KvCache& cache, size_t positions) const { return ops_->grow(cache, positions); }
  size_t kv_bytes_per_position() const { return ops_->kv_bytes_per_position(); }  // keys + values, every layer
  size_t default_kv_budget() const { return ops_->default_kv_budget(weight_bytes()); }
  size_t weight_bytes() const;
  // Weight bytes one decode step reads: all but the embedding table when the output layer
  // has its own matrix (a step reads one embedding row).
  size_t streamed_bytes_per_token() const;

  struct Input {
    KvCache* cache;
    std::vector<TokenId> tokens;  // appended after what the cache holds
    bool all_logits = false;      // logits for every new token, else only the last
  };
  // Returns logits rows [rows, vocab]: for each input in order, its new tokens' rows
  // (all_logits) or its last token's row.
  std::vector<float> forward(std::vector<Input>& batch);
  // The same pass, returning each logits row's first maximum (greedy choice made on the
  // device: only the ids come back).
  std::vector<TokenId> forward_greedy(std::vector<Input>& batch);
  // The same pass, each logits row turned into a token as rows[r] says (Ops::sample_rows:
  // on a GPU only the ids come back).
  std::vector<TokenId> forward_sample(std::vector<Input>& batch, std::span<const RowSampling> rows);

 private:
  struct Layer {
    Tensor attn_norm, mlp_norm;                          // [1, hidden]
    std::unique_ptr<LinearWeights> qkv, o, gate_up, down;  // q|k|v and gate|up stacked
  };
  // Activations, kept between passes (no allocation per pass once large enough).
  struct Workspace {
    size_t rows = 0, logit_rows = 0;
    Tensor x, xn, qkv, attn, gate_up, mlp, down;  // [rows, ·]
    Tensor h, hn, logits;                         // [logit_rows, ·]
  };
  // The pass itself: logits of the wanted rows stay on the device.
  Tensor run(std::vector<Input>& batch);
  void ensure_workspace(size_t rows, size_t logit_rows);
  void load_weights(const std::string& dir);
  void attach_adapter(const std::string& adapter_dir);
  void make_random_weights(uint64_t seed);

  ModelConfig cfg_;
  LoadOptions options_;
  std::unique_ptr<Ops> ops_;
  std::unique_ptr<Checkpoint> checkpoint_;  // kept mapped: CPU matrices may borrow its pages
  std::unique_ptr<LinearWeights> embed_, lm_head_;  // [vocab, hidden]; lm_head_ empty when tied
  Tensor final_norm_;
  std::vector<Layer> layers_;
  Workspace ws_;
  double load_seconds_ = 0;
};

// rope_theta and llama3 rope_scaling -> per-pair inverse frequencies, in float32 as
// transformers computes them.
std::vector<float> rope_inv_freq(const ModelConfig& c);

}  // namespace pivotmt
