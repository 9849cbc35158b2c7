#include "experiment/cross_report.h"

#include <algorithm>
#include <filesystem>
#include <optional>
#include <map>
#include <set>

#include <fmt/format.h>

#include "core/error.h"
#include "experiment/ablation.h"
#include "io/json_file.h"
#include "io/table.h"
#include "metrics/comet.h"
#include "text/unicode.h"

namespace pivotmt {
namespace fs = std::filesystem;

namespace {
const std::vector<std::string> kMetrics = {"BLEU", "chrF", "chrF++", "TER"};
}

RunScores score_run_folder(const std::string& dir, const std::string& target, const comet::Model* comet,
                           const std::string& source) {
  if (!fs::is_directory(dir)) throw Error(fmt::format("{}: not a directory", dir));
  RunScores run;
  run.name = fs::path(dir).lexically_normal().filename().string();
  if (run.name.empty()) run.name = fs::path(dir).lexically_normal().parent_path().filename().string();
  run.target = target;
  std::string source_column = source;
  if (fs::exists(fs::path(dir) / "ablation_config.json")) {
    const auto cfg = read_json_file((fs::path(dir) / "ablation_config.json").string());
    if (run.target.empty()) run.target = cfg.value("target", "");
    if (source_column.empty()) source_column = cfg.value("source", "");
  }
  // One results file's scores (and COMET: computed, or the folder's own score); returns the
  // rows left out.
  const auto score_file = [&](const fs::path& csv, const fs::path& scores_json, std::map<std::string, double>& into) {
    const Table t = read_table(csv.string());
    if (run.target.empty()) {
      for (const char* guess : {"gom", "tn", "translation.tn"})
        if (std::find(t.columns.begin(), t.columns.end(), guess) != t.columns.end()) {
          run.target = guess;
          break;
        }
      if (run.target.empty())
        throw Error(fmt::format("{}: cannot tell the target column (columns: {}); give --target", csv.string(),
                                fmt::join(t.columns, ", ")));
    }
    const size_t ref_col = t.column(run.target), hyp_col = t.column("response");
    std::vector<std::string> hyps, refs;
    for (const auto& row : t.rows) {
      hyps.push_back(py_strip_utf8(row[hyp_col].value_or("")));
      refs.push_back(row[ref_col].value_or(""));
    }
    size_t failed = 0;
    const auto scores = score_translations(hyps, refs, &failed);
    if (scores.is_null()) return failed;
    for (const auto& m : kMetrics) into[m] = scores[m]["score"].get<double>();
    if (comet) {
      // The original's source columns: mar (Konkani), en (Tunisian).
      if (source_column.empty())
        for (const char* guess : {"mar", "en", "translation.en"})
          if (std::find(t.columns.begin(), t.columns.end(), guess) != t.columns.end()) {
            source_column = guess;
            break;
          }
      if (source_column.empty())
        throw Error(fmt::format("{}: cannot tell the source column for COMET (columns: {}); give --source", csv.string(),
                                fmt::join(t.columns, ", ")));
      const size_t src_col = t.column(source_column);
      std::vector<std::string> src, mt, ref;
      for (size_t i = 0; i < t.rows.size(); ++i) {
        if (hyps[i].empty() || refs[i].empty()) continue;  // as the other metrics
        src.push_back(t.rows[i][src_col].value_or(""));
        mt.push_back(hyps[i]);
        ref.push_back(refs[i]);
      }
      into["COMET"] = comet->score(src, mt, ref).system;
    } else if (fs::exists(scores_json)) {
      // COMET is a model run: without one, the folder's own score is shown when it has one.
      const auto j = read_json_file(scores_json.string());
      if (j.contains("COMET Score") && j["COMET Score"].is_number()) into["COMET"] = j["COMET Score"].get<double>();
    }
    return failed;
  };
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (!e.is_directory() || name.rfind("k_", 0) != 0) continue;
    size_t k = 0;
    try {
      k = std::stoul(name.substr(2));
    } catch (const std::exception&) {
      continue;
    }
    const fs::path csv = e.path() / fmt::format("results_k{}.csv", k);
    if (!fs::exists(csv)) continue;
    std::map<std::string, double> scores;
    run.failed[k] = score_file(csv, e.path() / fmt::format("scores_k{}.json", k), scores);
    if (!scores.empty()) run.by_k[k] = scores;
  }
  if (const fs::path b = fs::path(dir) / "baseline"; fs::exists(b / "results_baseline.csv"))
    score_file(b / "results_baseline.csv", b / "scores_baseline.json", run.baseline);
  if (run.by_k.empty()) throw Error(fmt::format("{}: no k_*/results_k*.csv with scorable rows", dir));
  return run;
}

std::string cross_run_markdown(const std::vector<RunScores>& runs) {
  std::set<size_t> ks;
  bool comet = false;
  for (const auto& r : runs)
    for (const auto& [k, m] : r.by_k) {
      ks.insert(k);
      comet = comet || m.count("COMET");
    }
  bool any_baseline = false;
  for (const auto& r : runs) {
    any_baseline = any_baseline || !r.baseline.empty();
    comet = comet || r.baseline.count("COMET");
  }
  std::vector<std::string> metrics = kMetrics;
  if (comet) metrics.push_back("COMET");
  const auto value = [](const RunScores& r, size_t k, const std::string& metric) -> std::optional<double> {
    const auto it = r.by_k.find(k);
    if (it == r.by_k.end()) return std::nullopt;
    const auto m = it->second.find(metric);
    return m == it->second.end() ? std::nullopt : std::optional<double>(m->second);
  };
  const auto show = [](const std::string& metric, double v) {
    return metric == "COMET" ? fmt::format("{:.4f}", v) : fmt::format("{:.2f}", v);
  };
  // The best k of a run for a metric (TER: lowest), if the run has the metric at all.
  const auto best_of = [&](const RunScores& r, const std::string& metric) -> std::optional<size_t> {
    const bool lower_better = metric == "TER";
    std::optional<size_t> best;
    for (const auto& [k, m] : r.by_k) {
      const auto v = value(r, k, metric);
      if (!v) continue;
      if (!best || (lower_better ? *v < *value(r, *best, metric) : *v > *value(r, *best, metric))) best = k;
    }
    return best;
  };
  std::string md;
  for (const auto& metric : metrics) {
    md += fmt::format("## {}{}\n\n| run |", metric, metric == "TER" ? " (lower is better)" : "");
    for (size_t k : ks) md += fmt::format(" k={} |", k);
    if (any_baseline) md += " baseline |";
    md += "\n|---|";
    for (size_t i = 0; i < ks.size() + (any_baseline ? 1 : 0); ++i) md += "---:|";
    md += "\n";
    for (const auto& r : runs) {
      const auto best = best_of(r, metric);
      md += fmt::format("| {} |", r.name);
      for (size_t k : ks) {
        const auto v = value(r, k, metric);
        if (!v) md += " — |";
        else md += *v == *value(r, *best, metric) ? fmt::format(" **{}** |", show(metric, *v)) : fmt::format(" {} |", show(metric, *v));
      }
      if (any_baseline) {
        const auto b = r.baseline.find(metric);
        md += b == r.baseline.end() ? std::string(" — |") : fmt::format(" {} |", show(metric, b->second));
      }
      md += "\n";
    }
    md += "\n";
  }
  md += "## Best k\n\n| run |";
  for (const auto& metric : metrics) md += fmt::format(" {} |", metric);
  md += "\n|---|";
  for (size_t i = 0; i < metrics.size(); ++i) md += "---|";
  md += "\n";
  for (const auto& r : runs) {
    md += fmt::format("| {} |", r.name);
    for (const auto& metric : metrics) {
      const auto best = best_of(r, metric);
      md += best ? fmt::format(" k={} ({}) |", *best, show(metric, *value(r, *best, metric))) : std::string(" — |");
    }
    md += "\n";
  }
  return md;
}

}  // namespace pivotmt
