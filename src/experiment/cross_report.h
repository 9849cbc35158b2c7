// `pivotmt report`: the cross-run analysis of REFERENCE §7 from any set of ablation output
// folders — pivotmt's or the original pipeline's. Scores are recomputed from each
// k_{k}/results_k{k}.csv (response against the target column) rather than read from the
// folders' summaries, so runs scored with the original's faulty BLEU are corrected too.
#pragma once
#include <map>
#include <string>
#include <vector>

namespace pivotmt {
namespace comet {
class Model;
}

struct RunScores {
  std::string name;    // the folder's name
  std::string target;  // the reference column used
  // k -> metric (BLEU, chrF, chrF++, TER, and COMET when scored) -> score
  std::map<size_t, std::map<std::string, double>> by_k;
  std::map<size_t, size_t> failed;  // k -> rows left out (empty translation or reference)
  // The NLLB baseline's scores (baseline/results_baseline.csv), when the folder has one.
  std::map<std::string, double> baseline;
};

// `target` empty: from the folder's ablation_config.json, else the first of gom / tn / the
// columns the study used that the results file has. With `comet`, COMET too (sources from
// `source`, else the folder's config, else mar / en); without, a COMET score the folder's
// scores_k{k}.json holds is taken as it is.
RunScores score_run_folder(const std::string& dir, const std::string& target = "", const comet::Model* comet = nullptr,
                           const std::string& source = "");

// One Markdown table per metric (rows: runs, columns: k, the best value of each row in
// bold; TER is better when lower; COMET when any run has it; a "baseline" column when a
// run has an NLLB baseline), then a best-k table.
std::string cross_run_markdown(const std::vector<RunScores>& runs);

}  // namespace pivotmt
