// `pivotmt ablate [CONFIG.toml] [options]`: the k-ablation study, resumable. A TOML file
// (parsed by CLI11's own config reader) sets any option by its long name; the command
// line overrides the file.
#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <memory>

#include "commands.h"
#include "core/error.h"
#include "core/progress.h"
#include "experiment/ablation.h"
#include "experiment/cross_report.h"
#include "experiment/plots.h"
#include "hub/hub_client.h"

namespace pivotmt::cli {
namespace {

// "0 1 3", "0,5,10" or "0..10" into k values.
std::vector<size_t> parse_ks(const std::vector<std::string>& items) {
  std::vector<size_t> ks;
  for (const auto& item : items) {
    const auto dots = item.find("..");
    try {
      if (dots == std::string::npos) {
        ks.push_back(std::stoul(item));
      } else {
        const size_t a = std::stoul(item.substr(0, dots)), b = std::stoul(item.substr(dots + 2));
        if (a > b) throw Error("empty range");
        for (size_t k = a; k <= b; ++k) ks.push_back(k);
      }
    } catch (const std::exception&) {
      throw Error(fmt::format("-k {}: expected numbers or a range such as 0..10", item));
    }
  }
  return ks;
}

// Options from a TOML file, for every option the command line did not give.
void apply_config_file(CLI::App& cmd, const std::string& path) {
  std::vector<CLI::ConfigItem> items;
  try {
    items = CLI::ConfigTOML().from_file(path);
  } catch (const CLI::Error& e) {
    throw Error(fmt::format("{}: {}", path, e.what()));
  }
  for (const auto& item : items) {
    if (item.name == "++" || item.name == "--") continue;  // section markers
    CLI::Option* opt = cmd.get_option_no_throw("--" + item.name);
    if (!opt || item.name == "CONFIG")
      throw Error(fmt::format("{}: unknown key '{}' (keys are the long option names of pivotmt ablate --help)", path,
                              item.fullname()));
    if (opt->count() > 0) continue;  // the command line wins
    try {
      opt->add_result(item.inputs);
      opt->run_callback();
    } catch (const CLI::Error& e) {
      throw Error(fmt::format("{}: {}: {}", path, item.name, e.what()));
    }
  }
}

}  // namespace

void register_ablate(CLI::App& app) {
  auto* cmd = app.add_subcommand("ablate", "Run the k-ablation study (retrieve, prompt, generate, score), resumable");
  static AblationConfig c;
  static std::vector<std::string> ks = {"0", "1", "3", "5", "7", "10"};
  static std::string variant = "pivot";
  static bool quick = false, force = false;
  static std::string config_file;
  cmd->add_option("CONFIG", config_file, "TOML file of options (keys: the long option names, e.g. max-new-tokens = 200)");
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
  cmd->add_option("--variant", variant, "pivot | no-pivot")->check(CLI::IsMember({"pivot", "no-pivot"}))->capture_default_str();
  cmd->add_option("--retriever", c.retriever, "minilm | minilm-hnsw | bm25 | bm25-char | chrf | random")
      ->check(CLI::IsMember({"minilm", "minilm-hnsw", "bm25", "bm25-char", "chrf", "random"}))
      ->capture_default_str();
  cmd->add_option("--encoder", c.encoder, "Sentence encoder for minilm (directory or hub id)");
  cmd->add_option("--model,-m", c.model, "Model directory or hub id");
  cmd->add_option("-k,--k", ks, "k values: numbers and ranges (0..10)")->capture_default_str();
  cmd->add_flag("--quick", quick, "k = 0 5 10");
  cmd->add_flag("--greedy", c.greedy, "Greedy decoding instead of the original's sampling");
  cmd->add_option("--temperature", c.temperature, "Sampling temperature")->capture_default_str();
  cmd->add_option("--top-k", c.top_k, "Top-k")->capture_default_str();
  cmd->add_option("--top-p", c.top_p, "Top-p")->capture_default_str();
  cmd->add_option("--max-new-tokens", c.max_new_tokens, "Tokens per translation at most")->capture_default_str();
  cmd->add_option("--seed", c.seed, "Seed (row r samples with seed + r)")->capture_default_str();
  cmd->add_option("--context-policy", c.context_policy, "error | truncate-left | allow")
      ->check(CLI::IsMember({"error", "truncate-left", "allow"}))
      ->capture_default_str();
  cmd->add_option("--limit", c.limit, "Test rows (0: all)")->capture_default_str();
  cmd->add_option("--max-batch", c.max_batch, "Rows generated together (and stored together)")->capture_default_str();
  cmd->add_option("--out,-o", c.out, "Output directory");
  cmd->add_flag("--force", force, "Replace a run of another configuration in --out");
  cmd->callback([cmd] {
    if (!config_file.empty()) apply_config_file(*cmd, config_file);
    for (const auto& [name, value] : {std::pair<const char*, const std::string&>{"--data", c.data}, {"--model", c.model}, {"--out", c.out}})
      if (value.empty()) throw Error(fmt::format("ablate: {} is required (on the command line or in the config file)", name));
    AblationConfig config = c;
    config.ks = quick ? std::vector<size_t>{0, 5, 10} : parse_ks(ks);
    config.variant = variant == "pivot" ? PromptVariant::Pivot : PromptVariant::NoPivot;
    config.model = resolve_repo_path(config.model, RepoType::Model);
    if (!config.encoder.empty()) config.encoder = resolve_repo_path(config.encoder, RepoType::Model);
    if (!std::filesystem::exists(config.data))
      config.data = resolve_repo_path(config.data, RepoType::Dataset, {"*.parquet", "*.jsonl", "*.json", "*.csv", "*.tsv"});
    std::unique_ptr<Progress> bar;
    size_t bar_k = size_t(-1);
    const auto outcome = run_ablation(config, force, [&](const AblationProgress& p) {
      if (p.k != bar_k) {
        if (bar) bar->finish();
        bar = std::make_unique<Progress>(fmt::format("k={}", p.k), p.total, ProgressUnit::Items);
        bar_k = p.k;
      }
      bar->set(p.done);
    });
    if (bar) bar->finish();
    fmt::print("{}: {} rows generated, {} resumed from earlier runs; summary in {}/ablation_summary.csv\n", config.out,
               outcome.rows_generated, outcome.rows_resumed, config.out);
  });
}

void register_report(CLI::App& app) {
  auto* cmd = app.add_subcommand("report", "Cross-run tables (per metric: runs x k, best in bold; best k) from ablation folders");
  static std::vector<std::string> dirs;
  static std::string target, out, plots;
  cmd->add_option("DIR", dirs, "Ablation output folders (pivotmt's or the original pipeline's)")->required();
  cmd->add_option("--target", target, "Reference column (default: from the folder's config, else gom / tn)");
  cmd->add_option("--out,-o", out, "Also write the Markdown here");
  cmd->add_option("--plots", plots, "Write each run's figures here ({run}_plots / {run}_bars, PNG and SVG)");
  cmd->callback([] {
    std::vector<RunScores> runs;
    for (const auto& d : dirs) runs.push_back(score_run_folder(d, target));
    if (!plots.empty()) {
      std::filesystem::create_directories(plots);
      for (const auto& r : runs) {
        const auto series = bleu_chrf_series(r.by_k);
        const std::string stem = (std::filesystem::path(plots) / r.name).string();
        plot_metrics_vs_k(series, r.name + " (target " + r.target + ")", stem + "_plots");
        plot_grouped_bars(series, r.name + " (target " + r.target + ")", stem + "_bars");
      }
    }
    const std::string md = "# Cross-run analysis\n\nScores recomputed from each folder's results_k*.csv "
                           "(sacrebleu defaults; rows with an empty translation or reference left out).\n\n" +
                           cross_run_markdown(runs);
    fmt::print("{}", md);
    if (!out.empty()) {
      std::ofstream f(out);
      f << md;
      if (!f) throw Error("cannot write " + out);
    }
  });
}

}  // namespace pivotmt::cli
