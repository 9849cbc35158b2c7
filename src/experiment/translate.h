// Ad-hoc translation with the study's machinery (`pivotmt translate`): the same index,
// retrieval, prompt and generation settings as an ablation run, for sentences that are not
// in a test split. Translating a test row with k examples gives the run's k response.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "experiment/ablation.h"
#include "models/llama_model.h"

namespace pivotmt {

struct TranslationQuery {
  std::string pivot, source;  // pivot may be empty when the prompt does not show it
};

struct Translation {
  std::string text;  // stripped as the original stripped responses
  std::vector<Example> examples;
  GenerationResult result;
};

class Translator {
 public:
  // Builds (or reuses) the index in index_dir; loads the tokenizer and the model.
  Translator(AblationConfig config, const std::string& index_dir);
  ~Translator();
  // Query j samples with seed config.seed + first_seed + j.
  std::vector<Translation> translate(const std::vector<TranslationQuery>& queries, size_t shots, uint64_t first_seed = 0,
                                     const GenerationHooks& hooks = {});
  const ModelConfig& model_config() const { return model_config_; }

 private:
  AblationConfig config_;
  LoadedIndex index_;
  std::unique_ptr<Tokenizer> tokenizer_;
  ModelConfig model_config_;
  GenerationConfig generation_;
  std::unique_ptr<LlamaModel> model_;
};

}  // namespace pivotmt
