// The files of a finished ablation (REFERENCE §7 plus pivotmt's own): results_k{k}.csv,
// scores_k{k}.json, ablation_summary.csv, ablation_detailed_results.json, report.md,
// manifest.json and the plots, all written from the row logs (so a merge of shards writes
// exactly what a single run does).
#pragma once
#include <map>
#include <vector>

#include <nlohmann/json.hpp>

#include "experiment/ablation.h"
#include "io/table.h"
#include "retrieval/corpus.h"
#include "tokenizer/tokenizer.h"

namespace pivotmt {
namespace comet {
class Model;
}

struct AblationInputs {
  const AblationConfig& config;
  const Table& test_table;     // as read (the CSVs repeat its columns)
  const ParallelCorpus& test;  // the test rows translated
  const Tokenizer& tokenizer;
  size_t context_length = 0;  // the model's max_position_embeddings
  nlohmann::json index_manifest;
  const comet::Model* comet = nullptr;  // scores COMET when given (config.comet_model)
  // The NLLB baseline's records by test row index (baseline/rows.jsonl), when it ran.
  const std::map<size_t, nlohmann::json>* baseline = nullptr;
};

// rows[j]: the records of config.ks[j] by test row index, one for every test row.
void write_ablation_outputs(const AblationInputs& in, const std::vector<const std::map<size_t, nlohmann::json>*>& rows);

}  // namespace pivotmt
