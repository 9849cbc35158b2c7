// COMET (Unbabel/wmt22-comet-da and other regression metrics of unbabel-comet 2.x) computed
// natively: the XLM-R encoder (BertEncoder) on each sentence alone, then the head
// (comet_head.h). REFERENCE §12. Each sentence is encoded without padding, as unbabel-comet
// does at batch size 1; its larger batches pad, which moves scores in the last digits.
#pragma once
#include <string>
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
  Model(const std::string& model_dir, const std::string& encoder_dir);

  // Tokens per sentence, <s> and </s> included: COMET's tokenizer max_length (positions − 4:
  // 510 for XLM-R).
  size_t max_tokens() const { return max_tokens_; }
  // The sentence's ids, cut to max_tokens() (content first, </s> kept); `cut` says whether.
  std::vector<TokenId> tokenize(const std::string& text, bool* cut = nullptr) const;
  // Sentence embeddings [n, hidden], threaded over sentences.
  std::vector<float> embed(const std::vector<std::string>& texts, size_t* truncated = nullptr) const;
  // Segment and system scores; the three lists must have the same length.
  Scores score(const std::vector<std::string>& src, const std::vector<std::string>& mt,
               const std::vector<std::string>& ref) const;

 private:
  BertEncoder encoder_;
  Head head_;
  size_t max_tokens_ = 0;
};

}  // namespace pivotmt::comet
