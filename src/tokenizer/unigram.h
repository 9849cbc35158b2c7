// The Unigram model of tokenizer.json (SentencePiece's unigram language model as Hugging
// Face tokenizers runs it): the most probable segmentation of each pre-tokenized word by
// Viterbi over the vocabulary's log-probabilities; a character no piece covers costs
// min_score - 10 and becomes <unk>, consecutive unknowns fused into one; optional byte
// fallback. Ties keep the first candidate found (pieces visited shortest first), as HF does.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/bpe.h"

namespace pivotmt {

class UnigramModel {
 public:
  UnigramModel(std::vector<std::pair<std::string, double>> vocab, std::optional<TokenId> unk, bool byte_fallback);
  void encode_word(std::string_view word, std::vector<TokenId>& out) const;
  std::optional<TokenId> token_to_id(std::string_view token) const;
  const std::string& id_to_token(TokenId id) const;
  TokenId max_id() const { return TokenId(vocab_.size()) - 1; }

 private:
  std::vector<std::pair<std::string, double>> vocab_;
  std::unordered_map<std::string, TokenId> ids_;  // a repeated piece maps to its last id (HF)
  std::optional<TokenId> unk_;
  bool byte_fallback_;
  double min_score_ = 0;
  size_t max_piece_bytes_ = 0;
  std::string empty_;
};

}  // namespace pivotmt
