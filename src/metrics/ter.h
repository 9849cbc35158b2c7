// TER exactly as sacrebleu 2.6 computes it (Tercom tokenizer + ter_edit's algorithm).
#pragma once
#include "metrics/metric.h"
#include "metrics/tokenizers.h"

namespace pivotmt::metrics {

class Ter : public Metric {
 public:
  explicit Ter(TercomOptions options) : o_(options) {}
  std::string name() const override { return "TER"; }
  size_t stats_size() const override { return 2; }
  std::unique_ptr<ReferenceInfo> prepare_references(const std::vector<std::u32string>& refs) const override;
  // [fewest edits over the references, average reference length]
  std::vector<double> segment_stats(const std::u32string& hyp, const ReferenceInfo& refs) const override;
  Score score_from_stats(std::span<const double> stats, StatsPrecision precision) const override;
  std::vector<std::pair<std::string, std::pair<std::string, std::string>>> signature_fields() const override;

 private:
  TercomOptions o_;
};

}  // namespace pivotmt::metrics
