// The options `pivotmt ablate`, `translate` and `finetune` share (data, columns, labels,
// prompt variant, retriever, model; generation for the first two), and reading them from a
// TOML file (toml++):
// every key is an option's long name, tables only group keys, and the command line wins
// over the file.
#pragma once
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "experiment/ablation.h"

namespace pivotmt::cli {

struct StudyArgs {
  AblationConfig config;
  std::string variant = "pivot";
  std::vector<std::string> models;  // --model, one or more
  std::string config_file;
};

// The study's data, columns, labels, prompt variant, retriever and --model (ablate,
// translate, finetune).
void add_study_options(CLI::App* cmd, StudyArgs& args);
// Generation: decoding, --seed, context policy, batch, --weights (alias --dtype), --adapter,
// --device (ablate and translate; finetune takes only its own --seed).
void add_generation_options(CLI::App* cmd, StudyArgs& args);

// The ranges sampling accepts (temperature > 0, top-k >= 0, top-p in (0, 1]), checked when
// the command line is parsed: a usage error before any model is loaded (generate, ablate,
// translate), where the sampler would refuse them only at the first token.
void check_sampling_options(CLI::Option* temperature, CLI::Option* top_k, CLI::Option* top_p);

// Options from a TOML file for every option the command line did not give. Keys that are
// options of `sibling` but not of `cmd` are skipped (translate reads ablate's configs).
void apply_config_file(CLI::App& cmd, const std::string& path, const CLI::App* sibling = nullptr);

// The configuration for models[model] with the variant parsed and hub ids resolved to
// local folders (downloading when needed); `needs` names the options that must be set.
AblationConfig resolve_study(const StudyArgs& args, const std::vector<std::string>& needs, size_t model = 0);

// A folder name for a model: the last part of its hub id or path.
std::string model_slug(const std::string& model);

}  // namespace pivotmt::cli
