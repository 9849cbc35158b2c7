#include "experiment/ablation.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "chat/chat_template.h"
#include "backends/backend.h"
#include "core/error.h"
#include "engine/generate.h"
#include "experiment/ablation_outputs.h"
#include "experiment/row_log.h"
#include "backends/resource_monitor.h"
#include "experiment/token_stats.h"
#include "io/json_fields.h"
#include "io/json_file.h"
#include "io/table.h"
#include "io/temp_path.h"
#include "models/llama_model.h"
#include "metrics/comet.h"
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
  nlohmann::json j = {{"data", data},
                      {"train_split", train_split},
                      {"test_split", test_split},
                      {"pivot", pivot},
                      {"source", source},
                      {"target", target},
                      {"labels", {labels.pivot, labels.target, labels.source_code, labels.target_code}},
                      {"variant", prompt_variant_name(variant)},
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
  if (variant == PromptVariant::Custom) j["prompt_template"] = labels.custom_template;
  if (weights != "f16") j["weights"] = weights;  // absent: the default (folders of earlier versions)
  if (!adapter.empty()) j["adapter"] = adapter;
  if (shard_count > 1) j["shard"] = {shard_index, shard_count};
  return j;
}

AblationConfig AblationConfig::from_identity(const nlohmann::json& j) {
  AblationConfig c;
  try {
    c.data = j.at("data");
    c.train_split = j.at("train_split");
    c.test_split = j.at("test_split");
    c.pivot = j.at("pivot");
    c.source = j.at("source");
    c.target = j.at("target");
    const auto& l = j.at("labels");
    c.labels = {l.at(0), l.at(1), l.at(2), l.at(3), j.value("prompt_template", std::string())};
    c.variant = parse_prompt_variant(j.at("variant"));
    c.retriever = j.at("retriever");
    c.encoder = j.at("encoder");
    c.model = j.at("model");
    // Numbers through the typed readers: a hand-edited float in an int field was a cast out
    // of range (undefined behaviour), not an error.
    const std::string where = "ablation configuration";
    auto integer = [&](const char* key, int64_t lo, int64_t hi) {
      return json_integer(required_field(j, key, where), field_name(where, key), lo, hi);
    };
    c.greedy = json_bool(required_field(j, "greedy", where), field_name(where, "greedy"));
    c.temperature = float(json_number(required_field(j, "temperature", where), field_name(where, "temperature")));
    c.top_k = int(integer("top_k", 0, std::numeric_limits<int>::max()));
    c.top_p = float(json_number(required_field(j, "top_p", where), field_name(where, "top_p")));
    c.max_new_tokens = size_t(integer("max_new_tokens", 0, std::numeric_limits<int64_t>::max()));
    c.seed = json_unsigned(required_field(j, "seed", where), field_name(where, "seed"));
    c.context_policy = j.at("context_policy");
    c.limit = size_t(integer("limit", 0, std::numeric_limits<int64_t>::max()));
    c.weights = j.value("weights", std::string("f16"));
    c.adapter = j.value("adapter", std::string());
    if (j.contains("shard")) {
      c.shard_index = size_t(json_integer(j["shard"].at(0), where + ": shard", 1));
      c.shard_count = size_t(json_integer(j["shard"].at(1), where + ": shard", 1));
    }
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(fmt::format("ablation configuration: {}", e.what()));
  }
  return c;
}

size_t AblationProgress::all_done() const {
  size_t n = 0;
  for (size_t d : done) n += d;
  return n;
}
size_t AblationProgress::all_total() const {
  size_t n = 0;
  for (size_t t : total) n += t;
  return n;
}

namespace {

// One prompt to generate: test row i at config.ks[run].
struct Job {
  size_t run, i;
  std::string prompt;
};

// Refuses a folder of another configuration (or clears it when forced), then records ours;
// `dry_run` only checks.
void claim_folder(const AblationConfig& config, bool force, bool dry_run = false) {
  const fs::path out = config.out;
  const fs::path config_path = out / "ablation_config.json";
  if (fs::exists(config_path)) {
    const auto previous = read_json_file(config_path.string());
    const auto current = config.identity();
    if (previous != current) {
      if (!force) {
        std::vector<std::string> changed;
        for (const auto& [key, value] : current.items())
          if (!previous.contains(key) || previous[key] != value) changed.push_back(key);
        for (const auto& [key, value] : previous.items())
          if (!current.contains(key)) changed.push_back(key);
        throw Error(fmt::format("{} holds a run of another configuration (differs in: {}); use another --out or "
                                "--force to replace it",
                                out.string(), fmt::join(changed, ", ")));
      }
      if (dry_run) return;
      for (const auto& e : fs::directory_iterator(out))
        if (e.path().filename().string().rfind("k_", 0) == 0 || e.path().filename() == "baseline") fs::remove_all(e.path());
    }
  }
  if (dry_run) return;
  fs::create_directories(out);
  write_json_file(config_path.string(), config.identity());
}

}  // namespace

bool retrieves_by_pivot(const AblationConfig& c) {
  return c.variant == PromptVariant::Pivot ||
         (c.variant == PromptVariant::Custom && c.labels.custom_template.find("{pivot}") != std::string::npos);
}

IndexSpec study_index_spec(const AblationConfig& config) {
  IndexSpec spec;
  spec.data = config.data;
  spec.split = config.train_split;
  spec.pivot = retrieves_by_pivot(config) ? config.pivot : config.source;
  spec.source = config.source;
  spec.target = config.target;
  spec.retriever = config.retriever;
  spec.model = config.encoder;
  spec.seed = config.seed;
  return spec;
}

std::vector<Example> study_examples(const AblationConfig& config, const LoadedIndex& index, const std::string& query_pivot,
                                    const std::string& query_source, size_t k) {
  std::vector<Example> examples;
  if (k == 0) return examples;
  const std::string& query = retrieves_by_pivot(config) ? query_pivot : query_source;
  for (const auto& n : retrieve(*index.retriever, index.pool, query, k)) {
    const auto& ex = index.pool.rows[n.index];
    examples.push_back({ex.pivot, ex.source, ex.target});
  }
  return examples;
}

std::string study_prompt(const AblationConfig& config, const Tokenizer& tokenizer, const std::vector<Example>& examples,
                         const std::string& query_pivot, const std::string& query_source) {
  return apply_chat_template(tokenizer, build_messages(config.labels, examples, query_pivot, query_source, config.variant),
                             false);
}

GenerationRequest study_request(const AblationConfig& config, const GenerationConfig& generation,
                                const Tokenizer& tokenizer, const std::string& prompt, uint64_t seed) {
  GenerationRequest r;
  r.prompt = encode_rendered_prompt(tokenizer, prompt, DuplicateBos::Reproduce).ids;
  r.max_new_tokens = config.max_new_tokens;
  r.sampling.greedy = config.greedy;
  r.sampling.temperature = config.temperature;
  r.sampling.top_k = config.top_k;
  r.sampling.top_p = config.top_p;
  r.sampling.seed = seed;
  r.eos_ids.assign(generation.eos_token_ids.begin(), generation.eos_token_ids.end());
  return r;
}

LoadOptions study_load_options(const AblationConfig& config) {
  const DType weights = config.weights == "f16"    ? DType::F16
                        : config.weights == "f32"  ? DType::F32
                        : config.weights == "int8" || config.weights == "q8" ? DType::I8
                        : config.weights == "nf4"  ? DType::NF4
                        : config.weights == "gguf" || config.weights == "gguf-q8" ? DType::GGML
                                                   : throw Error(fmt::format("weights '{}': expected f16, f32, int8, q8, nf4, gguf or gguf-q8", config.weights));
  LoadOptions o{weights, OpsImpl::Fast};
  o.int8_activations = config.weights == "q8" || config.weights == "gguf-q8";
  o.adapter = config.adapter;
  o.device = resolve_device(config.device, weights == DType::F16);  // a GPU runs F16 weights
  return o;
}

EngineOptions study_engine_options(const AblationConfig& config) {
  EngineOptions o;
  o.max_batch = config.max_batch;
  o.reuse_prefixes = config.reuse_prefixes;
  o.context = config.context_policy == "error"           ? ContextPolicy::Error
              : config.context_policy == "truncate-left" ? ContextPolicy::TruncateLeft
                                                         : ContextPolicy::Allow;
  return o;
}

namespace {

// --- The phases of run_ablation, in order.

// Settings that cannot work, refused before anything is read or written.
void check_config(const AblationConfig& config) {
  if (config.out.empty()) throw Error("ablation: no output directory");
  if (config.ks.empty()) throw Error("ablation: no k values");
  if (std::set<size_t>(config.ks.begin(), config.ks.end()).size() != config.ks.size())
    throw Error("ablation: a k value is listed twice");
  for (size_t k : config.ks)
    if (k > 10) throw Error(fmt::format("ablation: k = {}: the study retrieves at most 10 examples", k));
  if (config.shard_count == 0 || config.shard_index == 0 || config.shard_index > config.shard_count)
    throw Error(fmt::format("ablation: shard {}/{}: expected i/N with 1 <= i <= N", config.shard_index, config.shard_count));
  if (config.variant == PromptVariant::Custom) custom_user_message(config.labels, "", "");  // template errors now
  if (config.max_batch == 0) throw Error("ablation: max batch 0");
  study_load_options(config);  // an unknown weight storage fails before any work
}

// What every phase reads: the test rows, the example index, the model's tokenizer and
// configurations. COMET's and the baseline's files are checked here too: a wrong path
// fails in seconds, not after hours of generation.
struct StudyInputs {
  Table test_table;
  ParallelCorpus test;
  LoadedIndex index;
  std::unique_ptr<Tokenizer> tokenizer;
  ModelConfig model_config;
  GenerationConfig generation;
};

StudyInputs read_inputs(const AblationConfig& config) {
  StudyInputs in;
  in.test_table = read_split(config.data, config.test_split);
  in.test = load_parallel(in.test_table, config.pivot, config.source, config.target);
  if (config.limit > 0 && in.test.rows.size() > config.limit) in.test.rows.resize(config.limit);
  if (in.test.rows.empty()) throw Error(fmt::format("{} ({}): no test rows", config.data, config.test_split));
  in.index = build_index(study_index_spec(config),
                         config.index_dir.empty() ? (fs::path(config.out) / "index").string() : config.index_dir);
  in.tokenizer = load_tokenizer(config.model);
  in.model_config = load_model_config(config.model);
  if (!config.comet_model.empty()) {  // loaded after generation (write_outputs)
    if (!fs::exists(fs::path(config.comet_model) / "model.safetensors"))
      throw Error(fmt::format("COMET model {}: no model.safetensors", config.comet_name.empty() ? config.comet_model : config.comet_name));
    (void)load_model_config(config.comet_encoder);
  }
  in.generation = load_generation_config(config.model, in.model_config);
  if (config.baseline.enabled()) (void)baseline_identity(config);  // its languages, tokenizer and settings
  return in;
}

// This shard's rows and, per k, its durable row log with what it already holds.
struct RunLogs {
  std::vector<size_t> slice;  // test row indices of this shard
  std::vector<std::unique_ptr<RowLog>> logs;  // one per config.ks entry
  AblationProgress progress;
};

RunLogs open_logs(const AblationConfig& config, const ParallelCorpus& test, const AblationRunOptions& options) {
  RunLogs r;
  for (size_t i = config.shard_index - 1; i < test.rows.size(); i += config.shard_count) r.slice.push_back(i);
  r.progress.ks = config.ks;
  for (size_t k : config.ks) {
    const fs::path kdir = fs::path(config.out) / fmt::format("k_{}", k);
    const bool writes = options.generate_missing && !options.dry_run;
    if (writes) fs::create_directories(kdir);
    r.logs.push_back(std::make_unique<RowLog>(kdir / "rows.jsonl", writes));
    size_t done = 0;
    for (size_t i : r.slice) done += r.logs.back()->rows().count(i);
    for (const auto& [i, rec] : r.logs.back()->rows())
      if (i >= test.rows.size() || (i % config.shard_count) != config.shard_index - 1)
        throw FormatError(fmt::format("{}: row {} does not belong to this run ({} test rows, shard {}/{})",
                                      (kdir / "rows.jsonl").string(), i, test.rows.size(), config.shard_index,
                                      config.shard_count));
    r.progress.done.push_back(done);
    r.progress.total.push_back(r.slice.size());
    r.progress.resumed += done;
  }
  return r;
}

// Every missing (row, k), row by row with the largest k first: the engine copies the shared
// prompt prefix of a row's smaller k from its larger ones. `generate_missing` false (a
// merge): a missing row is an error.
std::vector<Job> plan_jobs(const AblationConfig& config, const StudyInputs& in, const RunLogs& r, bool generate_missing) {
  std::vector<size_t> order(config.ks.size());
  for (size_t j = 0; j < order.size(); ++j) order[j] = j;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return config.ks[a] > config.ks[b]; });
  const size_t k_max = *std::max_element(config.ks.begin(), config.ks.end());
  std::vector<Job> jobs;
  std::vector<std::string> missing;
  for (size_t i : r.slice) {
    std::vector<Example> examples;  // the k_max nearest; k takes the first k (retrieve's contract)
    bool retrieved = false;
    for (size_t run : order) {
      if (r.logs[run]->rows().count(i)) continue;
      if (!generate_missing) {
        missing.push_back(fmt::format("k={} row {}", config.ks[run], i));
        continue;
      }
      const auto& row = in.test.rows[i];
      if (!retrieved) {
        examples = study_examples(config, in.index, row.pivot, row.source, k_max);
        retrieved = true;
      }
      const size_t k = std::min(config.ks[run], examples.size());
      const std::vector<Example> shown(examples.begin(), examples.begin() + long(k));
      jobs.push_back({run, i, study_prompt(config, *in.tokenizer, shown, row.pivot, row.source)});
    }
  }
  if (!missing.empty())
    throw Error(fmt::format("{}: {} rows missing (first: {}); were all shards complete?", config.out, missing.size(),
                            missing.front()));
  return jobs;
}

// A dry run's plan: per k what would run and how long its prompts are, the run plan's
// workload (each pending prompt's tokens, its output estimated by the reference's token
// count + the end token, at most max_new_tokens), and the baseline's rows.
void describe_plan(const AblationConfig& config, const StudyInputs& in, const RunLogs& r, const std::vector<Job>& jobs,
                   AblationOutcome& outcome) {
  const size_t context = size_t(in.model_config.max_position_embeddings);
  outcome.workload.max_new_tokens = config.max_new_tokens;
  outcome.workload.max_batch = config.max_batch;
  std::map<size_t, size_t> reference_tokens;
  for (const auto& job : jobs) {
    outcome.workload.prompt_tokens.push_back(in.tokenizer->encode(job.prompt, true).size());
    auto it = reference_tokens.find(job.i);
    if (it == reference_tokens.end())
      it = reference_tokens.emplace(job.i, in.tokenizer->encode(in.test.rows[job.i].target, false).size() + 1).first;
    outcome.workload.output_tokens.push_back(std::min(it->second, config.max_new_tokens));
  }
  outcome.workload.rows = jobs.size();
  outcome.plan = nlohmann::json::array();
  for (size_t run = 0; run < config.ks.size(); ++run) {
    std::vector<std::string> prompts;
    for (const auto& job : jobs)
      if (job.run == run) prompts.push_back(job.prompt);
    const PromptLengths lengths =
        prompt_lengths(*in.tokenizer, prompts, context > config.max_new_tokens ? context - config.max_new_tokens : 1);
    outcome.plan.push_back({{"k", config.ks[run]},
                            {"done", r.progress.done[run]},
                            {"pending", prompts.size()},
                            {"prompt_tokens_p50", lengths.p50},
                            {"prompt_tokens_p90", lengths.p90},
                            {"prompt_tokens_max", lengths.max},
                            {"over_context", lengths.over_context}});
  }
  if (config.baseline.enabled()) {
    const RowLog baseline_log(fs::path(config.out) / "baseline" / "rows.jsonl", false);
    size_t done = 0;
    for (size_t i : r.slice) done += baseline_log.rows().count(i);
    outcome.baseline_plan = {{"done", done}, {"pending", r.slice.size() - done}, {"languages", baseline_identity(config)}};
  }
}

// The LLM over every job as one engine call; each finished row appended to its k's log
// (fsync'd) before the next model step; runtime.json says where and how it ran.
void generate(const AblationConfig& config, const StudyInputs& in, const std::vector<Job>& jobs, RunLogs& r,
              const AblationRunOptions& options, AblationOutcome& outcome) {
  if (jobs.empty()) {
    if (options.on_progress) options.on_progress(r.progress);
    return;
  }
  LlamaModel model(config.model, study_load_options(config));
  std::vector<GenerationRequest> requests;
  for (const auto& job : jobs)  // per-row seeds: independent of batching and resumption
    requests.push_back(
        study_request(config, in.generation, *in.tokenizer, job.prompt, config.seed + in.test.rows[job.i].row));
  AblationProgress& progress = r.progress;
  const auto start = std::chrono::steady_clock::now();
  auto report = [&] {
    progress.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (options.on_progress) options.on_progress(progress);
  };
  GenerationHooks hooks;
  hooks.on_token = [&](size_t, TokenId) {
    ++progress.generated_tokens;
    report();
  };
  hooks.on_finished = [&](const std::vector<size_t>& finished, const std::vector<GenerationResult>& results) {
    std::map<size_t, std::vector<nlohmann::json>> by_run;
    for (size_t f : finished) {
      const auto& job = jobs[f];
      const auto& res = results[f];
      by_run[job.run].push_back({{"i", job.i},
                                 {"row", in.test.rows[job.i].row},
                                 {"prompt", job.prompt},
                                 {"response", py_strip_utf8(res.text)},
                                 {"prompt_tokens", res.prompt_tokens},
                                 {"reused_prompt_tokens", res.reused_prompt_tokens},
                                 {"new_tokens", res.tokens.size()},
                                 {"finish", finish_reason_name(res.finish)},
                                 {"context_overflow", res.context_overflow},
                                 {"seconds", res.compute_seconds}});
      progress.prompt_tokens += res.prompt_tokens;
      progress.reused_prompt_tokens += res.reused_prompt_tokens;
    }
    for (auto& [run, records] : by_run) {
      r.logs[run]->append(records);
      progress.done[run] += records.size();
      outcome.rows_generated += records.size();
    }
    report();
  };
  report();
  nlohmann::json resources;
  {
    // GPU memory and utilisation sampled while generating; the host's peak.
    const ResourceMonitor monitor(model.device());
    Engine(model, in.tokenizer.get()).generate(requests, study_engine_options(config), hooks);
    resources = monitor.summary();
  }
  nlohmann::json runtime = {{"device", model.device().to_string()},
                            {"device_name", model.describe_device()},
                            {"load_seconds", model.load_seconds()},
                            {"generation_seconds", progress.seconds}};
  runtime.update(resources);
  if (model.device().kind == DeviceKind::CUDA) runtime["peak_device_memory_bytes"] = cuda::peak_allocated_bytes(model.device().index);
  write_json_file((fs::path(config.out) / "runtime.json").string(), runtime);
  outcome.runtime = runtime;
  outcome.prompt_tokens = progress.prompt_tokens;
  outcome.reused_prompt_tokens = progress.reused_prompt_tokens;
}

// The original's output files from the logs. COMET's encoder is loaded only now, after the
// LLM is gone (both in memory at once would need their sum); if it fails, every row is
// already in the logs and a rerun scores them.
void write_outputs(const AblationConfig& config, const StudyInputs& in, const RunLogs& r) {
  std::vector<const std::map<size_t, nlohmann::json>*> rows;
  for (const auto& log : r.logs) rows.push_back(&log->rows());
  std::unique_ptr<RowLog> baseline_log;
  if (config.baseline.enabled()) baseline_log = std::make_unique<RowLog>(fs::path(config.out) / "baseline" / "rows.jsonl", false);
  std::unique_ptr<comet::Model> comet_model;
  if (!config.comet_model.empty())  // on the device the LLM ran on
    comet_model = std::make_unique<comet::Model>(config.comet_model, config.comet_encoder, config.comet_name,
                                                 resolve_device(config.device, config.weights == "f16"),
                                                 config.comet_weights);
  write_ablation_outputs({config, in.test_table, in.test, *in.tokenizer, size_t(in.model_config.max_position_embeddings),
                          in.index.manifest, comet_model.get(), baseline_log ? &baseline_log->rows() : nullptr},
                         rows);
}

}  // namespace

AblationOutcome run_ablation(const AblationConfig& config, const AblationRunOptions& options) {
  check_config(config);
  claim_folder(config, options.force, options.dry_run);
  const StudyInputs in = read_inputs(config);
  RunLogs logs = open_logs(config, in.test, options);
  AblationOutcome outcome;
  outcome.rows_resumed = logs.progress.resumed;
  const std::vector<Job> jobs = plan_jobs(config, in, logs, options.generate_missing);
  if (options.dry_run) {
    describe_plan(config, in, logs, jobs, outcome);
    return outcome;
  }
  generate(config, in, jobs, logs, options, outcome);
  // The NLLB baseline after the LLM is gone (both in memory at once would need their sum).
  outcome.baseline = run_baseline(config, in.test, logs.slice, options.force, options.generate_missing,
                                  options.on_baseline_progress);
  if (config.shard_count > 1) return outcome;  // the merge writes the outputs
  write_outputs(config, in, logs);
  outcome.outputs_written = true;
  return outcome;
}

AblationOutcome merge_ablation(const std::vector<std::string>& shard_dirs, const std::string& out, bool force,
                               const std::string& comet_model, const std::string& comet_encoder,
                               const std::string& comet_name, DType comet_weights) {
  if (shard_dirs.empty()) throw Error("merge: no shard folders");
  // Every shard of one configuration, each once.
  nlohmann::json identity;
  size_t count = 0;
  std::map<size_t, fs::path> shards;
  std::set<size_t> ks;
  for (const auto& dir : shard_dirs) {
    const fs::path path = fs::path(dir) / "ablation_config.json";
    if (!fs::exists(path)) throw Error(fmt::format("{}: not an ablation folder (no ablation_config.json)", dir));
    auto j = read_json_file(path.string());
    if (!j.contains("shard") || !j["shard"].is_array() || j["shard"].size() != 2)
      throw Error(fmt::format("{}: not a shard (run with --shard i/N)", dir));
    const size_t i = j["shard"][0], n = j["shard"][1];
    j.erase("shard");
    if (shards.empty()) identity = j, count = n;
    if (j != identity) throw Error(fmt::format("{}: a shard of another configuration than {}", dir, shard_dirs.front()));
    if (n != count) throw Error(fmt::format("{}: shard {}/{}, but {} is one of {}", dir, i, n, shard_dirs.front(), count));
    if (!shards.emplace(i, dir).second) throw Error(fmt::format("{}: shard {}/{} is given twice", dir, i, n));
    std::set<size_t> here;
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename().string();
      if (e.is_directory() && name.rfind("k_", 0) == 0 && name.size() > 2 &&
          name.find_first_not_of("0123456789", 2) == std::string::npos)
        here.insert(std::stoul(name.substr(2)));
    }
    if (ks.empty()) ks = here;
    if (here != ks) throw Error(fmt::format("{}: holds other k runs than {}", dir, shard_dirs.front()));
  }
  for (size_t i = 1; i <= count; ++i)
    if (!shards.count(i)) throw Error(fmt::format("merge: shard {}/{} is missing", i, count));
  if (ks.empty()) throw Error(fmt::format("{}: no k runs", shard_dirs.front()));

  AblationConfig config = AblationConfig::from_identity(identity);
  config.ks.assign(ks.begin(), ks.end());
  config.out = out;
  config.comet_model = comet_model;
  config.comet_encoder = comet_encoder;
  config.comet_name = comet_name;
  config.comet_weights = comet_weights;
  // The joined logs, then the outputs of a single run over them (nothing left to generate).
  claim_folder(config, force);
  for (size_t k : ks) {
    std::map<size_t, nlohmann::json> rows;
    for (const auto& [i, dir] : shards) {
      const RowLog log(fs::path(dir) / fmt::format("k_{}", k) / "rows.jsonl", false);
      rows.insert(log.rows().begin(), log.rows().end());
    }
    std::string text;
    for (const auto& [i, rec] : rows) text += rec.dump() + "\n";
    const fs::path kdir = fs::path(out) / fmt::format("k_{}", k);
    fs::create_directories(kdir);
    write_file_atomically((kdir / "rows.jsonl").string(), text);
  }
  // The baseline's rows, when the shards ran one (the same in every shard).
  if (fs::exists(shards.begin()->second / "baseline" / "baseline_config.json")) {
    const auto id = read_json_file((shards.begin()->second / "baseline" / "baseline_config.json").string());
    std::map<size_t, nlohmann::json> rows;
    for (const auto& [i, dir] : shards) {
      const fs::path path = fs::path(dir) / "baseline" / "baseline_config.json";
      if (!fs::exists(path) || read_json_file(path.string()) != id)
        throw Error(fmt::format("{}: its baseline differs from {}'s (or it has none)", dir.string(), shards.begin()->second.string()));
      const RowLog log(fs::path(dir) / "baseline" / "rows.jsonl", false);
      rows.insert(log.rows().begin(), log.rows().end());
    }
    config.baseline = baseline_from_identity(id);
    std::string text;
    for (const auto& [i, rec] : rows) text += rec.dump() + "\n";
    const fs::path bdir = fs::path(out) / "baseline";
    fs::create_directories(bdir);
    write_file_atomically((bdir / "rows.jsonl").string(), text);
    write_json_file((bdir / "baseline_config.json").string(), id);
  }
  const fs::path index_dir = fs::path(out) / "index";
  if (!fs::exists(index_dir) && fs::exists(shards.begin()->second / "index"))
    fs::copy(shards.begin()->second / "index", index_dir, fs::copy_options::recursive);
  AblationRunOptions run;
  run.generate_missing = false;
  return run_ablation(config, run);  // rows_resumed: every row joined
}

}  // namespace pivotmt
