#include "metrics/report.h"

#include <fmt/format.h>

#include "core/error.h"
#include "metrics/corpus.h"
#include "metrics/significance.h"

namespace pivotmt::metrics {

nlohmann::json run_scoring(const ScoreRequest& r) {
  if (r.hyps.empty()) throw Error("nothing to score: no hypotheses");
  if (r.refs.empty()) throw Error("nothing to score: no references");
  if (r.paired != ScoreRequest::Paired::None && !r.baseline)
    throw Error("a paired test needs a baseline system (--baseline)");
  if (r.baseline && r.baseline->size() != r.hyps.size())
    throw Error(fmt::format("the baseline has {} segments, the system {}", r.baseline->size(), r.hyps.size()));
  nlohmann::json out = nlohmann::json::object();
  for (const auto& name : r.metrics) {
    const auto metric = make_metric(name, r.options);
    const PreparedReferences refs(*metric, r.refs);
    const auto stats = system_statistics(*metric, refs, r.hyps);
    Score s = corpus_score(*metric, stats);
    SignatureContext context{refs.nrefs()};
    if (r.confidence_n > 0) {
      const Interval iv = bootstrap_interval(*metric, stats, r.confidence_n, r.seed, true);
      s.mean = iv.mean;
      s.ci = iv.ci;
      context.bootstrap = r.confidence_n;
      context.seed = std::to_string(r.seed);
    }
    nlohmann::json m;
    m["name"] = s.name;
    m["score"] = s.score;
    m["signature"] = format_signature(*metric, context, false);
    m["signature_short"] = format_signature(*metric, context, true);
    m["formatted"] = format_score(s, m["signature"], r.width);
    if (s.mean) {
      m["mean"] = *s.mean;
      m["ci"] = *s.ci;
    }
    if (name == "bleu") {
      m["counts"] = s.counts;
      m["totals"] = s.totals;
      m["precisions"] = s.precisions;
      m["bp"] = s.bp;
      m["sys_len"] = static_cast<long>(s.sys_len);
      m["ref_len"] = static_cast<long>(s.ref_len);
    } else if (name == "ter") {
      m["num_edits"] = static_cast<long>(s.num_edits);
      m["ref_length"] = s.ref_length;
    }
    out[metric_key(name)] = m;

    if (r.paired != ScoreRequest::Paired::None) {
      const bool bs = r.paired == ScoreRequest::Paired::Bootstrap;
      const int n = r.paired_n > 0 ? r.paired_n : (bs ? 1000 : 10000);
      const std::vector<SegmentStats> systems = {system_statistics(*metric, refs, *r.baseline), stats};
      const auto results = bs ? paired_bootstrap(*metric, systems, n, r.seed)
                              : paired_randomization(*metric, systems, n, r.seed);
      SignatureContext pc{refs.nrefs()};
      (bs ? pc.bootstrap : pc.ar_trials) = n;
      pc.seed = std::to_string(r.seed);
      auto entry = [](const PairedResult& p) {
        nlohmann::json j = {{"score", p.score}};
        j["p_value"] = p.p_value ? nlohmann::json(*p.p_value) : nlohmann::json(nullptr);
        j["mean"] = p.mean ? nlohmann::json(*p.mean) : nlohmann::json(nullptr);
        j["ci"] = p.ci ? nlohmann::json(*p.ci) : nlohmann::json(nullptr);
        return j;
      };
      auto& paired = out["paired"];
      paired["test"] = bs ? "paired bootstrap" : "paired approximate randomization";
      paired["trials"] = n;
      paired["baseline"] = r.baseline_name;
      paired["system"] = r.system_name;
      paired["metrics"][metric_key(name)] = {{"baseline", entry(results[0])},
                                             {"system", entry(results[1])},
                                             {"signature", format_signature(*metric, pc, false)}};
    }
  }
  return out;
}

std::string format_scoring_text(const nlohmann::json& result) {
  std::string text;
  for (const char* key : {"BLEU", "chrF", "chrF++", "TER", "COMET"})  // sacrebleu's order, then COMET
    if (result.contains(key)) text += result[key]["formatted"].get<std::string>() + "\n";
  if (result.contains("paired")) {
    const auto& p = result["paired"];
    text += fmt::format("\n{} ({} trials): {} vs baseline {}\n", p["test"].get<std::string>(), p["trials"].get<int>(),
                        p["system"].get<std::string>(), p["baseline"].get<std::string>());
    text += fmt::format("{:<8} {:>10} {:>10} {:>10}\n", "metric", "baseline", "system", "p-value");
    for (const auto& [key, m] : p["metrics"].items())
      text += fmt::format("{:<8} {:>10.4f} {:>10.4f} {:>10.4f}{}\n", key, m["baseline"]["score"].get<double>(),
                          m["system"]["score"].get<double>(), m["system"]["p_value"].get<double>(),
                          m["system"]["p_value"].get<double>() < 0.05 ? " *" : "");
  }
  return text;
}

}  // namespace pivotmt::metrics
