#include "tokenizer/bpe.h"

#include <queue>

#include <fmt/format.h>

#include "core/error.h"

namespace pivotmt {

BpeModel::BpeModel(std::unordered_map<std::string, TokenId> vocab,
                   const std::vector<std::pair<std::string, std::string>>& merges, BpeOptions options)
    : vocab_(std::move(vocab)), o_(options) {
  index_vocab();
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    const auto ia = token_to_id(a), ib = token_to_id(b), im = token_to_id(a + b);
    if (!ia || !ib || !im)
      throw FormatError(fmt::format("BPE merge {} ('{}' '{}') uses a token missing from the vocabulary", rank + 1, a, b));
    merges_.emplace(pair_key(*ia, *ib), Merge{int32_t(rank), *im});  // the first (best) rank wins
  }
}

BpeModel BpeModel::from_ranks(std::unordered_map<std::string, TokenId> ranks, BpeOptions options) {
  BpeModel m;
  m.vocab_ = std::move(ranks);
  m.o_ = options;
  m.index_vocab();
  // Every split of a token into two tokens is a merge of that token's rank.
  for (const auto& [token, id] : m.vocab_) {
    for (size_t k = 1; k < token.size(); ++k) {
      const auto a = m.token_to_id(std::string_view(token).substr(0, k));
      if (!a) continue;
      const auto b = m.token_to_id(std::string_view(token).substr(k));
      if (!b) continue;
      auto [it, inserted] = m.merges_.emplace(pair_key(*a, *b), Merge{id, id});
      if (!inserted && id < it->second.rank) it->second = Merge{id, id};
    }
  }
  return m;
}

void BpeModel::index_vocab() {
  TokenId max_id = -1;
  for (const auto& [t, id] : vocab_) {
    if (id < 0) throw FormatError(fmt::format("vocabulary token '{}' has a negative id", t));
    max_id = std::max(max_id, id);
  }
  id_to_token_.assign(size_t(max_id + 1), std::string());
  for (const auto& [t, id] : vocab_) id_to_token_[size_t(id)] = t;
  has_all_byte_tokens_ = true;
  for (int b = 0; b < 256; ++b) {
    const std::string name = o_.byte_level ? std::string(1, char(b)) : fmt::format("<0x{:02X}>", b);
    const auto id = token_to_id(name);
    byte_tokens_[b] = id.value_or(-1);
    has_all_byte_tokens_ = has_all_byte_tokens_ && id.has_value();
  }
}

std::optional<TokenId> BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(std::string(token));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string& BpeModel::id_to_token(TokenId id) const {
  static const std::string empty;
  if (id < 0 || size_t(id) >= id_to_token_.size()) return empty;
  return id_to_token_[size_t(id)];
}

namespace {
size_t utf8_length(unsigned char c) {
  if (c < 0x80) return 1;
  if ((c >> 5) == 0x6) return 2;
  if ((c >> 4) == 0xe) return 3;
  if ((c >> 3) == 0x1e) return 4;
  return 1;  // invalid lead byte: one byte on its own
}
}  // namespace

void BpeModel::encode_word(std::string_view word, std::vector<TokenId>& out) const {
  if (word.empty()) return;
  if (o_.ignore_merges)
    if (auto whole = token_to_id(word)) {
      out.push_back(*whole);
      return;
    }
  // Initial symbols.
  std::vector<TokenId> ids;
  ids.reserve(word.size());
  bool last_unk = false;
  for (size_t i = 0; i < word.size();) {
    const size_t len = o_.byte_level ? 1 : std::min(utf8_length(static_cast<unsigned char>(word[i])), word.size() - i);
    const std::string_view piece = word.substr(i, len);
    i += len;
    if (auto id = token_to_id(piece)) {
      ids.push_back(*id);
      last_unk = false;
      continue;
    }
    if (o_.byte_fallback && has_all_byte_tokens_) {
      for (unsigned char b : piece) ids.push_back(byte_tokens_[b]);
      last_unk = false;
      continue;
    }
    if (!o_.unk) throw Error(fmt::format("cannot encode '{}': not in the vocabulary and no unknown token", piece));
    if (!(o_.fuse_unk && last_unk)) ids.push_back(*o_.unk);
    last_unk = true;
  }

  // Merge loop: a min-heap of (rank, position); stale entries are skipped on pop.
  const size_t n = ids.size();
  std::vector<int64_t> prev(n), next(n);
  for (size_t i = 0; i < n; ++i) {
    prev[i] = int64_t(i) - 1;
    next[i] = i + 1 < n ? int64_t(i + 1) : -1;
  }
  struct Entry {
    int32_t rank;
    int64_t pos;
    TokenId left, right, merged;
    bool operator>(const Entry& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
  auto push = [&](int64_t pos) {
    if (pos < 0 || next[size_t(pos)] < 0) return;
    const TokenId a = ids[size_t(pos)], b = ids[size_t(next[size_t(pos)])];
    auto it = merges_.find(pair_key(a, b));
    if (it != merges_.end()) heap.push({it->second.rank, pos, a, b, it->second.merged});
  };
  for (size_t i = 0; i + 1 < n; ++i) push(int64_t(i));
  std::vector<bool> alive(n, true);
  while (!heap.empty()) {
    const Entry e = heap.top();
    heap.pop();
    const size_t p = size_t(e.pos);
    if (!alive[p] || ids[p] != e.left || next[p] < 0 || ids[size_t(next[p])] != e.right) continue;
    const size_t q = size_t(next[p]);
    ids[p] = e.merged;
    alive[q] = false;
    next[p] = next[q];
    if (next[q] >= 0) prev[size_t(next[q])] = int64_t(p);
    push(prev[p]);
    push(int64_t(p));
  }
  for (int64_t i = 0; i >= 0 && size_t(i) < n; i = next[size_t(i)]) out.push_back(ids[size_t(i)]);
}

}  // namespace pivotmt
