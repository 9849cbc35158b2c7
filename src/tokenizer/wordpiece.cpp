#include "tokenizer/wordpiece.h"

#include <fmt/format.h>

#include "core/error.h"
#include "text/unicode.h"

namespace pivotmt {

WordPieceModel::WordPieceModel(std::unordered_map<std::string, TokenId> vocab, std::string unk, std::string prefix,
                               size_t max_chars)
    : vocab_(std::move(vocab)), prefix_(std::move(prefix)), max_chars_(max_chars) {
  auto it = vocab_.find(unk);
  if (it == vocab_.end()) throw FormatError(fmt::format("WordPiece: unknown token '{}' is not in the vocabulary", unk));
  unk_ = it->second;
  TokenId max_id = -1;
  for (const auto& [t, id] : vocab_) max_id = std::max(max_id, id);
  id_to_token_.assign(size_t(max_id + 1), std::string());
  for (const auto& [t, id] : vocab_)
    if (id >= 0) id_to_token_[size_t(id)] = t;
}

std::optional<TokenId> WordPieceModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(std::string(token));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string& WordPieceModel::id_to_token(TokenId id) const {
  static const std::string empty;
  return id >= 0 && size_t(id) < id_to_token_.size() ? id_to_token_[size_t(id)] : empty;
}

void WordPieceModel::encode_word(std::string_view word, std::vector<TokenId>& out) const {
  const std::u32string chars = utf8_to_u32(word);
  if (chars.size() > max_chars_) {
    out.push_back(unk_);
    return;
  }
  std::vector<TokenId> pieces;
  size_t start = 0;
  while (start < chars.size()) {
    size_t end = chars.size();
    std::optional<TokenId> found;
    while (start < end) {
      std::string sub = u32_to_utf8(chars.substr(start, end - start));
      if (start > 0) sub = prefix_ + sub;
      if (auto id = token_to_id(sub)) {
        found = id;
        break;
      }
      --end;
    }
    if (!found) {
      out.push_back(unk_);
      return;
    }
    pieces.push_back(*found);
    start = end;
  }
  out.insert(out.end(), pieces.begin(), pieces.end());
}

}  // namespace pivotmt
