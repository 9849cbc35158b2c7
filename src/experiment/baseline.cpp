#include "experiment/baseline.h"

#include "backends/backend.h"

#include <filesystem>

#include <fmt/format.h>

#include "backends/backend.h"
#include "core/error.h"
#include "io/json_fields.h"
#include "experiment/ablation.h"
#include "experiment/nllb_translate.h"
#include "experiment/row_log.h"
#include "io/json_file.h"
#include "retrieval/corpus.h"
#include "text/unicode.h"

namespace pivotmt {
namespace fs = std::filesystem;

namespace {
const char* early_name(EarlyStopping e) {
  return e == EarlyStopping::True ? "true" : e == EarlyStopping::Never ? "never" : "false";
}

DType baseline_dtype(const std::string& weights) {
  if (weights == "f32") return DType::F32;
  if (weights == "f16") return DType::F16;
  if (weights == "int8") return DType::I8;
  throw Error(fmt::format("baseline weights '{}': expected f32, f16 or int8", weights));
}
}  // namespace

BaselineLanguages baseline_languages(const AblationConfig& config) {
  const BaselineConfig& b = config.baseline;
  try {
    return nllb_study_languages(config.pivot, config.source, config.target, b.src_lang, b.tgt_lang, b.from_pivot,
                                "--baseline-src-lang", "--baseline-tgt-lang");
  } catch (const Error& e) {
    throw Error(fmt::format("baseline: {}", e.what()));
  }
}

Seq2SeqSettings baseline_settings(const AblationConfig& config, const BaselineLanguages& languages) {
  const BaselineConfig& b = config.baseline;
  const NllbTokenizer tokenizer(b.model);
  (void)tokenizer.language_id(languages.src_lang);  // an unknown code fails now, naming close ones
  Seq2SeqSettings s = nllb_generation_settings(b.model, tokenizer, languages.tgt_lang);
  if (b.num_beams) s.num_beams = *b.num_beams;
  if (b.max_length) s.max_length = *b.max_length;
  if (b.no_repeat_ngram_size) s.no_repeat_ngram_size = *b.no_repeat_ngram_size;
  if (b.length_penalty) s.length_penalty = *b.length_penalty;
  if (b.early_stopping) s.early_stopping = *b.early_stopping;
  s.batch_size = b.batch;
  return s;
}

nlohmann::json baseline_identity(const AblationConfig& config) {
  const BaselineConfig& b = config.baseline;
  const auto languages = baseline_languages(config);
  const auto s = baseline_settings(config, languages);
  nlohmann::json j = {{"model", b.model},
                      {"weights", b.weights},
                      {"column", languages.column},
                      {"from_pivot", languages.from_pivot},
                      {"src_lang", languages.src_lang},
                      {"tgt_lang", languages.tgt_lang},
                      {"max_length", s.max_length},
                      {"num_beams", s.num_beams},
                      {"length_penalty", s.length_penalty},
                      {"early_stopping", early_name(s.early_stopping)},
                      {"no_repeat_ngram_size", s.no_repeat_ngram_size},
                      {"forced_eos_token_id", s.forced_eos_token_id ? nlohmann::json(*s.forced_eos_token_id) : nlohmann::json()}};
  if (!b.weights_dir.empty()) j["weights_dir"] = b.weights_dir;
  if (!languages.proxy_note.empty()) j["proxy"] = languages.proxy_note;
  return j;
}

BaselineConfig baseline_from_identity(const nlohmann::json& j) {
  BaselineConfig b;
  try {
    b.model = j.at("model");
    b.weights = j.at("weights");
    b.weights_dir = j.value("weights_dir", std::string());
    b.from_pivot = j.at("from_pivot");
    b.src_lang = j.at("src_lang");
    b.tgt_lang = j.at("tgt_lang");
    const std::string where = "baseline_config.json";
    b.max_length = size_t(json_integer(j.at("max_length"), field_name(where, "max_length"), 1));
    b.num_beams = size_t(json_integer(j.at("num_beams"), field_name(where, "num_beams"), 1));
    b.length_penalty = json_number(j.at("length_penalty"), field_name(where, "length_penalty"));
    const std::string e = j.at("early_stopping");
    b.early_stopping = e == "true" ? EarlyStopping::True : e == "never" ? EarlyStopping::Never : EarlyStopping::False;
    b.no_repeat_ngram_size = size_t(json_integer(j.at("no_repeat_ngram_size"), field_name(where, "no_repeat_ngram_size"), 0));
  } catch (const nlohmann::json::exception& e) {
    throw FormatError(fmt::format("baseline_config.json: {}", e.what()));
  }
  return b;
}

BaselineOutcome run_baseline(const AblationConfig& config, const ParallelCorpus& test, const std::vector<size_t>& slice,
                             bool force, bool generate_missing,
                             const std::function<void(size_t, size_t)>& on_progress) {
  BaselineOutcome outcome;
  if (!config.baseline.enabled()) return outcome;
  const fs::path dir = fs::path(config.out) / "baseline";
  const fs::path id_path = dir / "baseline_config.json";
  const auto identity = baseline_identity(config);
  if (fs::exists(id_path)) {
    const auto previous = read_json_file(id_path.string());
    if (previous != identity) {
      if (!force) {
        std::vector<std::string> changed;
        for (const auto& [key, value] : identity.items())
          if (!previous.contains(key) || previous[key] != value) changed.push_back(key);
        throw Error(fmt::format("{} holds a baseline of another configuration (differs in: {}); use --force to "
                                "replace it",
                                dir.string(), fmt::join(changed, ", ")));
      }
      fs::remove_all(dir);
    }
  }
  if (generate_missing) {
    fs::create_directories(dir);
    write_json_file(id_path.string(), identity);
  }
  RowLog log(dir / "rows.jsonl", generate_missing);
  std::vector<size_t> missing;
  for (size_t i : slice)
    if (!log.rows().count(i)) missing.push_back(i);
  for (const auto& [i, rec] : log.rows())
    if (i >= test.rows.size() || (i % config.shard_count) != config.shard_index - 1)
      throw FormatError(fmt::format("{}: row {} does not belong to this run ({} test rows, shard {}/{})",
                                    (dir / "rows.jsonl").string(), i, test.rows.size(), config.shard_index,
                                    config.shard_count));
  outcome.resumed = slice.size() - missing.size();
  outcome.written = true;
  if (!missing.empty() && !generate_missing)
    throw Error(fmt::format("{}: {} baseline rows missing (first: row {}); were all shards complete?", dir.string(),
                            missing.size(), missing.front()));
  if (on_progress) on_progress(outcome.resumed, slice.size());
  if (missing.empty()) return outcome;

  const auto languages = baseline_languages(config);
  const auto settings = baseline_settings(config, languages);
  // On the device the LLM ran on (a GPU when it ran on one).
  const NllbTranslator translator(config.baseline.model, config.baseline.weights_dir, baseline_dtype(config.baseline.weights),
                                  OpsImpl::Fast, resolve_device(config.device, config.weights == "f16"));
  std::vector<std::string> texts;
  for (size_t i : missing) texts.push_back(languages.from_pivot ? test.rows[i].pivot : test.rows[i].source);
  size_t done = outcome.resumed;
  translator.translate(texts, languages.src_lang, settings, 0, [&](size_t j, const NllbTranslation& t) {
    const size_t i = missing[j];
    log.append({{{"i", i},
                 {"row", test.rows[i].row},
                 {"prompt", texts[j]},
                 {"response", py_strip_utf8(t.text)},
                 {"prompt_tokens", t.source_tokens},
                 {"truncated", t.truncated},
                 {"new_tokens", t.ids.size() > 1 ? t.ids.size() - 1 : 0},  // the start token is not generated
                 {"finish", t.hit_max_length ? "length" : "eos"},
                 {"context_overflow", false},
                 {"seconds", t.seconds}}});
    ++outcome.generated;
    outcome.truncated += t.truncated ? 1 : 0;
    if (on_progress) on_progress(++done, slice.size());
  });
  return outcome;
}

}  // namespace pivotmt
