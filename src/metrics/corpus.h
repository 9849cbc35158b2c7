// Corpus-level scoring: references prepared once per segment (shared by every system
// scored against them), per-segment statistics, exact sums.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "metrics/metric.h"

namespace pivotmt::metrics {

class PreparedReferences {
 public:
  // ref_streams[k][i]: reference k of segment i. Empty references count (as in
  // sacrebleu 2.6); missing ones (nullopt: a stream shorter in content than others) are
  // left out, and the signature then says nrefs:var.
  PreparedReferences(const Metric& metric, const std::vector<std::vector<std::optional<std::u32string>>>& ref_streams);
  PreparedReferences(const Metric& metric, const std::vector<std::vector<std::u32string>>& ref_streams);
  size_t size() const { return infos_.size(); }
  const ReferenceInfo& at(size_t i) const { return *infos_[i]; }
  const std::string& nrefs() const { return nrefs_; }  // the signature's nrefs value

 private:
  std::vector<std::unique_ptr<ReferenceInfo>> infos_;
  std::string nrefs_;
};

using SegmentStats = std::vector<std::vector<double>>;

// Per-segment statistics of one system (multi-threaded over segments).
SegmentStats system_statistics(const Metric& metric, const PreparedReferences& refs,
                               const std::vector<std::u32string>& hyps);

// Column sums, added in segment order as Python's sum_of_lists does.
std::vector<double> sum_statistics(const SegmentStats& stats);

// The corpus score of a system (exact statistics).
Score corpus_score(const Metric& metric, const SegmentStats& stats);

}  // namespace pivotmt::metrics
