// The Tercom algorithm as sacrebleu 2.6 implements it: a beam-limited Levenshtein
// distance around the length-ratio diagonal (beam 25) and a greedy search for block
// shifts (at most 10 words, at most 50 positions away, ranked as Tercom ranks them),
// stopping after 1000 shift candidates in total.
#pragma once
#include <cstdint>
#include <vector>

namespace pivotmt::metrics {

struct TerEdits {
  int64_t edits = 0;      // shifts + edit distance after shifting
  int64_t ref_length = 0;
};

// Words are given as integer ids (equal words, equal ids).
TerEdits translation_edit_rate(const std::vector<uint32_t>& hyp, const std::vector<uint32_t>& ref);

}  // namespace pivotmt::metrics
