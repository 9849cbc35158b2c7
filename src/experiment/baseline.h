// The NLLB-200 baseline beside an ablation: the same test rows translated once by a
// dedicated MT model (zero-shot, no examples), into OUT/baseline/ with the files a k folder
// has (rows.jsonl, results_baseline.csv, scores_baseline.json); the outputs of the run
// show it as a row of its own and as a line in the plots. Resumable as the k runs are: each
// translated row is appended to baseline/rows.jsonl and fsync'd. baseline/baseline_config.json
// records what decides its outputs; another baseline configuration is refused unless forced.
#pragma once
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/seq2seq.h"
#include "experiment/nllb_translate.h"

namespace pivotmt {

struct AblationConfig;
struct ParallelCorpus;

struct BaselineConfig {
  std::string model;        // NLLB model folder (resolved); empty: no baseline
  std::string weights_dir;  // its safetensors' folder when converted (nllb_weights_dir); empty: model
  std::string src_lang, tgt_lang;  // NLLB codes; empty: from the study's columns (nllb_code_for_column)
  bool from_pivot = false;         // translate the pivot sentence instead of the source
  std::string weights = "f16";     // f32 | f16 | int8 (storage; compute is F32)
  // Overrides of the model's generation_config.json (transformers' defaults where it is silent).
  std::optional<size_t> num_beams, max_length, no_repeat_ngram_size;
  std::optional<double> length_penalty;
  std::optional<EarlyStopping> early_stopping;
  size_t batch = 16;  // sentences decoded together (speed only)
  bool enabled() const { return !model.empty(); }
};

// The column the baseline translates and its two language codes, defaults applied and
// checked against the tokenizer (an unknown code names the closest ones).
using BaselineLanguages = NllbLanguages;
BaselineLanguages baseline_languages(const AblationConfig& config);

struct BaselineOutcome {
  size_t generated = 0, resumed = 0, truncated = 0;
  bool written = false;  // no baseline configured: nothing done
};

// Translates the rows of `slice` (test row indices) that OUT/baseline/rows.jsonl lacks.
// `generate_missing` false: a missing row is an error (a merge). on_progress(done, total)
// counts this slice's rows.
BaselineOutcome run_baseline(const AblationConfig& config, const ParallelCorpus& test, const std::vector<size_t>& slice,
                             bool force, bool generate_missing,
                             const std::function<void(size_t done, size_t total)>& on_progress = {});

// The baseline's identity (baseline_config.json) as written by run_baseline, and the
// configuration it describes (for a merge of shards).
nlohmann::json baseline_identity(const AblationConfig& config);
BaselineConfig baseline_from_identity(const nlohmann::json& identity);

// Settings and generation after the overrides (what the identity records).
Seq2SeqSettings baseline_settings(const AblationConfig& config, const BaselineLanguages& languages);

}  // namespace pivotmt
