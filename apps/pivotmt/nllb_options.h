// NLLB-200 options: `translate` with an NLLB model (--src-lang, --tgt-lang, --beams, ...) and
// the ablation's baseline (--baseline-model and the same options prefixed "baseline-"); hub
// ids downloaded with the files NLLB needs (pytorch_model.bin when the repo has no
// safetensors, converted once under $HF_HOME/pivotmt/nllb).
#pragma once
#include <optional>
#include <string>

#include <CLI/CLI.hpp>

#include "experiment/baseline.h"

namespace pivotmt::cli {

struct NllbArgs {
  std::string src_lang, tgt_lang, early_stopping;
  std::optional<size_t> beams, max_length, no_repeat_ngram_size;
  std::optional<double> length_penalty;
  bool from_pivot = false;
  size_t batch = 16;
  std::vector<CLI::Option*> options;  // those registered (to tell whether any was given)
};

// Registers --{prefix}src-lang, --{prefix}tgt-lang, --{prefix}beams, --{prefix}max-length,
// --{prefix}length-penalty, --{prefix}no-repeat-ngram-size, --{prefix}early-stopping,
// --{prefix}from-pivot and --{prefix}batch.
void add_nllb_options(CLI::App* cmd, NllbArgs& args, const std::string& prefix);
bool any_nllb_option_given(const NllbArgs& args);

// A model argument (directory or hub id) as a local folder, downloading NLLB's files for a
// hub id; `weights_dir` receives the folder with its safetensors (converted when needed).
std::string resolve_nllb_model(const std::string& arg, std::string* weights_dir);

// --early-stopping's value ("" when not given).
std::optional<EarlyStopping> parse_early_stopping(const std::string& text);
// The options given, over `settings` (the model's generation_config).
void apply_nllb_overrides(const NllbArgs& args, Seq2SeqSettings& settings);

// The baseline configuration from these options (model resolved, languages as given).
BaselineConfig baseline_config(const std::string& model, const std::string& weights, const NllbArgs& args);

}  // namespace pivotmt::cli
