// The NLLB golden cases of tests/goldens/nllb_tiny (make_nllb_golden.py): each generation
// case's sources and transformers' output ids, and its settings as pivotmt's. Shared by the
// CPU tests (test_nllb) and the device tests (test_gpu_encoder).
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/seq2seq.h"
#include "test_util.h"
#include "tokenizer/nllb_tokenizer.h"

namespace pivotmt::test {

inline std::string nllb_tiny_dir() { return source_dir() + "/tests/goldens/nllb_tiny"; }

inline Seq2SeqSettings nllb_settings_of(const nlohmann::json& j, int32_t forced) {
  Seq2SeqSettings s;
  s.max_length = j.value("max_length", size_t(200));
  s.num_beams = j.value("num_beams", size_t(1));
  s.length_penalty = j.value("length_penalty", 1.0);
  s.no_repeat_ngram_size = j.value("no_repeat_ngram_size", size_t(0));
  if (j.contains("early_stopping")) {
    const auto& e = j["early_stopping"];
    s.early_stopping = e.is_string() ? EarlyStopping::Never : (e.get<bool>() ? EarlyStopping::True : EarlyStopping::False);
  }
  s.forced_bos_token_id = forced;
  return s;
}

struct NllbGenerationCase {
  std::string name;
  std::vector<std::vector<int32_t>> sources;         // token ids
  std::vector<std::vector<int32_t>> expected_ids;    // transformers' outputs (padding dropped)
  std::vector<std::string> expected_texts;
  Seq2SeqSettings settings;
};

inline std::vector<NllbGenerationCase> nllb_generation_cases(const NllbTokenizer& tok) {
  const auto golden = nlohmann::json::parse(read_file(nllb_tiny_dir() + "/golden.json"));
  std::vector<NllbGenerationCase> cases;
  for (const auto& g : golden.at("generation")) {
    NllbGenerationCase c;
    c.name = g.at("name").get<std::string>() + " → " + g.at("tgt_lang").get<std::string>();
    for (const auto& src : g.at("sources")) {
      c.sources.push_back(tok.encode_source(src.at("text").get<std::string>(), src.at("lang").get<std::string>()));
      c.expected_ids.push_back(src.at("output_ids").get<std::vector<int32_t>>());
      c.expected_texts.push_back(src.at("output_text").get<std::string>());
    }
    c.settings = nllb_settings_of(g.at("settings"), tok.language_id(g.at("tgt_lang").get<std::string>()));
    cases.push_back(std::move(c));
  }
  return cases;
}

}  // namespace pivotmt::test
