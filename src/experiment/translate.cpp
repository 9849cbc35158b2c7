#include "experiment/translate.h"

#include "text/unicode.h"

namespace pivotmt {

Translator::Translator(AblationConfig config, const std::string& index_dir)
    : config_(std::move(config)),
      index_(build_index(study_index_spec(config_), index_dir)),
      tokenizer_(load_tokenizer(config_.model)),
      model_config_(load_model_config(config_.model)),
      generation_(load_generation_config(config_.model, model_config_)),
      model_(std::make_unique<LlamaModel>(config_.model, study_load_options(config_))) {}

Translator::~Translator() = default;

std::vector<Translation> Translator::translate(const std::vector<TranslationQuery>& queries, size_t shots,
                                               uint64_t first_seed, const GenerationHooks& hooks) {
  std::vector<Translation> out(queries.size());
  std::vector<GenerationRequest> requests;
  for (size_t j = 0; j < queries.size(); ++j) {
    out[j].examples = study_examples(config_, index_, queries[j].pivot, queries[j].source, shots);
    const std::string prompt = study_prompt(config_, *tokenizer_, out[j].examples, queries[j].pivot, queries[j].source);
    requests.push_back(study_request(config_, generation_, *tokenizer_, prompt, config_.seed + first_seed + j));
  }
  auto results = Engine(*model_, tokenizer_.get()).generate(requests, study_engine_options(config_), hooks);
  for (size_t j = 0; j < queries.size(); ++j) {
    out[j].text = py_strip_utf8(results[j].text);
    out[j].result = std::move(results[j]);
  }
  return out;
}

}  // namespace pivotmt
