#include "experiment/run_report.h"

#include <algorithm>
#include <filesystem>

#include <fmt/format.h>

#include "hub/file_hash.h"
#include "metrics/report.h"
#include "metrics/segment_mean.h"
#include "metrics/significance.h"
#include "text/unicode.h"

namespace pivotmt {
namespace fs = std::filesystem;

namespace {

// Nearest-rank percentile of a sorted list.
size_t percentile(const std::vector<size_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  const size_t rank = size_t(std::ceil(p / 100.0 * double(sorted.size())));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

std::string num(const nlohmann::json& v, int digits = 2) {
  return v.is_null() ? std::string("—") : fmt::format("{:.{}f}", v.get<double>(), digits);
}

}  // namespace

std::string ablation_report_markdown(const AblationConfig& config, const std::vector<std::string>& targets,
                                     const std::vector<KRun>& runs, size_t context_length, const KRun* baseline) {
  std::string md = fmt::format("# Ablation: {} → {} via {}\n\nmodel `{}`, data `{}` ({} test rows), retriever {}, {}\n\n",
                               config.source, config.target, config.pivot, config.model, config.data, targets.size(),
                               config.retriever,
                               config.greedy ? std::string("greedy decoding")
                                             : fmt::format("sampling T = {}, top-k {}, top-p {}, seed {}", config.temperature,
                                                           config.top_k, config.top_p, config.seed));
  const bool comet = std::any_of(runs.begin(), runs.end(), [](const KRun& r) { return !r.comet.empty(); });
  md += std::string("## Scores\n\n| k | BLEU | chrF | chrF++ | TER |") + (comet ? " COMET | ±95% |" : "") +
        " rows scored | rows left out |\n|---:|---:|---:|---:|---:|" + (comet ? "---:|---:|" : "") + "---:|---:|\n";
  std::vector<const KRun*> rows;
  for (const auto& r : runs) rows.push_back(&r);
  if (baseline) rows.push_back(baseline);
  const auto label = [](const KRun& r) { return r.baseline ? std::string("baseline") : std::to_string(r.k); };
  for (const KRun* rp : rows) {
    const KRun& r = *rp;
    md += fmt::format("| {} | {} | {} | {} | {} |", label(r), num(r.scores["BLEU Score"]), num(r.scores["chrF Score"]),
                      num(r.scores["CHRF++ Score"]), num(r.scores["TER Score"]));
    if (comet) {
      const auto& ci = r.scores.contains("confidence_intervals") && r.scores["confidence_intervals"].contains("COMET")
                           ? r.scores["confidence_intervals"]["COMET"]["ci"]
                           : nlohmann::json(nullptr);
      md += fmt::format(" {} | {} |", num(r.scores["COMET Score"], 4), num(ci, 4));
    }
    md += fmt::format(" {} | {} |\n", r.scores["samples_processed"].get<size_t>(), r.scores["samples_failed"].get<size_t>());
  }

  if (baseline) {
    const auto languages = baseline_languages(config);
    md += fmt::format("\nbaseline: the NLLB model `{}` translating the {} column ({} → {}) with no examples.{}\n",
                      config.baseline.model, languages.column, languages.src_lang, languages.tgt_lang,
                      languages.proxy_note.empty() ? "" : fmt::format(" **Proxy target:** {}.", languages.proxy_note));
  }

  // Change over a base run (k = 0, or the baseline): paired bootstrap on the rows both
  // runs translated.
  const auto change_table = [&](const KRun* base, const std::string& title) {
    md += "\n## " + title + " (paired bootstrap, 1000 resamples, seed 12345; * a non-zero change with p < 0.05)\n\n"
          "| k | ΔBLEU | p | ΔchrF | p | ΔchrF++ | p | ΔTER | p |" +
          std::string(comet ? " ΔCOMET | p |" : "") + "\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|" +
          (comet ? "---:|---:|" : "") + "\n";
    for (const auto& r : runs) {
      if (&r == base) continue;
      metrics::ScoreRequest req;
      req.refs.resize(1);
      std::vector<std::u32string> base_hyps;
      std::vector<double> comet_run, comet_base;  // the same rows' COMET segment scores
      for (size_t i = 0; i < targets.size(); ++i) {
        if (targets[i].empty() || r.responses[i].empty() || base->responses[i].empty()) continue;
        if (comet && i < r.comet.size() && i < base->comet.size() && r.comet[i] && base->comet[i]) {
          comet_run.push_back(*r.comet[i]);
          comet_base.push_back(*base->comet[i]);
        }
        req.hyps.push_back(utf8_to_u32(r.responses[i]));
        base_hyps.push_back(utf8_to_u32(base->responses[i]));
        req.refs[0].push_back(utf8_to_u32(targets[i]));
      }
      if (req.hyps.empty()) {
        md += fmt::format("| {} | no rows both runs translated |||||||| \n", r.k);
        continue;
      }
      req.baseline = std::move(base_hyps);
      req.paired = metrics::ScoreRequest::Paired::Bootstrap;
      const auto result = metrics::run_scoring(req);
      md += fmt::format("| {} |", r.k);
      for (const char* key : {"BLEU", "chrF", "chrF++", "TER"}) {
        const auto& m = result["paired"]["metrics"][key];
        const double delta = m["system"]["score"].get<double>() - m["baseline"]["score"].get<double>();
        const auto& p = m["system"]["p_value"];
        md += fmt::format(" {:+.2f} | {}{} |", delta, num(p, 4), delta != 0 && !p.is_null() && p.get<double>() < 0.05 ? " *" : "");
      }
      if (comet && !comet_run.empty()) {
        // The same paired bootstrap (indices, resamples, seed) over COMET's segment scores.
        const metrics::SegmentMeanMetric metric("COMET");
        const auto paired = metrics::paired_bootstrap(
            metric, {metrics::SegmentMeanMetric::stats(comet_base), metrics::SegmentMeanMetric::stats(comet_run)}, 1000,
            metrics::kDefaultSeed);
        const double delta = paired[1].score - paired[0].score;
        const double p = paired[1].p_value.value_or(1.0);
        md += fmt::format(" {:+.4f} | {:.4f}{} |", delta, p, delta != 0 && p < 0.05 ? " *" : "");
      } else if (comet) {
        md += " — | — |";
      }
      md += "\n";
    }
  };
  const auto k0 = std::find_if(runs.begin(), runs.end(), [](const KRun& r) { return r.k == 0; });
  if (k0 != runs.end() && runs.size() > 1) change_table(&*k0, "Change over k = 0");
  if (baseline) change_table(baseline, "Change over the baseline");

  md += fmt::format("\n## Prompts and generation\n\n| k | prompt tokens p50 | p90 | p99 | max | over {} positions | new tokens | "
                    "seconds | rows/s | new tokens/s |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
                    context_length);
  for (const KRun* rp : rows) {
    const KRun& r = *rp;
    std::vector<size_t> sorted = r.prompt_tokens;
    std::sort(sorted.begin(), sorted.end());
    md += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {:.1f} | {:.2f} | {:.1f} |\n", label(r), percentile(sorted, 50),
                      percentile(sorted, 90), percentile(sorted, 99), sorted.empty() ? 0 : sorted.back(), r.overflows,
                      r.new_tokens, r.seconds, r.seconds > 0 ? double(sorted.size()) / r.seconds : 0.0,
                      r.seconds > 0 ? double(r.new_tokens) / r.seconds : 0.0);
  }
  md += "\nTimes are those of the process that generated each row (a resumed run adds the earlier processes' times).";
  if (baseline) md += " The baseline's prompt tokens are its source tokens.";
  md += "\n";
  return md;
}

nlohmann::json model_files_manifest(const std::string& model_dir) {
  nlohmann::json files = nlohmann::json::object();
  if (fs::is_regular_file(model_dir)) {  // a GGUF file: the whole model
    const uint64_t bytes = fs::file_size(model_dir);
    files[fs::path(model_dir).filename().string()] = {{"bytes", bytes}};
    if (bytes < (uint64_t(64) << 20)) files[fs::path(model_dir).filename().string()]["sha256"] = sha256_file_hex(model_dir);
    return files;
  }
  for (const auto& e : fs::directory_iterator(model_dir)) {
    const std::string name = e.path().filename().string();
    const bool relevant = name.ends_with(".json") || name.ends_with(".safetensors") || name == "tokenizer.model";
    if (!relevant || !e.is_regular_file()) continue;
    nlohmann::json f = {{"bytes", e.file_size()}};
    // In the hub cache, an LFS file is a symlink to blobs/<sha256>.
    if (e.is_symlink()) {
      const std::string blob = fs::read_symlink(e.path()).filename().string();
      if (blob.size() == 64 && blob.find_first_not_of("0123456789abcdef") == std::string::npos) f["sha256"] = blob;
    }
    if (!f.contains("sha256") && e.file_size() < (size_t(64) << 20)) f["sha256"] = sha256_file_hex(e.path().string());
    files[name] = f;
  }
  return files;
}

}  // namespace pivotmt
