// Byte-pair encoding as Hugging Face tokenizers applies it: symbols start as characters
// (SentencePiece-style vocabularies: Llama-2, Mistral) or bytes (byte-level: Llama-3),
// then the adjacent pair with the lowest merge rank is merged first (leftmost on ties)
// until no known pair remains. Unknown characters fall back to <0xXX> byte tokens when
// the vocabulary has them, else to the unknown token.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace pivotmt {

using TokenId = int32_t;

struct BpeOptions {
  bool byte_level = false;     // initial symbols are bytes (vocabulary keys are raw bytes)
  bool byte_fallback = false;  // unknown characters -> <0xXX> tokens
  bool fuse_unk = false;       // consecutive unknowns become one
  bool ignore_merges = false;  // a word that is itself a token is taken whole (Llama-3)
  std::optional<TokenId> unk;
};

class BpeModel {
 public:
  // `vocab`: token (raw bytes) -> id; `merges`: pairs in rank order.
  BpeModel(std::unordered_map<std::string, TokenId> vocab, const std::vector<std::pair<std::string, std::string>>& merges,
           BpeOptions options);
  // tiktoken-style: ranks are the ids and a pair merges when its concatenation is a token
  // (its rank is the merge's rank).
  static BpeModel from_ranks(std::unordered_map<std::string, TokenId> ranks, BpeOptions options);

  void encode_word(std::string_view word, std::vector<TokenId>& out) const;
  std::optional<TokenId> token_to_id(std::string_view token) const;
  const std::string& id_to_token(TokenId id) const;  // empty when unknown
  size_t size() const { return vocab_.size(); }
  TokenId max_id() const { return TokenId(id_to_token_.size()) - 1; }

 private:
  BpeModel() = default;
  void index_vocab();
  struct Merge {
    int32_t rank;
    TokenId merged;
  };
  static uint64_t pair_key(TokenId a, TokenId b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }

  std::unordered_map<std::string, TokenId> vocab_;
  std::vector<std::string> id_to_token_;
  std::unordered_map<uint64_t, Merge> merges_;
  BpeOptions o_;
  TokenId byte_tokens_[256];
  bool has_all_byte_tokens_ = false;
};

}  // namespace pivotmt
