// A metric known only by its segment scores, whose corpus score is their mean: COMET (the
// model scores each segment; REFERENCE §12). As a Metric it goes through the same
// bootstrap intervals and paired tests as BLEU or chrF (significance.h): a segment's
// statistics are (score, 1) and a resample's score is Σ score / Σ 1.
#pragma once
#include "metrics/corpus.h"
#include "metrics/metric.h"

namespace pivotmt::metrics {

class SegmentMeanMetric : public Metric {
 public:
  explicit SegmentMeanMetric(std::string name) : name_(std::move(name)) {}
  std::string name() const override { return name_; }
  size_t stats_size() const override { return 2; }
  // There is no text to score: the statistics come from stats() below. Throws.
  std::unique_ptr<ReferenceInfo> prepare_references(const std::vector<std::u32string>& refs) const override;
  std::vector<double> segment_stats(const std::u32string& hyp, const ReferenceInfo& refs) const override;
  // The resample's statistics summed in float32 like sacrebleu's bootstrap arrays when
  // `precision` says so.
  Score score_from_stats(std::span<const double> stats, StatsPrecision precision) const override;
  std::vector<std::pair<std::string, std::pair<std::string, std::string>>> signature_fields() const override { return {}; }

  static SegmentStats stats(const std::vector<double>& segment_scores);

 private:
  std::string name_;
};

}  // namespace pivotmt::metrics
