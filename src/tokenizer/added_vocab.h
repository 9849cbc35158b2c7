// Added tokens (special or not) are found in the raw text before anything else runs, as
// Hugging Face's AddedVocabulary does: leftmost-longest matching, with lstrip/rstrip
// absorbing neighbouring whitespace and single_word requiring word boundaries.
#pragma once
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace pivotmt {

struct Segment {
  std::string text;     // when id < 0
  TokenId id = -1;      // an added token
  size_t offset = 0;    // byte offset in the input
};

class AddedVocabulary {
 public:
  explicit AddedVocabulary(std::vector<AddedToken> tokens);
  // `normalized`: which tokens to look for (HF splits raw text on tokens with
  // normalized=false, then normalized text on the others).
  std::vector<Segment> split(const std::string& text, bool normalized) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }
  const AddedToken* find(TokenId id) const;
  const AddedToken* find(const std::string& content) const;

 private:
  std::vector<AddedToken> tokens_;
  std::vector<size_t> by_first_byte_[256];  // candidates per first byte, longest first
};

}  // namespace pivotmt
