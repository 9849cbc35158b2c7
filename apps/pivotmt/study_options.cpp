#include "study_options.h"

#include <cmath>
#include <filesystem>
#include <functional>

#include <toml++/toml.h>

#include <fmt/format.h>

#include "core/error.h"
#include "hub/hub_client.h"

namespace pivotmt::cli {

void add_study_options(CLI::App* cmd, StudyArgs& a) {
  AblationConfig& c = a.config;
  cmd->add_option("--data", c.data, "Corpus: a directory of splits, a table file or a hub dataset id");
  cmd->add_option("--train-split", c.train_split, "Split the examples come from")->capture_default_str();
  cmd->add_option("--test-split", c.test_split, "Split that is translated")->capture_default_str();
  cmd->add_option("--pivot", c.pivot, "Pivot column")->capture_default_str();
  cmd->add_option("--source", c.source, "Source column")->capture_default_str();
  cmd->add_option("--target", c.target, "Target column")->capture_default_str();
  cmd->add_option("--pivot-label", c.labels.pivot, "{P} in the prompt")->capture_default_str();
  cmd->add_option("--target-label", c.labels.target, "{T} in the prompt")->capture_default_str();
  cmd->add_option("--source-code", c.labels.source_code, "{S} of the no-pivot prompt")->capture_default_str();
  cmd->add_option("--target-code", c.labels.target_code, "{T} of the no-pivot prompt")->capture_default_str();
  cmd->add_option("--variant", a.variant, "pivot | no-pivot | custom (--prompt-template)")
      ->check(CLI::IsMember({"pivot", "no-pivot", "custom"}))
      ->capture_default_str();
  cmd->add_option("--prompt-template", c.labels.custom_template,
                  "User message of the custom variant: {pivot} {source} {P} {T} {S} are replaced ({{ for a brace)");
  cmd->add_option("--retriever", c.retriever, "minilm | minilm-hnsw | bm25 | bm25-char | chrf | random")
      ->check(CLI::IsMember({"minilm", "minilm-hnsw", "bm25", "bm25-char", "chrf", "random"}))
      ->capture_default_str();
  cmd->add_option("--encoder", c.encoder, "Sentence encoder for minilm (directory or hub id)");
  // One value per flag (-m A -m B), so a CONFIG positional after it is not taken for a model.
  cmd->add_option("--model,-m", a.models, "Model directory or hub id (ablate: repeat the flag for several, run one after another)")
      ->allow_extra_args(false);
}

void check_sampling_options(CLI::Option* temperature, CLI::Option* top_k, CLI::Option* top_p) {
  // A value that does not parse as a number is CLI11's own conversion error, reported after.
  auto number_check = [](const char* expected, auto ok) {
    return CLI::Validator(
        [expected, ok](std::string& value) -> std::string {
          try {
            size_t used = 0;
            const double v = std::stod(value, &used);
            if (used == value.size() && ok(v)) return "";
          } catch (const std::exception&) {
          }
          return fmt::format("expected {}, got {}", expected, value);
        },
        "", expected);
  };
  temperature->check(number_check("a number > 0 (or --greedy)", [](double v) { return v > 0 && std::isfinite(v); }));
  top_k->check(number_check("a whole number >= 0 (0: no top-k)", [](double v) { return v >= 0; }));
  top_p->check(number_check("a number in (0, 1]", [](double v) { return v > 0 && v <= 1; }));
}

void add_generation_options(CLI::App* cmd, StudyArgs& a) {
  AblationConfig& c = a.config;
  cmd->add_flag("--greedy", c.greedy, "Greedy decoding instead of the original's sampling");
  check_sampling_options(cmd->add_option("--temperature", c.temperature, "Sampling temperature")->capture_default_str(),
                         cmd->add_option("--top-k", c.top_k, "Top-k")->capture_default_str(),
                         cmd->add_option("--top-p", c.top_p, "Top-p")->capture_default_str());
  cmd->add_option("--max-new-tokens", c.max_new_tokens, "Tokens per translation at most")->capture_default_str();
  cmd->add_option("--seed", c.seed, "Seed (row r samples with seed + r)")->capture_default_str();
  cmd->add_option("--context-policy", c.context_policy, "error | truncate-left | allow")
      ->check(CLI::IsMember({"error", "truncate-left", "allow"}))
      ->capture_default_str();
  cmd->add_option("--max-batch", c.max_batch, "Sequences generated together")->capture_default_str();
  cmd->add_option("--weights,--dtype", c.weights,
                  "Weight storage: f16 | f32 | int8 (weight-only, per output channel: a 7B model in ~7 GB) | q8 "
                  "(int8 weights and int8 activations per 256 values, VNNI where present: fastest on a CPU) | nf4 "
                  "(bitsandbytes' 4-bit, QLoRA's base: ~4 GB; CPU) | gguf (a GGUF model's Q8_0 / Q4_0 / Q4_1 and "
                  "Q4_K / Q5_K / Q6_K weights multiplied as the file stores them, the rest F16: the file's size in memory; "
                  "CPU) | gguf-q8 (the Q8_0 / Q4_0 / Q4_1 blocks times int8 activations, as llama.cpp computes them: "
                  "faster, less exact; K-quants as with gguf; CPU)")
      ->check(CLI::IsMember({"f16", "f32", "int8", "q8", "nf4", "gguf", "gguf-q8"}))
      ->capture_default_str();
  cmd->add_option("--adapter", c.adapter, "A PEFT LoRA adapter directory (pivotmt finetune's --out), applied unmerged (CPU)");
  cmd->add_option("--device", a.config.device, "auto | cpu | cuda[:N] (auto: cuda:0 when a GPU is visible and the weights are f16)")
      ->capture_default_str();
}

void apply_config_file(CLI::App& cmd, const std::string& path, const CLI::App* sibling) {
  toml::table file;
  try {
    file = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    throw Error(fmt::format("{}:{}:{}: {}", path, e.source().begin.line, e.source().begin.column, e.description()));
  }
  // A value as the command line would spell it.
  auto spelled = [&](const toml::node& n, const std::string& key) -> std::string {
    if (n.is_string()) return *n.value<std::string>();
    if (n.is_integer()) return std::to_string(*n.value<int64_t>());
    if (n.is_floating_point()) return fmt::format("{}", *n.value<double>());
    if (n.is_boolean()) return *n.value<bool>() ? "true" : "false";
    throw Error(fmt::format("{}:{}: {}: expected a string, number, boolean or an array of them", path,
                            n.source().begin.line, key));
  };
  // Tables only group keys ([generation] max-new-tokens = 200 is max-new-tokens).
  std::function<void(const toml::table&)> apply = [&](const toml::table& table) {
    for (auto&& [key, node] : table) {
      const std::string name(key.str());
      if (const auto* inner = node.as_table()) {
        apply(*inner);
        continue;
      }
      CLI::Option* opt = cmd.get_option_no_throw("--" + name);
      if (!opt && sibling && sibling->get_option_no_throw("--" + name)) continue;
      if (!opt)
        throw Error(fmt::format("{}:{}: unknown key '{}' (keys are the long option names of pivotmt {} --help)", path,
                                node.source().begin.line, name, cmd.get_name()));
      if (opt->count() > 0) continue;  // the command line wins
      std::vector<std::string> values;
      if (const auto* array = node.as_array())
        for (const auto& element : *array) values.push_back(spelled(element, name));
      else
        values.push_back(spelled(node, name));
      try {
        opt->add_result(values);
        opt->run_callback();
      } catch (const CLI::Error& e) {
        throw Error(fmt::format("{}:{}: {}: {}", path, node.source().begin.line, name, e.what()));
      }
    }
  };
  apply(file);
}

std::string model_slug(const std::string& model) {
  std::string m = model;
  while (!m.empty() && m.back() == '/') m.pop_back();
  const auto slash = m.rfind('/');
  return slash == std::string::npos ? m : m.substr(slash + 1);
}

AblationConfig resolve_study(const StudyArgs& args, const std::vector<std::string>& needs, size_t model) {
  AblationConfig config = args.config;
  if (model < args.models.size()) config.model = args.models[model];
  for (const auto& name : needs) {
    const std::string& value = name == "data" ? config.data : name == "model" ? config.model : config.out;
    if (value.empty()) throw Error(fmt::format("--{} is required (on the command line or in the config file)", name));
  }
  config.variant = parse_prompt_variant(args.variant);
  if (config.variant == PromptVariant::Custom) custom_user_message(config.labels, "", "");  // template errors now
  config.model = resolve_repo_path(config.model, RepoType::Model);
  if (!config.encoder.empty()) config.encoder = resolve_repo_path(config.encoder, RepoType::Model);
  if (!std::filesystem::exists(config.data))
    config.data = resolve_repo_path(config.data, RepoType::Dataset, {"*.parquet", "*.jsonl", "*.json", "*.csv", "*.tsv"});
  return config;
}

}  // namespace pivotmt::cli
