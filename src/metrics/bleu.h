// BLEU exactly as sacrebleu 2.6 computes it (corpus and sentence level).
#pragma once
#include <memory>
#include <string>

#include "metrics/metric.h"
#include "metrics/tokenizers.h"

namespace pivotmt::metrics {

struct BleuOptions {
  bool lowercase = false;
  std::string tokenize = "13a";
  std::string spm_model;             // for flores101 / flores200
  std::string smooth_method = "exp";  // exp | floor | add-k | none
  std::optional<double> smooth_value;  // default: floor 0.1, add-k 1
  int max_ngram_order = 4;
  bool effective_order = false;
};

class Bleu : public Metric {
 public:
  explicit Bleu(BleuOptions options);
  std::string name() const override { return "BLEU"; }
  size_t stats_size() const override { return 2 + 2 * size_t(o_.max_ngram_order); }
  std::unique_ptr<ReferenceInfo> prepare_references(const std::vector<std::u32string>& refs) const override;
  std::vector<double> segment_stats(const std::u32string& hyp, const ReferenceInfo& refs) const override;
  Score score_from_stats(std::span<const double> stats, StatsPrecision precision) const override;
  std::vector<std::pair<std::string, std::pair<std::string, std::string>>> signature_fields() const override;

  std::u32string preprocess(const std::u32string& sentence) const;  // lowercase + tokenize(rstrip)
  const BleuOptions& options() const { return o_; }

 private:
  BleuOptions o_;
  std::unique_ptr<BleuTokenizer> tokenizer_;
};

}  // namespace pivotmt::metrics
