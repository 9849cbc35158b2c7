#include "metrics/segment_mean.h"

#include "core/error.h"

namespace pivotmt::metrics {

std::unique_ptr<ReferenceInfo> SegmentMeanMetric::prepare_references(const std::vector<std::u32string>&) const {
  throw Error(name_ + " is scored by its model, not from references");
}

std::vector<double> SegmentMeanMetric::segment_stats(const std::u32string&, const ReferenceInfo&) const {
  throw Error(name_ + " is scored by its model, not from references");
}

Score SegmentMeanMetric::score_from_stats(std::span<const double> stats, StatsPrecision) const {
  Score s;
  s.name = name_;
  if (stats.size() != 2) throw Error(name_ + ": statistics are (sum of scores, segments)");
  // The summed statistics arrive already rounded as the caller held them (float32 sums in
  // the bootstrap); the mean itself is a plain division.
  s.score = stats[1] > 0 ? stats[0] / stats[1] : 0.0;
  return s;
}

SegmentStats SegmentMeanMetric::stats(const std::vector<double>& segment_scores) {
  SegmentStats out;
  out.reserve(segment_scores.size());
  for (double v : segment_scores) out.push_back({v, 1.0});
  return out;
}

}  // namespace pivotmt::metrics
