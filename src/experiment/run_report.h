// What `pivotmt ablate` writes beside the original's files: report.md (scores per k, change
// over k = 0 with a paired bootstrap test, prompt lengths, context overflows, timings and
// throughput) and manifest.json (what produced the run: config, model and data files with
// their hashes, tokenizer and chat template, versions, metric signatures).
#pragma once
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "experiment/ablation.h"

namespace pivotmt {

struct KRun {
  size_t k = 0;
  bool baseline = false;  // the NLLB baseline's run (k unused)
  std::vector<std::string> responses;  // test order
  std::vector<size_t> prompt_tokens;
  size_t new_tokens = 0, overflows = 0;
  double seconds = 0;
  nlohmann::json scores;  // scores_k{k}.json's object
  std::vector<std::optional<double>> comet;  // COMET per test row (none: not scored), when computed
};

// `baseline`: the NLLB baseline's run, shown as a row of its own (and tested against k = 0).
std::string ablation_report_markdown(const AblationConfig& config, const std::vector<std::string>& targets,
                                     const std::vector<KRun>& runs, size_t context_length, const KRun* baseline = nullptr);

// Files of the model directory that decide its behaviour, each with its size and SHA-256
// (from the Hugging Face cache's blob name when the file is a cache symlink to an LFS
// blob, so 14 GB of weights are not re-read).
nlohmann::json model_files_manifest(const std::string& model_dir);

}  // namespace pivotmt
