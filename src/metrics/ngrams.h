// n-gram counting shared by BLEU and chrF. Words are interned to integer ids per segment
// and an n-gram is the string of its ids, so counting is exact (no hashing collisions
// decide anything) and cheap.
#pragma once
#include <string>
#include <unordered_map>
#include <vector>

namespace pivotmt::metrics {

using NgramCounts = std::unordered_map<std::u32string, int>;

// Maps words to small integer ids (as char32_t, so id sequences are u32strings).
class WordIds {
 public:
  // Interns every word (reference side).
  std::u32string ids(const std::vector<std::u32string>& words);
  // Looks words up without growing the table: unknown words get fresh ids past it, the
  // same id for the same word within one call (hypothesis side; unknown words can never
  // match a reference n-gram, but repeated ones still count as repeated).
  std::u32string lookup(const std::vector<std::u32string>& words) const;

 private:
  std::unordered_map<std::u32string, char32_t> ids_;
};

// Counts of all n-grams of order n (1-based) of a sequence of symbols.
NgramCounts count_ngrams(const std::u32string& symbols, size_t n);

// sum over hyp n-grams of min(count, ref count).
long matched(const NgramCounts& hyp, const NgramCounts& ref);
long total(const NgramCounts& counts);


// Counts of the n-grams of one order, for n <= 6 and symbols below 2^21 (every code
// point; word ids of any real sentence): each n-gram is packed exactly into 126 bits and
// the counts kept as a sorted vector, so counting and matching (a merge) allocate once.
// Written for chrF, whose character n-grams are the hot path of the metrics.
class PackedNgrams {
 public:
  static constexpr size_t kMaxOrder = 6;
  PackedNgrams() = default;
  PackedNgrams(const std::u32string& symbols, size_t n);  // throws when n > 6 or a symbol >= 2^21
  long total() const { return total_; }
  bool empty() const { return counts_.empty(); }
  friend long matched(const PackedNgrams& hyp, const PackedNgrams& ref);

 private:
  std::vector<std::pair<unsigned __int128, int>> counts_;  // sorted by key
  long total_ = 0;
};

}  // namespace pivotmt::metrics
