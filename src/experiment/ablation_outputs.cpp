#include "experiment/ablation_outputs.h"

#include "experiment/baseline.h"

#include <filesystem>
#include <map>
#include <optional>

#include <fmt/format.h>

#include "core/error.h"
#include "experiment/plots.h"
#include "experiment/run_report.h"
#include "io/json_fields.h"
#include "io/json_file.h"
#include "io/temp_path.h"
#include "metrics/comet.h"
#include "metrics/report.h"
#include "metrics/segment_mean.h"
#include "metrics/significance.h"
#include "text/unicode.h"

namespace pivotmt {
namespace fs = std::filesystem;

std::string csv_field(const std::string& value) {
  if (value.find_first_of(",\"\r\n") == std::string::npos) return value;
  std::string out = "\"";
  for (char c : value) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

nlohmann::json score_translations(const std::vector<std::string>& responses, const std::vector<std::string>& targets,
                                  size_t* failed, int confidence_n) {
  metrics::ScoreRequest req;
  req.confidence_n = confidence_n;
  *failed = 0;
  for (size_t i = 0; i < responses.size(); ++i) {
    // Rows with an empty hypothesis or reference are left out (REFERENCE §6).
    if (responses[i].empty() || targets[i].empty()) {
      ++*failed;
      continue;
    }
    req.hyps.push_back(utf8_to_u32(responses[i]));
    if (req.refs.empty()) req.refs.resize(1);
    req.refs[0].push_back(utf8_to_u32(targets[i]));
  }
  if (req.hyps.empty()) return nullptr;
  return metrics::run_scoring(req);
}

namespace {
constexpr int kBootstrapResamples = 1000;  // sacrebleu's default for --confidence

// Output column names: nested "translation.en" becomes "en" as the original flattened it.
std::vector<std::string> flat_columns(const Table& t) {
  std::vector<std::string> out;
  for (const auto& c : t.columns) {
    const auto dot = c.rfind('.');
    out.push_back(dot == std::string::npos ? c : c.substr(dot + 1));
  }
  return out;
}

// One run's results_{name}.csv and scores_{name}.json in its folder (k_{k} with name k{k}, or
// the baseline's); returns what report.md needs.
KRun write_run_outputs(const AblationInputs& in, const KRun& id, const std::map<size_t, nlohmann::json>& log) {
  const std::string name = id.baseline ? "baseline" : fmt::format("k{}", id.k);
  const fs::path kdir = fs::path(in.config.out) / (id.baseline ? std::string("baseline") : fmt::format("k_{}", id.k));
  fs::create_directories(kdir);
  const auto columns = flat_columns(in.test_table);
  // results_k{k}.csv: the dataset's columns, then prompt and response, in test order.
  std::string csv;
  for (const auto& c : columns) csv += csv_field(c) + ",";
  csv += "prompt,response\n";
  std::vector<std::string> targets;
  KRun run = id;
  for (size_t i = 0; i < in.test.rows.size(); ++i) {
    const auto it = log.find(i);
    if (it == log.end()) throw Error(fmt::format("{}: row {} was never translated", (kdir / "rows.jsonl").string(), i));
    const auto& rec = it->second;
    const std::string where = fmt::format("{}: row {}", (kdir / "rows.jsonl").string(), i);
    const std::string prompt = json_string(required_field(rec, "prompt", where), field_name(where, "prompt"));
    const std::string response = json_string(required_field(rec, "response", where), field_name(where, "response"));
    for (const auto& cell : in.test_table.rows[in.test.rows[i].row]) csv += csv_field(cell.value_or("")) + ",";
    csv += csv_field(prompt) + "," + csv_field(response) + "\n";
    run.responses.push_back(response);
    targets.push_back(in.test.rows[i].target);
    run.seconds += field_number(rec, "seconds", where, 0.0);
    run.overflows += field_bool(rec, "context_overflow", where, false) ? 1 : 0;
    run.prompt_tokens.push_back(size_t(field_integer(rec, "prompt_tokens", where, 0, 0)));
    run.new_tokens += size_t(field_integer(rec, "new_tokens", where, 0, 0));
  }
  write_file_atomically((kdir / fmt::format("results_{}.csv", name)).string(), csv);

  size_t failed = 0;
  const auto scores = score_translations(run.responses, targets, &failed, kBootstrapResamples);
  const auto metric = [&](const std::string& key) -> nlohmann::json {
    return scores.is_null() ? nlohmann::json(nullptr) : scores[key]["score"];
  };
  nlohmann::json s = {
      {"BLEU Score", metric("BLEU")},
      {"Normalized BLEU Score",
       scores.is_null() ? nlohmann::json(nullptr) : nlohmann::json(scores["BLEU"]["score"].get<double>() / 100)},
      {"chrF Score", metric("chrF")},
      {"CHRF++ Score", metric("chrF++")},
      {"TER Score", metric("TER")},
      {"COMET Score", nullptr},  // filled below when a COMET model is given
      {"inference_time_minutes", run.seconds / 60},
      {"samples_processed", in.test.rows.size() - failed},
      {"samples_failed", failed},
      {"context_overflows", run.overflows},
      {"k", id.baseline ? nlohmann::json("baseline") : nlohmann::json(id.k)}};
  if (id.baseline) {
    const auto languages = baseline_languages(in.config);
    s["model"] = in.config.baseline.model;
    s["languages"] = {{"column", languages.column}, {"src_lang", languages.src_lang}, {"tgt_lang", languages.tgt_lang}};
    if (!languages.proxy_note.empty()) s["proxy"] = languages.proxy_note;
  }
  if (!scores.is_null())
    for (const char* key : {"BLEU", "chrF", "chrF++", "TER"}) {
      s["signatures"][key] = scores[key]["signature"];
      // sacrebleu --confidence: the bootstrap mean and the 95% half-width.
      s["confidence_intervals"][key] = {{"mean", scores[key]["mean"]}, {"ci", scores[key]["ci"]}, {"level", 0.95}};
    }
  if (in.comet) {
    // The rows the other metrics score (a translation and a reference), with their sources.
    std::vector<std::string> src, mt, ref;
    std::vector<size_t> scored;
    for (size_t i = 0; i < run.responses.size(); ++i) {
      if (run.responses[i].empty() || targets[i].empty()) continue;
      src.push_back(in.test.rows[i].source);
      mt.push_back(run.responses[i]);
      ref.push_back(targets[i]);
      scored.push_back(i);
    }
    if (!mt.empty()) {
      const auto cs = in.comet->score(src, mt, ref);
      run.comet.assign(run.responses.size(), std::nullopt);
      for (size_t j = 0; j < scored.size(); ++j) run.comet[scored[j]] = cs.segments[j];
      s["COMET Score"] = cs.system;
      const metrics::SegmentMeanMetric metric("COMET");
      const auto iv = metrics::bootstrap_interval(metric, metrics::SegmentMeanMetric::stats(cs.segments),
                                                  kBootstrapResamples, metrics::kDefaultSeed, true);
      s["confidence_intervals"]["COMET"] = {{"mean", iv.mean}, {"ci", iv.ci}, {"level", 0.95}};
      s["signatures"]["COMET"] = in.comet->signature(in.config.comet_encoder, cs.truncated);
    }
  }
  write_file_atomically((kdir / fmt::format("scores_{}.json", name)).string(), s.dump(4) + "\n");
  run.scores = s;
  return run;
}
}  // namespace

void write_ablation_outputs(const AblationInputs& in, const std::vector<const std::map<size_t, nlohmann::json>*>& rows) {
  const AblationConfig& config = in.config;
  const fs::path out = config.out;
  nlohmann::json per_k = nlohmann::json::object();
  const bool comet = in.comet != nullptr;
  // The original's columns first (its readers index them by name); COMET last, when scored.
  std::string summary = std::string("k,BLEU,chrF,chrF++,Normalized_BLEU,time_minutes,TER") + (comet ? ",COMET" : "") + "\n";
  std::vector<KRun> k_runs;
  const auto num = [](const nlohmann::json& v) { return v.is_null() ? std::string() : fmt::format("{}", v.get<double>()); };
  const auto summary_row = [&](const std::string& label, const KRun& run) {
    const auto& s = run.scores;
    summary += fmt::format("{},{},{},{},{},{},{}", label, num(s["BLEU Score"]), num(s["chrF Score"]), num(s["CHRF++ Score"]),
                           num(s["Normalized BLEU Score"]), run.seconds / 60, num(s["TER Score"]));
    summary += comet ? "," + num(s["COMET Score"]) + "\n" : "\n";
  };
  for (size_t j = 0; j < config.ks.size(); ++j) {
    KRun id;
    id.k = config.ks[j];
    KRun run = write_run_outputs(in, id, *rows[j]);
    per_k[std::to_string(run.k)] = run.scores;
    summary_row(std::to_string(run.k), run);
    k_runs.push_back(std::move(run));
  }
  // The NLLB baseline: a row of its own ("baseline" in the k column).
  std::optional<KRun> baseline;
  if (in.baseline) {
    KRun id;
    id.baseline = true;
    baseline = write_run_outputs(in, id, *in.baseline);
    summary_row("baseline", *baseline);
  }
  write_file_atomically((out / "ablation_summary.csv").string(), summary);

  // The change of each metric over k = 0 (when k = 0 was run).
  nlohmann::json detailed = {{"config", config.identity()}, {"results", per_k}};
  if (per_k.contains("0")) {
    const auto& base = per_k["0"];
    for (const auto& [k, s] : per_k.items())
      for (const char* key : {"BLEU Score", "chrF Score", "CHRF++ Score", "TER Score", "COMET Score"})
        if (!s[key].is_null() && !base[key].is_null())
          detailed["change_over_k0"][k][key] = s[key].get<double>() - base[key].get<double>();
  }
  if (baseline) detailed["baseline"] = baseline->scores;
  write_json_file((out / "ablation_detailed_results.json").string(), detailed);

  std::vector<std::string> targets;
  for (const auto& row : in.test.rows) targets.push_back(row.target);
  std::string report = ablation_report_markdown(config, targets, k_runs, in.context_length, baseline ? &*baseline : nullptr);
  if (fs::exists(out / "runtime.json")) {  // the device of the last process that generated rows
    const auto rt = read_json_file((out / "runtime.json").string());
    report += fmt::format("Device: {}; model load {:.1f} s", rt.value("device_name", rt.value("device", "?")), rt.value("load_seconds", 0.0));
    if (rt.contains("peak_device_memory_bytes"))
      report += fmt::format("; peak GPU memory {:.2f} GiB held by pivotmt", rt["peak_device_memory_bytes"].get<double>() / (1 << 30));
    if (rt.contains("gpu_memory_used_max_bytes"))
      report += fmt::format(", {:.2f} GiB used on the device at most ({})",
                            rt["gpu_memory_used_max_bytes"].get<double>() / (1 << 30), rt.value("gpu_source", "cuda"));
    if (rt.contains("gpu_utilization_mean"))
      report += fmt::format("; GPU utilisation {:.0f}% on average, {:.0f}% at most", rt["gpu_utilization_mean"].get<double>(),
                            rt["gpu_utilization_max"].get<double>());
    if (rt.contains("peak_host_memory_bytes"))
      report += fmt::format("; peak host memory {:.2f} GiB", rt["peak_host_memory_bytes"].get<double>() / (1 << 30));
    report += ".\n";
  }
  write_file_atomically((out / "report.md").string(), report);

  // What produced these files.
  nlohmann::json manifest = {{"pivotmt_version", PIVOTMT_VERSION},
                             {"config", config.identity()},
                             {"k", config.ks},
                             {"model_files", model_files_manifest(config.model)},
                             {"tokenizer", {{"bos", in.tokenizer.bos_token}, {"eos", in.tokenizer.eos_token}}},
                             {"chat_template", in.tokenizer.chat_template},
                             {"index", in.index_manifest},
                             {"test_rows", in.test.rows.size()},
                             {"test_rows_dropped", in.test.dropped},
                             {"per_row_seed", "seed + test row index"}};
  for (const auto& [k, s] : per_k.items())
    if (s.contains("signatures")) manifest["metric_signatures"] = s["signatures"];
  if (fs::exists(out / "runtime.json")) manifest["runtime"] = read_json_file((out / "runtime.json").string());
  if (baseline) manifest["baseline"] = {{"config", read_json_file((out / "baseline" / "baseline_config.json").string())},
                                       {"model_files", model_files_manifest(config.baseline.model)}};
  if (comet) manifest["comet"] = {{"name", config.comet_name.empty() ? config.comet_model : config.comet_name},
                                  {"model", config.comet_model}, {"encoder", config.comet_encoder},
                                  {"model_files", model_files_manifest(config.comet_model)}};
  write_json_file((out / "manifest.json").string(), manifest);

  // The original's figures: metrics against k (2x2) and grouped bars.
  std::map<size_t, std::map<std::string, double>> scores_by_k;
  for (const auto& r : k_runs)
    for (const auto& [name, key] : {std::pair<const char*, const char*>{"BLEU", "BLEU Score"}, {"chrF", "chrF Score"}, {"chrF++", "CHRF++ Score"}})
      if (!r.scores[key].is_null()) scores_by_k[r.k][name] = r.scores[key].get<double>();
  auto series = bleu_chrf_series(scores_by_k);
  if (baseline)  // a horizontal line in each panel
    for (auto& ms : series) {
      const char* key = ms.name == "BLEU" ? "BLEU Score" : ms.name == "chrF" ? "chrF Score" : "CHRF++ Score";
      if (!baseline->scores[key].is_null()) ms.baseline = baseline->scores[key].get<double>();
    }
  if (!series[0].ks.empty()) {
    const std::string title = fmt::format("{} → {} via {} ({})", config.source, config.target, config.pivot,
                                          fs::path(config.model).filename().string());
    plot_metrics_vs_k(series, title, (out / "ablation_plots").string());
    plot_grouped_bars(series, title, (out / "ablation_bars").string());
  }
  std::map<size_t, double> comet_by_k;  // sorted by k (config.ks need not be)
  for (const auto& r : k_runs)
    if (!r.scores["COMET Score"].is_null()) comet_by_k[r.k] = r.scores["COMET Score"].get<double>();
  if (!comet_by_k.empty()) {
    MetricSeries comet_series{"COMET", {}, {}, std::nullopt};
    if (baseline && !baseline->scores["COMET Score"].is_null()) comet_series.baseline = baseline->scores["COMET Score"].get<double>();
    for (const auto& [k, v] : comet_by_k) {
      comet_series.ks.push_back(double(k));
      comet_series.values.push_back(v);
    }
    plot_metric_vs_k(comet_series, fmt::format("COMET vs k: {} → {} via {}", config.source, config.target, config.pivot),
                     (out / "ablation_comet").string());
  }
}

}  // namespace pivotmt
