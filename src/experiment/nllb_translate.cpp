#include "experiment/nllb_translate.h"

#include <chrono>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/json_file.h"
#include "io/torch_checkpoint.h"

namespace pivotmt {
namespace fs = std::filesystem;

const std::vector<std::pair<std::string, std::string>>& nllb_column_codes() {
  static const std::vector<std::pair<std::string, std::string>> table = {
      {"hin", "hin_Deva"}, {"mar", "mar_Deva"}, {"gom", "mar_Deva"}, {"eng", "eng_Latn"}, {"en", "eng_Latn"},
      {"msa", "arb_Arab"}, {"tn", "aeb_Arab"},  {"eg", "arz_Arab"},  {"jo", "ajp_Arab"},  {"pa", "ajp_Arab"},
      {"sy", "apc_Arab"}};
  return table;
}

std::string nllb_code_for_column(const std::string& column) {
  const auto dot = column.rfind('.');
  const std::string name = dot == std::string::npos ? column : column.substr(dot + 1);
  for (const auto& [c, code] : nllb_column_codes())
    if (c == name) return code;
  return "";
}

std::string nllb_missing_language(const std::string& column) {
  const auto dot = column.rfind('.');
  const std::string name = dot == std::string::npos ? column : column.substr(dot + 1);
  return name == "gom" ? "Goan Konkani" : "";  // no gom_Deva among NLLB-200's 202 codes (REFERENCE §13)
}

NllbLanguages nllb_study_languages(const std::string& pivot, const std::string& source, const std::string& target,
                                   const std::string& given_src, const std::string& given_tgt, bool from_pivot,
                                   const std::string& src_option, const std::string& tgt_option) {
  auto code = [](const std::string& given, const std::string& column, const std::string& option) {
    if (!given.empty()) return given;
    const std::string c = nllb_code_for_column(column);
    if (c.empty()) {
      std::string known;
      for (const auto& [name, k] : nllb_column_codes()) known += fmt::format("{}{} → {}", known.empty() ? "" : ", ", name, k);
      throw Error(fmt::format("no NLLB language code for the column '{}' (known: {}); give {}", column, known, option));
    }
    return c;
  };
  NllbLanguages l;
  l.tgt_lang = code(given_tgt, target, tgt_option);
  l.from_pivot = from_pivot;
  l.column = from_pivot ? pivot : source;
  l.src_lang = code(given_src, l.column, src_option);
  if (const std::string missing = nllb_missing_language(target); !missing.empty()) {
    l.proxy_note = fmt::format("{} ({}) is not an NLLB-200 language: {} stands in as the target (a proxy)", missing,
                               target, l.tgt_lang);
    if (given_src.empty() && !from_pivot && l.src_lang == l.tgt_lang) {
      l.from_pivot = true;
      l.column = pivot;
      l.src_lang = code("", pivot, src_option);
    }
    // (Said whenever it holds, so that a configuration read back from its identity — a
    // merge — gives the same note.)
    if (l.from_pivot && nllb_code_for_column(source) == l.tgt_lang)
      l.proxy_note += fmt::format("; the source column {} is in that language already, so the pivot column {} is "
                                  "translated",
                                  source, pivot);
  }
  return l;
}

std::string nllb_weights_dir(const std::string& model_dir, const std::string& cache_dir) {
  const fs::path dir(model_dir);
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".safetensors" || e.path().filename() == "model.safetensors.index.json") return model_dir;
  const fs::path bin = dir / "pytorch_model.bin";
  if (!fs::exists(bin))
    throw Error(fmt::format("{}: neither model.safetensors nor pytorch_model.bin (the NLLB weights)", model_dir));
  if (cache_dir.empty()) throw Error(fmt::format("{}: no folder to convert it into", bin.string()));
  const M2M100Config cfg = load_m2m100_config(model_dir);
  const std::string target = (fs::path(cache_dir) / converted_checkpoint_key(bin.string())).string();
  // The encoder's and decoder's embeddings and lm_head are the shared matrix itself (tied):
  // written once, as model.shared.weight. Sinusoidal position tables are never weights.
  convert_checkpoint_once(bin.string(), target, "NLLB", [&](const std::string& name) {
    if (name.find(".embed_positions.") != std::string::npos) return false;
    const bool copy_of_shared = name == "model.encoder.embed_tokens.weight" || name == "model.decoder.embed_tokens.weight" ||
                                (cfg.tie_word_embeddings && name == "lm_head.weight");
    return !copy_of_shared;
  });
  return target;
}

DType stored_weights(DType weights, const Device& device) {
  return device.kind == DeviceKind::CUDA && weights == DType::I8 ? DType::F16 : weights;
}

NllbTranslator::NllbTranslator(const std::string& model_dir, const std::string& weights_dir, DType weights, OpsImpl impl,
                               const Device& device)
    : dir_(model_dir) {
  if (!is_m2m100_model(model_dir))
    throw UnsupportedError(fmt::format("{}: not an NLLB-200 / M2M100 model (config.json's model_type is not \"m2m_100\")",
                                       model_dir));
  tokenizer_ = std::make_unique<NllbTokenizer>(model_dir);
  model_ = std::make_unique<M2M100Model>(model_dir, stored_weights(weights, device), impl, weights_dir, device);
  if (tokenizer_->vocab_size() > size_t(model_->config().vocab_size))
    throw FormatError(fmt::format("{}: the tokenizer has {} ids, the model's vocabulary {}", model_dir,
                                  tokenizer_->vocab_size(), model_->config().vocab_size));
}

Seq2SeqSettings nllb_generation_settings(const std::string& model_dir, const NllbTokenizer& tokenizer,
                                         const std::string& tgt_lang) {
  Seq2SeqSettings s;
  s.forced_bos_token_id = tokenizer.language_id(tgt_lang);
  s.forced_eos_token_id = load_m2m100_config(model_dir).forced_eos_token_id;
  const fs::path path = fs::path(model_dir) / "generation_config.json";
  if (!fs::exists(path)) return s;
  const auto j = read_json_file(path.string());
  const std::string label = path.string();
  if (!j.is_object()) throw FormatError(fmt::format("{}: expected a JSON object", label));
  auto count = [&](const char* key, size_t& into, size_t min) {
    if (!j.contains(key) || j[key].is_null()) return;
    if (!j[key].is_number_integer() || j[key].get<int64_t>() < int64_t(min))
      throw FormatError(fmt::format("{}: '{}' should be an integer of at least {}", label, key, min));
    into = j[key].get<size_t>();
  };
  count("max_length", s.max_length, 2);
  count("num_beams", s.num_beams, 1);
  count("no_repeat_ngram_size", s.no_repeat_ngram_size, 0);
  if (j.contains("length_penalty") && j["length_penalty"].is_number()) s.length_penalty = j["length_penalty"].get<double>();
  if (j.contains("early_stopping")) {
    const auto& e = j["early_stopping"];
    if (e.is_boolean()) s.early_stopping = e.get<bool>() ? EarlyStopping::True : EarlyStopping::False;
    else if (e.is_string() && e.get<std::string>() == "never") s.early_stopping = EarlyStopping::Never;
    else if (!e.is_null()) throw FormatError(fmt::format("{}: early_stopping should be true, false or \"never\"", label));
  }
  if (j.contains("forced_eos_token_id") && j["forced_eos_token_id"].is_number_integer()) {
    const auto id = j["forced_eos_token_id"].get<int64_t>();
    if (id < 0 || id >= (int64_t(1) << 30))  // the vocabulary's bound is checked by generate
      throw FormatError(fmt::format("{}: forced_eos_token_id {} is out of range", label, id));
    s.forced_eos_token_id = int32_t(id);
  }
  return s;
}

std::vector<NllbTranslation> NllbTranslator::translate(const std::vector<std::string>& texts, const std::string& src_lang,
                                                       const Seq2SeqSettings& settings, size_t max_source_tokens,
                                                       const std::function<void(size_t, const NllbTranslation&)>& on_done) const {
  const size_t limit = max_source_tokens ? max_source_tokens : tokenizer_->model_max_length();
  std::vector<NllbTranslation> out(texts.size());
  std::vector<std::vector<int32_t>> sources;
  for (size_t i = 0; i < texts.size(); ++i) {
    sources.push_back(tokenizer_->encode_source(texts[i], src_lang, limit, &out[i].truncated));
    out[i].source_tokens = sources.back().size();
  }
  // Batches are timed as a whole; each sentence gets its share.
  auto batch_start = std::chrono::steady_clock::now();
  size_t batch_first = 0;
  std::vector<size_t> pending;  // finished, waiting for their batch's time
  auto flush = [&](size_t next_first) {
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - batch_start).count();
    const size_t n = next_first - batch_first;
    for (size_t i : pending) {
      out[i].seconds = n ? seconds / double(n) : 0.0;
      if (on_done) on_done(i, out[i]);
    }
    pending.clear();
    batch_first = next_first;
    batch_start = std::chrono::steady_clock::now();
  };
  const size_t batch = std::max<size_t>(1, settings.batch_size);
  generate_seq2seq(*model_, sources, settings, [&](size_t i, const Seq2SeqResult& r) {
    out[i].ids = r.ids;
    out[i].hit_max_length = r.hit_max_length;
    out[i].text = tokenizer_->decode(r.ids);
    pending.push_back(i);
    // generate_seq2seq finishes one batch (sources [b, b + batch)) before the next starts.
    const size_t batch_end = std::min(texts.size(), (batch_first / batch + 1) * batch);
    bool all = true;
    for (size_t j = batch_first; j < batch_end && all; ++j) all = !out[j].ids.empty();
    if (all) flush(batch_end);
  });
  return out;
}

}  // namespace pivotmt
