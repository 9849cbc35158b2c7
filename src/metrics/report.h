// A full scoring job: hypotheses and references (from text files or table columns), the
// requested metrics, optional confidence intervals and paired tests, rendered as
// sacrebleu-style text or one JSON object.
#pragma once
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "metrics/scoring.h"

namespace pivotmt::metrics {

struct ScoreRequest {
  std::vector<std::u32string> hyps;
  std::vector<std::vector<std::u32string>> refs;  // streams
  std::optional<std::vector<std::u32string>> baseline;  // for paired tests
  std::string system_name = "system", baseline_name = "baseline";
  std::vector<std::string> metrics = {"bleu", "chrf", "chrf++", "ter"};
  ScoringOptions options;
  int confidence_n = 0;  // > 0: bootstrap interval with that many resamples
  enum class Paired { None, Bootstrap, Randomization } paired = Paired::None;
  int paired_n = 0;  // 0: 1000 for bootstrap, 10000 for randomisation
  uint64_t seed = 12345;
  int width = 1;
};

// Returns {"BLEU": {...}, "chrF": {...}, ...} with at least "score", "signature",
// "signature_short" and "formatted" per metric (plus BLEU's details, TER's edits, the
// interval as "mean"/"ci"), and "paired" when a test was requested.
nlohmann::json run_scoring(const ScoreRequest& request);

// sacrebleu-style lines, one per metric (and a paired table when present).
std::string format_scoring_text(const nlohmann::json& result);

}  // namespace pivotmt::metrics
