// chrF and chrF++ exactly as sacrebleu 2.6 computes them.
#pragma once
#include "metrics/metric.h"

namespace pivotmt::metrics {

struct ChrfOptions {
  int char_order = 6;
  int word_order = 0;  // 2 for chrF++
  int beta = 2;
  bool lowercase = false;
  bool whitespace = false;
  bool eps_smoothing = false;
};

class Chrf : public Metric {
 public:
  explicit Chrf(ChrfOptions options);
  std::string name() const override;  // chrF2, chrF2++
  size_t stats_size() const override { return 3 * size_t(o_.char_order + o_.word_order); }
  std::unique_ptr<ReferenceInfo> prepare_references(const std::vector<std::u32string>& refs) const override;
  std::vector<double> segment_stats(const std::u32string& hyp, const ReferenceInfo& refs) const override;
  Score score_from_stats(std::span<const double> stats, StatsPrecision precision) const override;
  std::vector<std::pair<std::string, std::pair<std::string, std::string>>> signature_fields() const override;

  // chrF++'s word split: whitespace words with one leading or trailing ASCII punctuation
  // character split off (trailing first; "(hi)" -> "(hi", ")").
  static std::vector<std::u32string> split_punctuation(const std::u32string& sentence);

 private:
  double f_score(std::span<const double> stats, StatsPrecision precision) const;
  ChrfOptions o_;
};

}  // namespace pivotmt::metrics
