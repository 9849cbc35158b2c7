#include "experiment/ablation.h"
#include "experiment/plots.h"
#include "experiment/run_report.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <fmt/format.h>

#include "chat/chat_template.h"
#include "core/error.h"
#include "engine/generate.h"
#include "io/json_file.h"
#include "io/table.h"
#include "io/temp_path.h"
#include "metrics/report.h"
#include "models/llama_model.h"
#include "models/model_config.h"
#include "retrieval/index.h"
#include "text/unicode.h"
#include "tokenizer/tokenizer.h"

namespace pivotmt {
namespace fs = std::filesystem;

namespace {
// A float as the decimal it was written as (0.1, not 0.10000000149011612).
double shortest(float v) { return std::stod(fmt::format("{}", v)); }
}  // namespace

nlohmann::json AblationConfig::identity() const {
  return {{"data", data},
          {"train_split", train_split},
          {"test_split", test_split},
          {"pivot", pivot},
          {"source", source},
          {"target", target},
          {"labels", {labels.pivot, labels.target, labels.source_code, labels.target_code}},
          {"variant", variant == PromptVariant::Pivot ? "pivot" : "no-pivot"},
          {"retriever", retriever},
          {"encoder", encoder},
          {"model", model},
          {"greedy", greedy},
          {"temperature", shortest(temperature)},
          {"top_k", top_k},
          {"top_p", shortest(top_p)},
          {"max_new_tokens", max_new_tokens},
          {"seed", seed},
          {"context_policy", context_policy},
          {"limit", limit}};
}

std::string csv_field(const std::string& value) {
  if (value.find_first_of(",\"\r\n") == std::string::npos) return value;
  std::string out = "\"";
  for (char c : value) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

namespace {

// The durable per-k row log.
class RowLog {
 public:
  // Reads the finished rows; a torn last line (the process died mid-write) is cut off.
  explicit RowLog(fs::path path) : path_(std::move(path)) {
    std::ifstream in(path_, std::ios::binary);
    if (in) {
      std::stringstream ss;
      ss << in.rdbuf();
      const std::string text = ss.str();
      size_t start = 0, line = 1, good_end = 0;
      while (start < text.size()) {
        const size_t nl = text.find('\n', start);
        if (nl == std::string::npos) break;  // torn: no newline yet
        const auto entry = nlohmann::json::parse(text.begin() + long(start), text.begin() + long(nl), nullptr, false);
        if (entry.is_discarded() || !entry.contains("i"))
          throw FormatError(fmt::format("{}:{}: not a row record (the log is damaged; delete it to regenerate this k)",
                                        path_.string(), line));
        rows_[entry["i"].get<size_t>()] = entry;
        start = nl + 1;
        good_end = start;
        ++line;
      }
      if (good_end < text.size()) fs::resize_file(path_, good_end);
    }
    fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd_ < 0) throw Error("cannot open " + path_.string() + " for appending");
  }
  ~RowLog() {
    if (fd_ >= 0) ::close(fd_);
  }
  RowLog(const RowLog&) = delete;
  RowLog& operator=(const RowLog&) = delete;

  const std::map<size_t, nlohmann::json>& rows() const { return rows_; }

  // Appends the records and makes them durable before returning.
  void append(const std::vector<nlohmann::json>& records) {
    std::string text;
    for (const auto& r : records) text += r.dump() + "\n";
    size_t written = 0;
    while (written < text.size()) {
      const ssize_t n = ::write(fd_, text.data() + written, text.size() - written);
      if (n < 0) throw Error("cannot append to " + path_.string());
      written += size_t(n);
    }
    if (::fsync(fd_) != 0) throw Error("cannot fsync " + path_.string());
    for (const auto& r : records) rows_[r["i"].get<size_t>()] = r;
  }

 private:
  fs::path path_;
  int fd_ = -1;
  std::map<size_t, nlohmann::json> rows_;
};

// Output column names: nested "translation.en" becomes "en" as the original flattened it.
std::vector<std::string> flat_columns(const Table& t) {
  std::vector<std::string> out;
  for (const auto& c : t.columns) {
    const auto dot = c.rfind('.');
    out.push_back(dot == std::string::npos ? c : c.substr(dot + 1));
  }
  return out;
}

}  // namespace

nlohmann::json score_translations(const std::vector<std::string>& responses, const std::vector<std::string>& targets,
                         size_t* failed) {
  metrics::ScoreRequest req;
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

AblationOutcome run_ablation(const AblationConfig& config, bool force,
                             const std::function<void(const AblationProgress&)>& on_progress) {
  if (config.out.empty()) throw Error("ablation: no output directory");
  if (config.ks.empty()) throw Error("ablation: no k values");
  for (size_t k : config.ks)
    if (k > 10) throw Error(fmt::format("ablation: k = {}: the study retrieves at most 10 examples", k));
  const fs::path out = config.out;
  fs::create_directories(out);

  // One folder, one configuration.
  const fs::path config_path = out / "ablation_config.json";
  if (fs::exists(config_path)) {
    const auto previous = read_json_file(config_path.string());
    if (previous != config.identity()) {
      if (!force) {
        std::vector<std::string> changed;
        const auto current = config.identity();
        for (const auto& [key, value] : current.items())
          if (!previous.contains(key) || previous[key] != value) changed.push_back(key);
        throw Error(fmt::format("{} holds a run of another configuration (differs in: {}); use another --out or "
                                "--force to replace it",
                                out.string(), fmt::join(changed, ", ")));
      }
      for (const auto& e : fs::directory_iterator(out))
        if (e.path().filename().string().rfind("k_", 0) == 0) fs::remove_all(e.path());
    }
  }
  write_json_file(config_path.string(), config.identity());

  // Test rows and the example pool.
  const Table test_table = read_split(config.data, config.test_split);
  const bool pivot_prompt = config.variant == PromptVariant::Pivot;
  ParallelCorpus test = load_parallel(test_table, config.pivot, config.source, config.target);
  if (config.limit > 0 && test.rows.size() > config.limit) test.rows.resize(config.limit);
  if (test.rows.empty()) throw Error(fmt::format("{} ({}): no test rows", config.data, config.test_split));
  IndexSpec spec;
  spec.data = config.data;
  spec.split = config.train_split;
  // The no-pivot variant retrieves by the source text (REFERENCE §3).
  spec.pivot = pivot_prompt ? config.pivot : config.source;
  spec.source = config.source;
  spec.target = config.target;
  spec.retriever = config.retriever;
  spec.model = config.encoder;
  spec.seed = config.seed;
  const LoadedIndex index = build_index(spec, (out / "index").string());

  const auto tokenizer = load_tokenizer(config.model);
  const ModelConfig model_config = load_model_config(config.model);
  const GenerationConfig generation = load_generation_config(config.model, model_config);
  std::unique_ptr<LlamaModel> model;  // loaded only when some row still needs generating
  EngineOptions engine_options;
  engine_options.max_batch = config.max_batch;
  engine_options.context = config.context_policy == "error"           ? ContextPolicy::Error
                           : config.context_policy == "truncate-left" ? ContextPolicy::TruncateLeft
                                                                      : ContextPolicy::Allow;

  const auto out_columns = flat_columns(test_table);
  const std::vector<std::string> metric_keys = {"BLEU", "chrF", "chrF++", "TER"};
  AblationOutcome outcome;
  nlohmann::json per_k = nlohmann::json::object();
  std::string summary = "k,BLEU,chrF,chrF++,Normalized_BLEU,time_minutes,TER\n";
  std::vector<KRun> k_runs;

  for (size_t k : config.ks) {
    const fs::path kdir = out / fmt::format("k_{}", k);
    fs::create_directories(kdir);
    RowLog log(kdir / "rows.jsonl");
    outcome.rows_resumed += log.rows().size();

    std::vector<size_t> pending;
    for (size_t i = 0; i < test.rows.size(); ++i)
      if (!log.rows().count(i)) pending.push_back(i);
    if (!pending.empty() && !model) model = std::make_unique<LlamaModel>(config.model, LoadOptions{DType::F16, OpsImpl::Fast});

    AblationProgress progress{k, log.rows().size(), test.rows.size(), 0, 0};
    const auto k_start = std::chrono::steady_clock::now();
    if (on_progress) on_progress(progress);  // rows already done (resumed) before any new one
    // Chunks of max_batch rows: each chunk is durable before the next starts.
    for (size_t begin = 0; begin < pending.size(); begin += config.max_batch) {
      const size_t end = std::min(pending.size(), begin + config.max_batch);
      std::vector<GenerationRequest> requests;
      std::vector<std::string> prompts;
      for (size_t p = begin; p < end; ++p) {
        const auto& row = test.rows[pending[p]];
        std::vector<Example> examples;
        if (k > 0) {
          const std::string& query = pivot_prompt ? row.pivot : row.source;
          for (const auto& n : retrieve(*index.retriever, index.pool, query, k)) {
            const auto& ex = index.pool.rows[n.index];
            examples.push_back({ex.pivot, ex.source, ex.target});
          }
        }
        const auto messages = build_messages(config.labels, examples, row.pivot, row.source, config.variant);
        prompts.push_back(apply_chat_template(*tokenizer, messages, false));
        GenerationRequest r;
        r.prompt = encode_rendered_prompt(*tokenizer, prompts.back(), DuplicateBos::Reproduce).ids;
        r.max_new_tokens = config.max_new_tokens;
        r.sampling.greedy = config.greedy;
        r.sampling.temperature = config.temperature;
        r.sampling.top_k = config.top_k;
        r.sampling.top_p = config.top_p;
        r.sampling.seed = config.seed + row.row;  // per row: independent of batching and resumption
        r.eos_ids.assign(generation.eos_token_ids.begin(), generation.eos_token_ids.end());
        requests.push_back(std::move(r));
      }
      const auto t0 = std::chrono::steady_clock::now();
      const auto results = Engine(*model, tokenizer.get()).generate(requests, engine_options);
      const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::vector<nlohmann::json> records;
      for (size_t j = 0; j < results.size(); ++j) {
        const auto& res = results[j];
        records.push_back({{"i", pending[begin + j]},
                           {"row", test.rows[pending[begin + j]].row},
                           {"prompt", prompts[j]},
                           {"response", py_strip_utf8(res.text)},
                           {"prompt_tokens", res.prompt_tokens},
                           {"new_tokens", res.tokens.size()},
                           {"finish", finish_reason_name(res.finish)},
                           {"context_overflow", res.context_overflow},
                           {"seconds", wall / double(results.size())}});
        progress.generated_tokens += res.tokens.size();
      }
      log.append(records);
      outcome.rows_generated += records.size();
      progress.done += records.size();
      progress.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - k_start).count();
      if (on_progress) on_progress(progress);
    }

    // results_k{k}.csv: the dataset's columns, then prompt and response, in test order.
    std::string csv;
    for (size_t c = 0; c < out_columns.size(); ++c) csv += csv_field(out_columns[c]) + ",";
    csv += "prompt,response\n";
    std::vector<std::string> responses, targets;
    double seconds = 0;
    size_t overflows = 0;
    KRun k_run;
    k_run.k = k;
    for (size_t i = 0; i < test.rows.size(); ++i) {
      const auto& rec = log.rows().at(i);
      const auto& table_row = test_table.rows[test.rows[i].row];
      for (const auto& cell : table_row) csv += csv_field(cell.value_or("")) + ",";
      csv += csv_field(rec["prompt"].get<std::string>()) + "," + csv_field(rec["response"].get<std::string>()) + "\n";
      responses.push_back(rec["response"].get<std::string>());
      targets.push_back(test.rows[i].target);
      seconds += rec.value("seconds", 0.0);
      overflows += rec.value("context_overflow", false) ? 1 : 0;
      k_run.prompt_tokens.push_back(rec.value("prompt_tokens", size_t(0)));
      k_run.new_tokens += rec.value("new_tokens", size_t(0));
    }
    write_file_atomically((kdir / fmt::format("results_k{}.csv", k)).string(), csv);

    size_t failed = 0;
    const auto scores = score_translations(responses, targets, &failed);
    const auto metric = [&](const std::string& key) -> nlohmann::json {
      return scores.is_null() ? nlohmann::json(nullptr) : scores[key]["score"];
    };
    nlohmann::json s = {{"BLEU Score", metric("BLEU")},
                        {"Normalized BLEU Score", scores.is_null() ? nlohmann::json(nullptr) : nlohmann::json(scores["BLEU"]["score"].get<double>() / 100)},
                        {"chrF Score", metric("chrF")},
                        {"CHRF++ Score", metric("chrF++")},
                        {"TER Score", metric("TER")},
                        {"COMET Score", nullptr},  // COMET needs its own model: not computed yet
                        {"inference_time_minutes", seconds / 60},
                        {"samples_processed", test.rows.size() - failed},
                        {"samples_failed", failed},
                        {"context_overflows", overflows},
                        {"k", k}};
    if (!scores.is_null())
      for (const auto& key : metric_keys) s["signatures"][key] = scores[key]["signature"];
    write_file_atomically((kdir / fmt::format("scores_k{}.json", k)).string(), s.dump(4) + "\n");
    per_k[std::to_string(k)] = s;
    k_run.responses = responses;
    k_run.overflows = overflows;
    k_run.seconds = seconds;
    k_run.scores = s;
    k_runs.push_back(std::move(k_run));
    const auto num = [](const nlohmann::json& v) { return v.is_null() ? std::string() : fmt::format("{}", v.get<double>()); };
    summary += fmt::format("{},{},{},{},{},{},{}\n", k, num(s["BLEU Score"]), num(s["chrF Score"]), num(s["CHRF++ Score"]),
                           num(s["Normalized BLEU Score"]), seconds / 60, num(s["TER Score"]));
  }
  write_file_atomically((out / "ablation_summary.csv").string(), summary);

  // The change of each metric over k = 0 (when k = 0 was run).
  nlohmann::json detailed = {{"config", config.identity()}, {"results", per_k}};
  if (per_k.contains("0")) {
    const auto& base = per_k["0"];
    for (const auto& [k, s] : per_k.items())
      for (const char* key : {"BLEU Score", "chrF Score", "CHRF++ Score", "TER Score"})
        if (!s[key].is_null() && !base[key].is_null())
          detailed["change_over_k0"][k][key] = s[key].get<double>() - base[key].get<double>();
  }
  write_json_file((out / "ablation_detailed_results.json").string(), detailed);

  std::vector<std::string> targets;
  for (const auto& row : test.rows) targets.push_back(row.target);
  write_file_atomically((out / "report.md").string(), ablation_report_markdown(config, targets, k_runs, size_t(model_config.max_position_embeddings)));

  // What produced these files.
  nlohmann::json manifest = {{"pivotmt_version", PIVOTMT_VERSION},
                             {"config", config.identity()},
                             {"k", config.ks},
                             {"model_files", model_files_manifest(config.model)},
                             {"tokenizer", {{"bos", tokenizer->bos_token}, {"eos", tokenizer->eos_token}}},
                             {"chat_template", tokenizer->chat_template},
                             {"index", index.manifest},
                             {"test_rows", test.rows.size()},
                             {"test_rows_dropped", test.dropped},
                             {"per_row_seed", "seed + test row index"}};
  for (const auto& [k, s] : per_k.items())
    if (s.contains("signatures")) manifest["metric_signatures"] = s["signatures"];
  write_json_file((out / "manifest.json").string(), manifest);

  // The original's figures: metrics against k (2x2) and grouped bars.
  std::map<size_t, std::map<std::string, double>> scores_by_k;
  for (const auto& r : k_runs)
    for (const auto& [name, key] : {std::pair<const char*, const char*>{"BLEU", "BLEU Score"}, {"chrF", "chrF Score"}, {"chrF++", "CHRF++ Score"}})
      if (!r.scores[key].is_null()) scores_by_k[r.k][name] = r.scores[key].get<double>();
  const auto series = bleu_chrf_series(scores_by_k);
  if (!series[0].ks.empty()) {
    const std::string title = fmt::format("{} → {} via {} ({})", config.source, config.target, config.pivot,
                                          fs::path(config.model).filename().string());
    plot_metrics_vs_k(series, title, (out / "ablation_plots").string());
    plot_grouped_bars(series, title, (out / "ablation_bars").string());
  }
  return outcome;
}

}  // namespace pivotmt
