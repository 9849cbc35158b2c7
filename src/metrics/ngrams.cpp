#include "metrics/ngrams.h"

#include <algorithm>

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
