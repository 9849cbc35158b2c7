// The scoring front end shared by `pivotmt score`, the ablation runner and the tests:
// sacrebleu's command-line options, metric construction, reading text like sacrebleu's
// CLI, and the JSON/text reports.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "metrics/metric.h"
#include "metrics/tokenizers.h"

namespace pivotmt::metrics {

struct ScoringOptions {
  // BLEU
  std::string tokenize = "13a";
  std::string spm_model;
  bool lowercase = false;  // BLEU and chrF (TER has its own case option)
  std::string smooth_method = "exp";
  std::optional<double> smooth_value;
  int max_ngram_order = 4;
  bool effective_order = false;
  // chrF / chrF++
  int chrf_char_order = 6;
  int chrf_word_order = 2;  // for chrF++ (chrF has 0)
  int chrf_beta = 2;
  bool chrf_whitespace = false;
  bool chrf_eps_smoothing = false;
  // TER
  TercomOptions ter;
};

// name: bleu | chrf | chrf++ | ter. Sentence-level BLEU uses effective order, as
// sacrebleu's CLI does.
std::unique_ptr<Metric> make_metric(const std::string& name, const ScoringOptions& options,
                                    bool sentence_level = false);
// The JSON key sacrebleu's API uses for a metric: BLEU, chrF, chrF++, TER.
std::string metric_key(const std::string& name);

// A text file read as sacrebleu's CLI reads it: UTF-8 (an invalid byte is an error naming
// the line), split on '\n' only (a '\r' inside a line stays), each line right-stripped
// with Python's whitespace set.
std::vector<std::u32string> read_text_lines(const std::string& path);

}  // namespace pivotmt::metrics
