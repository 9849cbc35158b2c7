// COMET (Unbabel/wmt22-comet-da and other regression metrics of unbabel-comet 2.x) computed
// natively: the XLM-R encoder (BertEncoder), then the head (comet_head.h). REFERENCE §12.
// Sentences are packed into batches without padding, so each is encoded exactly as
// unbabel-comet does at batch size 1 (its larger batches pad, which moves scores in the
// last digits); its embedding depends on the other sentences only in the last bits (which
// GEMM kernel its batch's row count selects).
#pragma once
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "metrics/comet_head.h"
#include "models/bert_model.h"

namespace pivotmt::comet {

struct Scores {
  std::vector<double> segments;  // one per (src, mt, ref) triple
  double system = 0;             // their mean
  size_t truncated = 0;          // sentences cut to max_tokens()
};

class Model {
 public:
  // `model_dir`: the metric's weights as safetensors (the state dict of checkpoints/model.ckpt,
  // converted by `pivotmt convert`); `encoder_dir`: the encoder's config.json and tokenizer
  // (xlm-roberta-large for wmt22-comet-da).
  // `name`: the model as the user named it (a hub id, a checkpoint folder), for messages and
  // score signatures: model_dir may be a cache folder the checkpoint was converted into.
  // `device`: where the encoder runs; the head stays on the host. `weights`: the encoder's
  // linears stored F32 (unbabel-comet's numerics: segment scores within 1e-5 of its F32 ones)
  // or F16 (half the memory; on a GPU the tensor cores — the products' inputs rounded to F16,
  // F32 sums, as unbabel-comet under F16 autocast —, segments moved by ~1e-5 to 1e-4).
  Model(const std::string& model_dir, const std::string& encoder_dir, const std::string& name = "",
        const Device& device = {}, DType weights = DType::F32);
  std::string describe_device() const { return encoder_.describe_device(); }
  const std::string& name() const { return name_; }
  DType weights() const { return weights_; }
  // The score's signature: "model:NAME|encoder:DIR|truncated:N", "|weights:f16" added when
  // the weights are F16 (F16 and F32 scores are not the same figure).
  std::string signature(const std::string& encoder, size_t truncated) const;

  // Tokens per sentence, <s> and </s> included: COMET's tokenizer max_length (positions − 4:
  // 510 for XLM-R).
  size_t max_tokens() const { return max_tokens_; }
  size_t hidden_size() const { return encoder_.dimension(); }
  // The encoder's padding id (COMET's padding_index), -1 when the config has none.
  int64_t pad_id() const { return encoder_.config().pad_token_id.value_or(-1); }
  size_t intermediate_size() const { return size_t(encoder_.config().intermediate_size); }
  // The layer mix's weights (sparsemax of the checkpoint's scalar parameters).
  const std::vector<float>& layer_weights() const { return head_.layer_weights(); }
  // The sentence's ids, cut to max_tokens() (content first, </s> kept); `cut` says whether.
  std::vector<TokenId> tokenize(const std::string& text, bool* cut = nullptr) const;
  // Sentence embeddings [n, hidden]: each distinct text encoded once (BertEncoder's packed
  // fast path), remembered for later calls (an ablation's sources and references recur in
  // every k); progress on stderr. `truncated` is increased by the texts that were cut.
  std::vector<float> embed(const std::vector<std::string>& texts, size_t* truncated = nullptr) const;
  // The same from the reference path (one sentence at a time, plain loops, every hidden
  // state kept, the head's own mix): what the fast path is tested against.
  std::vector<float> embed_reference(const std::vector<std::string>& texts, size_t* truncated = nullptr) const;
  // Segment and system scores; the three lists must have the same length.
  Scores score(const std::vector<std::string>& src, const std::vector<std::string>& mt,
               const std::vector<std::string>& ref) const;

 private:
  struct Cached {
    std::vector<float> embedding;
    bool truncated = false;
  };
  // Up to this many embeddings are remembered (4 KB each for XLM-R large).
  static constexpr size_t kCacheSentences = 50000;
  std::string name_;
  DType weights_;
  BertEncoder encoder_;
  Head head_;
  size_t max_tokens_ = 0;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, Cached> cache_;
};

}  // namespace pivotmt::comet
