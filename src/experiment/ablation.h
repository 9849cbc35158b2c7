// The k-ablation runner: for every test row and every k, retrieve k examples, build the
// original's prompt, generate, and store the row durably; then write the original's
// output layout (REFERENCE §7) with correct scores.
//
// All (k, row) prompts of a run are built up front and go to the engine as one job, ordered
// row by row with the largest k first, so the engine can copy each row's shared prefix
// (system prompt and leading examples) from its k = 10 prompt to the smaller k.
//
// Crash safety: each k has an append-only log (k_{k}/rows.jsonl), one JSON line per
// finished row, fsync'd as the row finishes. A rerun reads the log, drops a torn last line,
// and generates only the missing rows; per-row seeds (seed + test row index) make sampled
// rows independent of which rows ran together, so a resumed run writes the same files as an
// uninterrupted one.
//
// Scale-out: `shard` i/N generates the rows whose index is i-1 modulo N and writes only the
// logs; merge_ablation joins the N folders and writes the outputs a single run would.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/generate.h"
#include "experiment/baseline.h"
#include "experiment/prompt.h"
#include "core/dtype.h"
#include "experiment/run_plan.h"
#include "models/model_config.h"
#include "retrieval/index.h"

namespace pivotmt {

struct AblationConfig {
  // Data: a table file, a directory of split files or a hub dataset id (resolved by the CLI).
  std::string data;
  std::string train_split = "train", test_split = "test";
  std::string pivot = "hin", source = "mar", target = "gom";
  PromptLabels labels;
  PromptVariant variant = PromptVariant::Pivot;
  std::string retriever = "bm25";  // see IndexSpec
  std::string encoder;             // sentence encoder directory (minilm retrievers)
  std::string model;               // model directory
  std::string device = "auto";     // auto | cpu | cuda[:N] (not part of the run's identity)
  std::string weights = "f16";     // weight storage: f16 | f32 | int8 (weight-only, per output channel) | q8 (int8 · int8) | nf4
  std::string adapter;             // a PEFT LoRA adapter directory applied unmerged (empty: none)
  std::vector<size_t> ks = {0, 1, 3, 5, 7, 10};
  bool greedy = false;  // default: the original's sampling
  float temperature = 0.1f, top_p = 0.75f;
  int top_k = 50;
  size_t max_new_tokens = 600;
  uint64_t seed = 0;
  std::string context_policy = "allow";  // error | truncate-left | allow
  size_t limit = 0;                      // test rows (0: all)
  size_t max_batch = 32;
  bool reuse_prefixes = true;  // copy shared prompt prefixes between sequences (same outputs)
  std::string index_dir;       // where the retrieval index lives (default OUT/index)
  size_t shard_index = 1, shard_count = 1;  // this process runs slice shard_index of shard_count
  std::string out;
  // COMET (metrics/comet.h): the metric's weights directory and its encoder's (config and
  // tokenizer); empty: "COMET Score" stays null. Scoring only: not part of the identity,
  // so a finished folder can be rescored with it.
  std::string comet_model, comet_encoder;
  std::string comet_name;  // the model as the user named it (signatures, messages); empty: comet_model
  DType comet_weights = DType::F32;  // the COMET encoder's weight storage (comet::Model)
  // The NLLB-200 baseline (experiment/baseline.h): OUT/baseline/, with an identity of its own
  // (baseline/baseline_config.json), so adding one to a finished folder keeps its k runs.
  BaselineConfig baseline;

  // Everything that decides the outputs (not `out`, `max_batch`, `reuse_prefixes`, the
  // index folder or the k values: a folder
  // may gain k runs): a folder holding another configuration is refused unless forced.
  // Includes "shard": [i, N] when sharded.
  nlohmann::json identity() const;
  // The inverse of identity() (ks, out and max_batch keep their defaults).
  static AblationConfig from_identity(const nlohmann::json& identity);
};

struct AblationProgress {
  std::vector<size_t> ks;           // the runs, in the order of the config
  std::vector<size_t> done, total;  // rows per run (of this shard)
  size_t resumed = 0;               // rows finished before this process started
  size_t generated_tokens = 0, prompt_tokens = 0, reused_prompt_tokens = 0;  // by this process
  double seconds = 0;               // since generation started in this process
  size_t all_done() const;
  size_t all_total() const;
};

struct AblationOutcome {
  size_t rows_generated = 0, rows_resumed = 0;  // this process / read back from the logs
  size_t prompt_tokens = 0, reused_prompt_tokens = 0;  // of the rows generated here
  bool outputs_written = false;                         // false for a shard of several
  // Dry run: per k, rows done and pending, prompt-token percentiles of the pending ones and
  // how many would pass the context (prompt + max_new_tokens > max_position_embeddings).
  nlohmann::json plan;
  BaselineOutcome baseline;  // the NLLB baseline's rows (when configured)
  // Dry run with a baseline: its rows done and pending.
  nlohmann::json baseline_plan;
  // Dry run: the pending work for a run plan (prompt tokens, estimated output tokens).
  StudyWorkload workload;
  // What generation used (runtime.json): device, load time, peak host / GPU memory, GPU
  // utilisation; null when nothing was generated.
  nlohmann::json runtime;
};

struct AblationRunOptions {
  bool force = false;               // replace a folder of another configuration
  bool generate_missing = true;     // false: a missing row is an error (merging)
  bool dry_run = false;             // plan only: no model, nothing written but the index
  std::function<void(const AblationProgress&)> on_progress;  // often (every token): throttle
  std::function<void(size_t done, size_t total)> on_baseline_progress;  // the baseline's rows
};

// The pieces a run and `pivotmt translate` share.
// Examples are retrieved by the pivot sentence when the prompt shows it, else by the source
// (the original's no-pivot runs, REFERENCE §3).
bool retrieves_by_pivot(const AblationConfig& config);
IndexSpec study_index_spec(const AblationConfig& config);
// The query's messages with these examples (most similar first), rendered by the chat template.
std::string study_prompt(const AblationConfig& config, const Tokenizer& tokenizer, const std::vector<Example>& examples,
                         const std::string& query_pivot, const std::string& query_source);
// The k nearest examples of the pool for a query row.
std::vector<Example> study_examples(const AblationConfig& config, const LoadedIndex& index, const std::string& query_pivot,
                                    const std::string& query_source, size_t k);
GenerationRequest study_request(const AblationConfig& config, const GenerationConfig& generation,
                                const Tokenizer& tokenizer, const std::string& prompt, uint64_t seed);
EngineOptions study_engine_options(const AblationConfig& config);
LoadOptions study_load_options(const AblationConfig& config);  // throws on an unknown weight storage

// Throws on bad configuration or data.
AblationOutcome run_ablation(const AblationConfig& config, const AblationRunOptions& options = {});

// Joins the folders of `--shard i/N` runs (all N, same configuration) into `out` and writes
// the final outputs there, equal to a single run's (rows_resumed counts the rows joined, all
// k together). Throws naming a missing shard or row.
// `comet_model` / `comet_encoder` / `comet_weights`: as AblationConfig's (empty: no COMET).
AblationOutcome merge_ablation(const std::vector<std::string>& shard_dirs, const std::string& out, bool force,
                               const std::string& comet_model = "", const std::string& comet_encoder = "",
                               const std::string& comet_name = "", DType comet_weights = DType::F32);

// BLEU, chrF, chrF++ and TER of translations against one reference each, as
// `pivotmt score` reports them (run_scoring's JSON); rows with an empty translation or
// reference are left out and counted in `failed` (REFERENCE §6). Null when none is left.
// confidence_n > 0 adds sacrebleu's bootstrap interval ("mean", "ci": 95%, seed 12345).
nlohmann::json score_translations(const std::vector<std::string>& translations, const std::vector<std::string>& references,
                                  size_t* failed, int confidence_n = 0);

// RFC 4180 CSV field as pandas writes it (quoted only when it holds , " \r or \n).
std::string csv_field(const std::string& value);

}  // namespace pivotmt
