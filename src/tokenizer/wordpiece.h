// WordPiece (BERT): greedy longest-match-first within each pre-tokenized word, with "##"
// marking pieces that continue a word; a word with an unmatchable part, or longer than
// max_input_chars_per_word characters, becomes the unknown token.
#pragma once
#include <string>
#include <unordered_map>
#include <vector>

#include "tokenizer/bpe.h"

namespace pivotmt {

class WordPieceModel {
 public:
  WordPieceModel(std::unordered_map<std::string, TokenId> vocab, std::string unk, std::string prefix,
                 size_t max_chars);
  void encode_word(std::string_view word, std::vector<TokenId>& out) const;
  std::optional<TokenId> token_to_id(std::string_view token) const;
  const std::string& id_to_token(TokenId id) const;
  TokenId max_id() const { return TokenId(id_to_token_.size()) - 1; }

 private:
  std::unordered_map<std::string, TokenId> vocab_;
  std::vector<std::string> id_to_token_;
  TokenId unk_;
  std::string prefix_;
  size_t max_chars_;
};

}  // namespace pivotmt
