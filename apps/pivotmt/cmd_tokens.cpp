// `pivotmt tokens`: token fertility per column and tokenizer, prompt lengths vs context.
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "core/error.h"
#include "experiment/token_stats.h"
#include "hub/hub_client.h"
#include "io/json_fields.h"
#include "io/json_file.h"
#include "io/table.h"

namespace pivotmt::cli {

void register_tokens(CLI::App& app) {
  auto* cmd = app.add_subcommand("tokens", "Token fertility per language column and tokenizer (the original's side study)");
  static std::vector<std::string> models, prompt_files;
  static std::string data, columns, baseline, prompt_column = "prompt";
  static bool as_json = false;
  cmd->add_option("--model,-m", models, "Model directories or hub ids (repeatable)")->required();
  cmd->add_option("--data", data, "CSV / TSV / JSONL file with the text columns")->required();
  cmd->add_option("--columns", columns, "Comma-separated columns")->required();
  cmd->add_option("--baseline", baseline, "Column the premium is measured against (default: the first)");
  cmd->add_option("--prompts", prompt_files, "Results files with a prompt column (repeatable)");
  cmd->add_option("--prompt-column", prompt_column, "Column of --prompts files")->capture_default_str();
  cmd->add_flag("--json", as_json, "Print one JSON object");
  cmd->callback([] {
    const Table table = read_table(data);
    std::vector<std::string> cols;
    for (size_t s = 0, e; s <= columns.size(); s = e + 1) {
      e = columns.find(',', s);
      if (e == std::string::npos) e = columns.size();
      if (e > s) cols.push_back(columns.substr(s, e - s));
    }
    if (cols.empty()) throw Error("--columns is empty");
    const std::string base = baseline.empty() ? cols[0] : baseline;
    if (std::find(cols.begin(), cols.end(), base) == cols.end()) cols.push_back(base);
    std::vector<std::vector<std::string>> values(cols.size());
    for (size_t c = 0; c < cols.size(); ++c) {
      const size_t idx = table.column(cols[c]);
      for (const auto& row : table.rows)
        if (row[idx] && !row[idx]->empty()) values[c].push_back(*row[idx]);
    }
    std::vector<std::string> prompts;
    for (const auto& f : prompt_files) {
      const Table t = read_table(f);
      const size_t idx = t.column(prompt_column);
      for (const auto& row : t.rows)
        if (row[idx]) prompts.push_back(*row[idx]);
    }

    nlohmann::json out = {{"data", data}, {"baseline", base}, {"models", nlohmann::json::array()}};
    std::string md;
    for (const auto& m : models) {
      const std::string dir = resolve_repo_path(m, RepoType::Model);
      const auto tok = load_tokenizer(dir);
      const auto stats = column_fertility(*tok, cols, values);
      double base_tpw = 0;
      for (const auto& s : stats)
        if (s.column == base) base_tpw = s.tokens_per_word();
      nlohmann::json jm = {{"model", m}, {"tokenizer", tokenizer_kind_name(tok->kind())}, {"columns", nlohmann::json::array()}};
      md += fmt::format("\n### {} ({} tokenizer, {} tokens)\n\n", m, tokenizer_kind_name(tok->kind()), tok->vocab_size());
      md += "| column | rows | words | chars | tokens | tokens/word | tokens/char | premium vs " + base + " |\n";
      md += "|---|---:|---:|---:|---:|---:|---:|---:|\n";
      for (const auto& s : stats) {
        const double premium = base_tpw > 0 ? (s.tokens_per_word() / base_tpw - 1.0) * 100.0 : 0.0;
        md += fmt::format("| {} | {} | {} | {} | {} | {:.3f} | {:.3f} | {:+.1f}% |\n", s.column, s.rows, s.words,
                          s.chars, s.tokens, s.tokens_per_word(), s.tokens_per_char(), premium);
        jm["columns"].push_back({{"column", s.column}, {"rows", s.rows}, {"words", s.words}, {"chars", s.chars},
                                 {"tokens", s.tokens}, {"tokens_per_word", s.tokens_per_word()},
                                 {"tokens_per_char", s.tokens_per_char()}, {"premium_percent", premium}});
      }
      if (!prompts.empty()) {
        size_t context = tok->model_max_length;
        const auto cfg = std::filesystem::path(dir) / "config.json";
        if (std::filesystem::exists(cfg)) {
          context = size_t(field_integer(read_json_file(cfg.string()), "max_position_embeddings", cfg.string(),
                                         int64_t(context), 1));
        }
        const auto p = prompt_lengths(*tok, prompts, context);
        md += fmt::format("\nprompts: {}, tokens p50 {:.0f}, p90 {:.0f}, p95 {:.0f}, p99 {:.0f}, max {:.0f}; longer than "
                          "the context ({}): {} ({:.1f}%)\n",
                          p.count, p.p50, p.p90, p.p95, p.p99, p.max, context ? std::to_string(context) : "unknown",
                          p.over_context, p.count ? 100.0 * double(p.over_context) / double(p.count) : 0.0);
        jm["prompts"] = {{"count", p.count}, {"p50", p.p50}, {"p90", p.p90}, {"p95", p.p95}, {"p99", p.p99},
                         {"max", p.max}, {"mean", p.mean}, {"context", context}, {"over_context", p.over_context}};
      }
      out["models"].push_back(jm);
    }
    if (as_json) fmt::print("{}\n", out.dump(2));
    else fmt::print("# Token fertility: {}\n{}", data, md);
  });
}

}  // namespace pivotmt::cli
