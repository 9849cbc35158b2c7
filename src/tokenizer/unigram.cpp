#include "tokenizer/unigram.h"

#include <fmt/format.h>

#include <limits>

#include "core/error.h"

namespace pivotmt {

namespace {
size_t utf8_length(unsigned char lead) {
  return lead < 0x80 ? 1 : (lead >> 5) == 0x6 ? 2 : (lead >> 4) == 0xe ? 3 : (lead >> 3) == 0x1e ? 4 : 1;
}
}  // namespace

UnigramModel::UnigramModel(std::vector<std::pair<std::string, double>> vocab, std::optional<TokenId> unk, bool byte_fallback)
    : vocab_(std::move(vocab)), unk_(unk), byte_fallback_(byte_fallback) {
  if (vocab_.empty()) throw FormatError("Unigram: the vocabulary is empty");
  if (unk_ && (*unk_ < 0 || size_t(*unk_) >= vocab_.size()))
    throw FormatError(fmt::format("Unigram: unk_id {} is outside the vocabulary of {}", *unk_, vocab_.size()));
  min_score_ = std::numeric_limits<double>::infinity();
  for (size_t i = 0; i < vocab_.size(); ++i) {
    ids_[vocab_[i].first] = TokenId(i);
    min_score_ = std::min(min_score_, vocab_[i].second);
    max_piece_bytes_ = std::max(max_piece_bytes_, vocab_[i].first.size());
  }
}

std::optional<TokenId> UnigramModel::token_to_id(std::string_view token) const {
  const auto it = ids_.find(std::string(token));
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

const std::string& UnigramModel::id_to_token(TokenId id) const {
  return id >= 0 && size_t(id) < vocab_.size() ? vocab_[size_t(id)].first : empty_;
}

void UnigramModel::encode_word(std::string_view word, std::vector<TokenId>& out) const {
  if (word.empty()) return;
  constexpr double kUnkPenalty = 10.0;
  const double unk_score = min_score_ - kUnkPenalty;
  struct Best {
    double score = 0;
    size_t start = SIZE_MAX;  // SIZE_MAX: no path ends here yet
    TokenId id = 0;
  };
  const size_t n = word.size();
  std::vector<Best> best(n + 1);
  best[0].start = 0;
  std::string key;
  for (size_t at = 0; at < n; at += utf8_length(static_cast<unsigned char>(word[at]))) {
    const double here = best[at].score;
    const size_t char_len = std::min(n - at, utf8_length(static_cast<unsigned char>(word[at])));
    bool single = false;
    // Every piece that starts here, shortest first.
    for (size_t len = 1; len <= std::min(max_piece_bytes_, n - at); ++len) {
      key.assign(word.substr(at, len));
      const auto it = ids_.find(key);
      if (it == ids_.end()) continue;
      Best& target = best[at + len];
      const double candidate = vocab_[size_t(it->second)].second + here;
      if (target.start == SIZE_MAX || candidate > target.score) target = {candidate, at, it->second};
      if (len == char_len) single = true;
    }
    if (!single) {
      if (!unk_) throw Error(fmt::format("Unigram: no piece covers '{}' and the model has no unk_id", std::string(word.substr(at, char_len))));
      Best& target = best[at + char_len];
      const double candidate = unk_score + here;
      if (target.start == SIZE_MAX || candidate > target.score) target = {candidate, at, *unk_};
    }
  }
  // Back from the end; runs of unknowns fused into one piece.
  std::vector<std::string> pieces;
  std::string unknown;
  for (size_t end = n; end > 0;) {
    const Best& b = best[end];
    if (b.start == SIZE_MAX) throw Error("Unigram: no segmentation reaches the end of the word");
    const std::string piece(word.substr(b.start, end - b.start));
    if (unk_ && b.id == *unk_) {
      unknown.insert(0, piece);
    } else {
      if (!unknown.empty()) pieces.push_back(std::move(unknown)), unknown.clear();
      pieces.push_back(piece);
    }
    end = b.start;
  }
  if (!unknown.empty()) pieces.push_back(std::move(unknown));
  for (auto it = pieces.rbegin(); it != pieces.rend(); ++it) {
    const auto id = ids_.find(*it);
    if (id != ids_.end()) {
      out.push_back(id->second);
      continue;
    }
    if (byte_fallback_) {
      std::vector<TokenId> bytes;
      for (unsigned char c : *it) {
        const auto b = ids_.find(fmt::format("<0x{:02X}>", c));
        if (b == ids_.end()) break;
        bytes.push_back(b->second);
      }
      if (bytes.size() == it->size()) {
        out.insert(out.end(), bytes.begin(), bytes.end());
        continue;
      }
    }
    if (!unk_) throw Error(fmt::format("Unigram: '{}' is unknown and the model has no unk_id", *it));
    out.push_back(*unk_);
  }
}

}  // namespace pivotmt
