#include <fmt/format.h>

#include "backends/backend.h"
#include "commands.h"
#include "core/error.h"
#include "io/table.h"
#include "comet_options.h"
#include "metrics/comet.h"
#include "metrics/report.h"
#include "text/unicode.h"

namespace pivotmt::cli {
namespace {

struct ScoreArgs {
  std::string hyp_file, baseline_file, src_file, source_column;
  CometArgs comet;
  std::string device = "auto";  // COMET's encoder
  std::vector<std::string> ref_files;
  std::string table_file, hyp_column, baseline_column, format;
  std::vector<std::string> ref_columns;
  std::string metrics = "bleu,chrf,chrf++,ter";
  bool json = false, paired_bs = false, paired_ar = false, lowercase = false, effective_order = false;
  bool confidence = false;
  int confidence_n = 1000, paired_n = 0, width = 1;
  uint64_t seed = 12345;
  std::optional<double> smooth_value;
  metrics::ScoringOptions options;
};

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(',', start);
    if (end == std::string::npos) end = s.size();
    if (end > start) out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

// Table input: the original pipeline's filter leaves out rows whose hypothesis or any
// reference (or the baseline) is empty or only whitespace; the count is reported.
void load_table(const ScoreArgs& a, metrics::ScoreRequest& r, nlohmann::json& rows, std::vector<std::string>& sources) {
  const Table t = a.format.empty() ? read_table(a.table_file)
                                   : read_table(a.table_file, a.format == "csv"   ? TableFormat::Csv
                                                              : a.format == "tsv" ? TableFormat::Tsv
                                                                                  : TableFormat::Jsonl);
  if (a.hyp_column.empty() || a.ref_columns.empty())
    throw Error("--csv needs --hyp-column and at least one --ref-column");
  const size_t hyp = t.column(a.hyp_column);
  std::vector<size_t> refs;
  for (const auto& c : a.ref_columns) refs.push_back(t.column(c));
  std::optional<size_t> baseline, source;
  if (!a.baseline_column.empty()) baseline = t.column(a.baseline_column);
  if (!a.source_column.empty()) source = t.column(a.source_column);
  r.refs.assign(refs.size(), {});
  size_t skipped = 0;
  auto blank = [](const std::optional<std::string>& v) {
    return !v || v->find_first_not_of(" \t\r\n\v\f") == std::string::npos;
  };
  for (const auto& row : t.rows) {
    bool skip = blank(row[hyp]) || (baseline && blank(row[*baseline])) || (source && blank(row[*source]));
    for (size_t c : refs) skip = skip || blank(row[c]);
    if (skip) {
      ++skipped;
      continue;
    }
    r.hyps.push_back(py_rstrip(utf8_to_u32(*row[hyp])));
    if (source) sources.push_back(u32_to_utf8(py_strip(utf8_to_u32(*row[*source]))));
    for (size_t k = 0; k < refs.size(); ++k) r.refs[k].push_back(py_rstrip(utf8_to_u32(*row[refs[k]])));
    if (baseline) {
      if (!r.baseline) r.baseline.emplace();
      r.baseline->push_back(py_rstrip(utf8_to_u32(*row[*baseline])));
    }
  }
  rows = {{"total", t.rows.size()}, {"scored", r.hyps.size()}, {"skipped_empty", skipped}};
  if (r.hyps.empty()) throw Error(fmt::format("{}: no row left to score ({} rows, all with an empty field)", t.source, t.rows.size()));
  r.system_name = a.hyp_column;
  r.baseline_name = a.baseline_column;
}

void run(const ScoreArgs& a) {
  metrics::ScoreRequest r;
  r.options = a.options;
  r.options.lowercase = a.lowercase;
  r.options.effective_order = a.effective_order;
  r.options.smooth_value = a.smooth_value;
  r.metrics = split_list(a.metrics);
  // COMET is a model, not a sacrebleu metric: taken out of the list and run beside them.
  const bool comet = std::erase(r.metrics, std::string("comet")) > 0;
  if (comet && a.comet.model.empty())
    throw Error("--metrics comet needs --comet-model (a hub id such as Unbabel/wmt22-comet-da, or a directory)");
  if (!comet && a.comet.weights != "f32") throw Error("--comet-weights without --metrics comet");
  for (const auto& m : r.metrics) metrics::metric_key(m);  // validates the names early
  r.confidence_n = a.confidence ? a.confidence_n : 0;
  r.paired_n = a.paired_n;
  r.seed = a.seed;
  r.width = a.width;
  if (a.paired_bs && a.paired_ar) throw Error("choose one of --paired-bs and --paired-ar");
  r.paired = a.paired_bs   ? metrics::ScoreRequest::Paired::Bootstrap
             : a.paired_ar ? metrics::ScoreRequest::Paired::Randomization
                           : metrics::ScoreRequest::Paired::None;
  nlohmann::json rows;
  std::vector<std::string> sources;
  if (!a.table_file.empty()) {
    if (!a.hyp_file.empty() || !a.ref_files.empty()) throw Error("use either --csv or --hyp/--ref, not both");
    if (comet && a.source_column.empty()) throw Error("--metrics comet with --csv needs --source-column");
    load_table(a, r, rows, sources);
    if (rows["skipped_empty"].get<size_t>() > 0)
      fmt::print(stderr, "{}: left out {} of {} rows with an empty hypothesis or reference\n", a.table_file,
                 rows["skipped_empty"].get<size_t>(), rows["total"].get<size_t>());
  } else {
    if (a.hyp_file.empty() || a.ref_files.empty()) throw Error("give --hyp FILE and --ref FILE (or --csv FILE ...)");
    r.hyps = metrics::read_text_lines(a.hyp_file);
    for (const auto& f : a.ref_files) {
      r.refs.push_back(metrics::read_text_lines(f));
      if (r.refs.back().size() != r.hyps.size())
        throw Error(fmt::format("{} has {} lines but {} has {}", f, r.refs.back().size(), a.hyp_file, r.hyps.size()));
    }
    if (!a.baseline_file.empty()) r.baseline = metrics::read_text_lines(a.baseline_file);
    if (comet) {
      if (a.src_file.empty()) throw Error("--metrics comet needs --src FILE (the source sentences, one per line)");
      for (const auto& line : metrics::read_text_lines(a.src_file)) sources.push_back(u32_to_utf8(py_strip(line)));
      if (sources.size() != r.hyps.size())
        throw Error(fmt::format("{} has {} lines but {} has {}", a.src_file, sources.size(), a.hyp_file, r.hyps.size()));
    }
    r.system_name = a.hyp_file;
    r.baseline_name = a.baseline_file;
  }
  nlohmann::json result = r.metrics.empty() ? nlohmann::json::object() : metrics::run_scoring(r);
  if (comet) {
    const auto where = resolve_comet(a.comet);
    const comet::Model model(where.model_dir, where.encoder_dir, a.comet.model, resolve_device(a.device), where.weights);
    // Stripped at both ends, as comet-score reads its files (sacrebleu's reading above only
    // strips the right).
    std::vector<std::string> mt, ref;
    for (const auto& h : r.hyps) mt.push_back(u32_to_utf8(py_strip(h)));
    for (const auto& h : r.refs.at(0)) ref.push_back(u32_to_utf8(py_strip(h)));
    const auto scores = model.score(sources, mt, ref);
    if (scores.truncated > 0)
      fmt::print(stderr, "COMET: {} sentence(s) cut to {} tokens, as unbabel-comet cuts them\n", scores.truncated, model.max_tokens());
    result["COMET"] = {{"name", "COMET"},
                       {"score", scores.system},
                       {"segments", scores.segments},
                       {"model", a.comet.model},
                       {"truncated", scores.truncated},
                       {"device", model.describe_device()},
                       {"weights", a.comet.weights},
                       {"formatted", fmt::format("COMET = {:.4f} ({} segments, {}{})", scores.system,
                                                 scores.segments.size(), a.comet.model,
                                                 model.weights() == DType::F32 ? "" : ", F16 weights")}};
  }
  if (!rows.is_null()) result["rows"] = rows;
  if (a.json) fmt::print("{}\n", result.dump(2));
  else fmt::print("{}", metrics::format_scoring_text(result));
}
}  // namespace

void register_score(CLI::App& app) {
  auto* cmd = app.add_subcommand("score", "Score translations: BLEU, chrF, chrF++ and TER exactly as sacrebleu 2.6, COMET as unbabel-comet");
  static ScoreArgs a;
  auto* hyp = cmd->add_option("--hyp", a.hyp_file, "Hypotheses, one per line");
  cmd->add_option("--ref", a.ref_files, "References, one per line (repeat for several)");
  cmd->add_option("--baseline", a.baseline_file, "Baseline system (text input) for --paired-bs / --paired-ar");
  auto* csv = cmd->add_option("--csv", a.table_file, "A CSV, TSV or JSONL file (by extension) instead of text files");
  csv->excludes(hyp);
  cmd->add_option("--format", a.format, "Table format when the extension does not say: csv, tsv, jsonl")
      ->check(CLI::IsMember({"csv", "tsv", "jsonl"}));
  cmd->add_option("--hyp-column", a.hyp_column, "Hypothesis column (table input)");
  cmd->add_option("--ref-column", a.ref_columns, "Reference column (repeatable)");
  cmd->add_option("--baseline-column", a.baseline_column, "Baseline column (table input)");
  cmd->add_option("--metrics,-m", a.metrics, "Comma-separated: bleu,chrf,chrf++,ter,comet")->capture_default_str();
  cmd->add_option("--src", a.src_file, "Sources, one per line (COMET)");
  cmd->add_option("--source-column", a.source_column, "Source column (table input, COMET)");
  add_comet_options(cmd, a.comet);
  cmd->add_option("--device", a.device, "COMET's encoder: auto | cpu | cuda[:N] (auto: cuda:0 when a GPU is visible)")
      ->capture_default_str();
  cmd->add_flag("--json", a.json, "Print one JSON object");
  cmd->add_option("--width,-w", a.width, "Decimals in text output")->capture_default_str();
  auto& o = a.options;
  cmd->add_option("--tokenize,-t", o.tokenize, "BLEU tokenizer: 13a, intl, char, zh, none, flores101, flores200")
      ->capture_default_str();
  cmd->add_option("--spm-model", o.spm_model, "SentencePiece model for flores101/flores200 (never downloaded)");
  cmd->add_flag("--lowercase", a.lowercase, "Case-insensitive BLEU and chrF");
  cmd->add_option("--smooth-method", o.smooth_method, "BLEU smoothing: exp, floor, add-k, none")
      ->check(CLI::IsMember({"exp", "floor", "add-k", "none"}))
      ->capture_default_str();
  cmd->add_option("--smooth-value", a.smooth_value, "Value for floor / add-k");
  cmd->add_option("--max-ngram-order", o.max_ngram_order, "BLEU n-gram order")->capture_default_str();
  cmd->add_flag("--effective-order", a.effective_order, "BLEU effective order (for sentence scores)");
  cmd->add_option("--chrf-char-order", o.chrf_char_order, "chrF character order (1..6)")->capture_default_str();
  cmd->add_option("--chrf-word-order", o.chrf_word_order, "chrF++ word order (1..6)")->capture_default_str();
  cmd->add_option("--chrf-beta", o.chrf_beta, "chrF beta")->capture_default_str();
  cmd->add_flag("--chrf-whitespace", o.chrf_whitespace, "Keep whitespace in chrF character n-grams");
  cmd->add_flag("--chrf-eps-smoothing", o.chrf_eps_smoothing, "chrF++.py-style epsilon smoothing");
  cmd->add_flag("--ter-normalized", o.ter.normalized, "TER: Tercom normalisation");
  cmd->add_flag("--ter-no-punct", o.ter.no_punct, "TER: remove punctuation");
  cmd->add_flag("--ter-asian-support", o.ter.asian_support, "TER: split CJK characters");
  cmd->add_flag("--ter-case-sensitive", o.ter.case_sensitive, "TER: do not lowercase");
  cmd->add_flag("--confidence", a.confidence, "95% bootstrap confidence intervals");
  cmd->add_option("--confidence-n", a.confidence_n, "Bootstrap resamples")->capture_default_str();
  cmd->add_flag("--paired-bs", a.paired_bs, "Paired bootstrap test against --baseline");
  cmd->add_flag("--paired-ar", a.paired_ar, "Paired approximate randomisation test against --baseline");
  cmd->add_option("--paired-n", a.paired_n, "Trials (default 1000 bootstrap, 10000 randomisation)");
  cmd->add_option("--seed", a.seed, "Random seed (sacrebleu's default 12345)")->capture_default_str();
  cmd->callback([] { run(a); });
}

}  // namespace pivotmt::cli
