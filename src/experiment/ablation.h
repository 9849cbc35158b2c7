// The k-ablation runner: for every test row and every k, retrieve k examples, build the
// original's prompt, generate, and store the row durably; then write the original's
// output layout (REFERENCE §7) with correct scores.
//
// Crash safety: each k has an append-only log (k_{k}/rows.jsonl), one JSON line per
// finished row, fsync'd before the next batch starts. A rerun reads the log, drops a torn
// last line, and generates only the missing rows; per-row seeds (seed + test row index)
// make sampled rows independent of which rows ran together, so a resumed run writes the
// same files as an uninterrupted one.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "experiment/prompt.h"

namespace pivotmt {

struct AblationConfig {
  // Data: a table file, a directory of split files or a hub dataset id (resolved by the CLI).
  std::string data;
  std::string train_split = "train", test_split = "test";
  std::string pivot = "hin", source = "mar", target = "gom";
  PromptLabels labels;
  PromptVariant variant = PromptVariant::Pivot;
  std::string retriever = "bm25";  // see IndexSpec
  std::string encoder;             // sentence encoder directory (minilm retrievers)
  std::string model;               // model directory
  std::vector<size_t> ks = {0, 1, 3, 5, 7, 10};
  bool greedy = false;  // default: the original's sampling
  float temperature = 0.1f, top_p = 0.75f;
  int top_k = 50;
  size_t max_new_tokens = 600;
  uint64_t seed = 0;
  std::string context_policy = "allow";  // error | truncate-left | allow
  size_t limit = 0;                      // test rows (0: all)
  size_t max_batch = 32;
  std::string out;

  // Everything that decides the outputs (not `out` or `max_batch`): a folder holding
  // another configuration is refused unless forced.
  nlohmann::json identity() const;
};

struct AblationProgress {
  size_t k = 0, done = 0, total = 0;  // rows of this k
  size_t generated_tokens = 0;
  double seconds = 0;  // since this k started in this process
};

struct AblationOutcome {
  size_t rows_generated = 0, rows_resumed = 0;  // this process / read back from the logs
};

// Throws on bad configuration or data; `force` replaces a folder of another configuration.
AblationOutcome run_ablation(const AblationConfig& config, bool force,
                             const std::function<void(const AblationProgress&)>& on_progress = {});

// BLEU, chrF, chrF++ and TER of translations against one reference each, as
// `pivotmt score` reports them (run_scoring's JSON); rows with an empty translation or
// reference are left out and counted in `failed` (REFERENCE §6). Null when none is left.
nlohmann::json score_translations(const std::vector<std::string>& translations, const std::vector<std::string>& references,
                                  size_t* failed);

// RFC 4180 CSV field as pandas writes it (quoted only when it holds , " \r or \n).
std::string csv_field(const std::string& value);

}  // namespace pivotmt
