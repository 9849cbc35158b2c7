#include "experiment/cross_report.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include <fmt/format.h>

#include "core/error.h"
#include "experiment/ablation.h"
#include "io/json_file.h"
#include "io/table.h"
#include "text/unicode.h"

namespace pivotmt {
namespace fs = std::filesystem;

namespace {
const std::vector<std::string> kMetrics = {"BLEU", "chrF", "chrF++", "TER"};
}

RunScores score_run_folder(const std::string& dir, const std::string& target) {
  if (!fs::is_directory(dir)) throw Error(fmt::format("{}: not a directory", dir));
  RunScores run;
  run.name = fs::path(dir).lexically_normal().filename().string();
  if (run.name.empty()) run.name = fs::path(dir).lexically_normal().parent_path().filename().string();
  run.target = target;
  if (run.target.empty() && fs::exists(fs::path(dir) / "ablation_config.json"))
    run.target = read_json_file((fs::path(dir) / "ablation_config.json").string()).value("target", "");
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
    run.failed[k] = failed;
    if (scores.is_null()) continue;
    for (const auto& m : kMetrics) run.by_k[k][m] = scores[m]["score"].get<double>();
  }
  if (run.by_k.empty()) throw Error(fmt::format("{}: no k_*/results_k*.csv with scorable rows", dir));
  return run;
}

std::string cross_run_markdown(const std::vector<RunScores>& runs) {
  std::set<size_t> ks;
  for (const auto& r : runs)
    for (const auto& [k, _] : r.by_k) ks.insert(k);
  std::string md;
  for (const auto& metric : kMetrics) {
    const bool lower_better = metric == "TER";
    md += fmt::format("## {}{}\n\n| run |", metric, lower_better ? " (lower is better)" : "");
    for (size_t k : ks) md += fmt::format(" k={} |", k);
    md += "\n|---|";
    for (size_t i = 0; i < ks.size(); ++i) md += "---:|";
    md += "\n";
    for (const auto& r : runs) {
      double best = lower_better ? 1e300 : -1e300;
      for (const auto& [k, m] : r.by_k) best = lower_better ? std::min(best, m.at(metric)) : std::max(best, m.at(metric));
      md += fmt::format("| {} |", r.name);
      for (size_t k : ks) {
        const auto it = r.by_k.find(k);
        if (it == r.by_k.end()) {
          md += " — |";
          continue;
        }
        const double v = it->second.at(metric);
        md += v == best ? fmt::format(" **{:.2f}** |", v) : fmt::format(" {:.2f} |", v);
      }
      md += "\n";
    }
    md += "\n";
  }
  md += "## Best k\n\n| run |";
  for (const auto& metric : kMetrics) md += fmt::format(" {} |", metric);
  md += "\n|---|";
  for (size_t i = 0; i < kMetrics.size(); ++i) md += "---|";
  md += "\n";
  for (const auto& r : runs) {
    md += fmt::format("| {} |", r.name);
    for (const auto& metric : kMetrics) {
      const bool lower_better = metric == "TER";
      size_t best_k = r.by_k.begin()->first;
      for (const auto& [k, m] : r.by_k) {
        const double v = m.at(metric), b = r.by_k.at(best_k).at(metric);
        if (lower_better ? v < b : v > b) best_k = k;
      }
      md += fmt::format(" k={} ({:.2f}) |", best_k, r.by_k.at(best_k).at(metric));
    }
    md += "\n";
  }
  return md;
}

}  // namespace pivotmt
