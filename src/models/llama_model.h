// The Llama family's forward pass (Llama-2 / TowerInstruct, Mistral, Llama-3 / Hermes) on
// the CPU: batched over sequences of different lengths with no padding (all new tokens of
// all sequences form one [T, hidden] activation; attention runs per sequence against its
// own KV cache).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "backends/cpu/ops.h"
#include "models/model_config.h"
#include "tokenizer/bpe.h"

namespace pivotmt {

class Checkpoint;

enum class OpsImpl { Reference, Fast };

struct LoadOptions {
  DType weights = DType::F32;  // F32, F16 or I8 (weight-only INT8) storage; compute is always F32
  OpsImpl ops = OpsImpl::Fast;
};

// One sequence's keys and values, every layer: [length, kv_heads, head_dim] each.
struct KvCache {
  size_t length = 0;
  std::vector<std::vector<float>> k, v;  // per layer
  size_t bytes() const;
};

class LlamaModel {
 public:
  LlamaModel(const std::string& dir, LoadOptions options = {});
  ~LlamaModel();
  const ModelConfig& config() const { return cfg_; }
  KvCache new_cache() const;
  // A cache holding the first n positions of `from` (n <= from.length): the keys and
  // values of a shared prompt prefix, copied instead of recomputed.
  KvCache prefix_of(const KvCache& from, size_t n) const;
  void truncate(KvCache& cache, size_t n) const;  // keep the first n positions
  // Room for `positions` in all, so appending never reallocates (no doubling overhead).
  void reserve(KvCache& cache, size_t positions) const;
  size_t kv_bytes_per_position() const;  // keys + values, every layer
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

 private:
  struct Layer {
    std::vector<float> attn_norm, mlp_norm;  // [hidden]
    cpu::Matrix q, k, v, o, gate, up, down;
  };
  void linear(const float* x, size_t T, const cpu::Matrix& w, float* y) const;

  ModelConfig cfg_;
  LoadOptions options_;
  std::unique_ptr<Checkpoint> checkpoint_;  // kept mapped: matrices may borrow its pages
  cpu::Matrix embed_, lm_head_;  // [vocab, hidden]; lm_head_ empty when tied
  std::vector<float> final_norm_;
  std::vector<Layer> layers_;
  cpu::Rope rope_;
};

// rope_theta and llama3 rope_scaling -> per-pair inverse frequencies, in float32 as
// transformers computes them.
cpu::Rope make_rope(const ModelConfig& c);

}  // namespace pivotmt
