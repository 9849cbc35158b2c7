#include "metrics/ngrams.h"

#include <algorithm>

#include <fmt/format.h>

#include "core/error.h"

namespace pivotmt::metrics {

std::u32string WordIds::ids(const std::vector<std::u32string>& words) {
  std::u32string out;
  out.reserve(words.size());
  for (const auto& w : words) {
    auto [it, inserted] = ids_.emplace(w, static_cast<char32_t>(ids_.size()));
    out.push_back(it->second);
  }
  return out;
}

std::u32string WordIds::lookup(const std::vector<std::u32string>& words) const {
  std::u32string out;
  out.reserve(words.size());
  std::unordered_map<std::u32string, char32_t> unknown;
  for (const auto& w : words) {
    auto it = ids_.find(w);
    if (it != ids_.end()) {
      out.push_back(it->second);
    } else {
      auto [u, inserted] = unknown.emplace(w, static_cast<char32_t>(ids_.size() + unknown.size()));
      out.push_back(u->second);
    }
  }
  return out;
}

NgramCounts count_ngrams(const std::u32string& symbols, size_t n) {
  NgramCounts counts;
  if (symbols.size() < n || n == 0) return counts;
  counts.reserve(symbols.size() - n + 1);
  for (size_t i = 0; i + n <= symbols.size(); ++i) ++counts[symbols.substr(i, n)];
  return counts;
}

long matched(const NgramCounts& hyp, const NgramCounts& ref) {
  long m = 0;
  for (const auto& [g, c] : hyp) {
    auto it = ref.find(g);
    if (it != ref.end()) m += std::min(c, it->second);
  }
  return m;
}

long total(const NgramCounts& counts) {
  long t = 0;
  for (const auto& [g, c] : counts) t += c;
  return t;
}

}  // namespace pivotmt::metrics

namespace pivotmt::metrics {

PackedNgrams::PackedNgrams(const std::u32string& symbols, size_t n) {
  if (n == 0 || n > kMaxOrder) throw Error(fmt::format("n-gram order {} outside 1..{}", n, kMaxOrder));
  if (symbols.size() < n) return;
  std::vector<unsigned __int128> keys;
  keys.reserve(symbols.size() - n + 1);
  for (char32_t c : symbols)
    if (c >= (1u << 21)) throw Error("n-gram symbol out of range (a segment with over two million distinct words?)");
  for (size_t i = 0; i + n <= symbols.size(); ++i) {
    unsigned __int128 key = 0;
    for (size_t k = 0; k < n; ++k) key = (key << 21) | symbols[i + k];
    keys.push_back(key);
  }
  std::sort(keys.begin(), keys.end());
  for (size_t i = 0; i < keys.size();) {
    size_t j = i;
    while (j < keys.size() && keys[j] == keys[i]) ++j;
    counts_.emplace_back(keys[i], int(j - i));
    i = j;
  }
  total_ = long(keys.size());
}

long matched(const PackedNgrams& hyp, const PackedNgrams& ref) {
  long m = 0;
  auto a = hyp.counts_.begin(), b = ref.counts_.begin();
  while (a != hyp.counts_.end() && b != ref.counts_.end()) {
    if (a->first < b->first) {
      ++a;
    } else if (b->first < a->first) {
      ++b;
    } else {
      m += std::min(a->second, b->second);
      ++a;
      ++b;
    }
  }
  return m;
}

}  // namespace pivotmt::metrics
