// NLLB-200 (M2M100) against Hugging Face transformers: a tiny random model with a real
// SentencePiece BPE model trained on the shared corpora (tests/goldens/make_nllb_golden.py)
// — tokenization of the real test sentences, encoder states, teacher-forced logits, and
// greedy / beam-search outputs under several settings.
#include <gtest/gtest.h>

#include <set>

#include <cmath>
#include <filesystem>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/json_file.h"
#include "engine/seq2seq.h"
#include "io/safetensors.h"
#include "models/m2m100_model.h"
#include "nllb_golden.h"
#include "test_util.h"
#include "tokenizer/nllb_tokenizer.h"
#include "experiment/nllb_translate.h"

namespace pivotmt {
namespace {

const std::string kModel = std::string(PIVOTMT_SOURCE_DIR) + "/tests/goldens/nllb_tiny";

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(test::read_file(path)); }

TEST(NllbTokenizer, RealSentencesMatchTransformers) {
  const NllbTokenizer tok(kModel);
  const auto cases = read_json(kModel + "/tokenization.json");
  ASSERT_GT(cases.size(), 1000u);
  size_t checked = 0;
  for (const auto& c : cases) {
    const std::string text = c.at("text"), lang = c.at("lang");
    const size_t max_length = c.value("max_length", size_t(0));
    bool truncated = false;
    const auto ids = tok.encode_source(text, lang, max_length, &truncated);
    const auto expected = c.at("ids").get<std::vector<int32_t>>();
    ASSERT_EQ(ids, expected) << lang << ": " << text;
    if (max_length) EXPECT_TRUE(truncated);
    ++checked;
  }
  EXPECT_EQ(checked, cases.size());
}

TEST(NllbTokenizer, LayoutAndLanguageCodes) {
  const NllbTokenizer tok(kModel);
  // 1500 SentencePiece pieces + the fairseq offset, then the codes in their listed order.
  EXPECT_EQ(tok.language_id("eng_Latn"), 1501);
  EXPECT_EQ(tok.language_id("aeb_Arab"), 1506);
  EXPECT_EQ(tok.vocab_size(), 1508u);
  EXPECT_EQ(tok.model_max_length(), 1024u);
  try {
    tok.language_id("gom_Latn");
    FAIL() << "an unknown code was accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("gom_Latn"), std::string::npos) << msg;
    EXPECT_NE(msg.find("closest: gom_Deva"), std::string::npos) << msg;
  }
  EXPECT_EQ(closest_codes("gom", tok.languages(), 1), std::vector<std::string>{"gom_Deva"});
}

TEST(NllbTokenizer, LayoutFromSpecialTokensMapWithoutTokenizerJson) {
  // The real repository's tokenizer_config.json lists no codes; special_tokens_map.json
  // does. Without tokenizer.json the ids follow the listed order.
  test::TempDir dir;
  for (const char* f : {"sentencepiece.bpe.model", "special_tokens_map.json", "tokenizer_config.json"})
    std::filesystem::copy_file(kModel + "/" + f, dir.str(f));
  const NllbTokenizer tok(dir.str());
  const NllbTokenizer with_json(kModel);
  for (const auto& code : with_json.languages()) EXPECT_EQ(tok.language_id(code), with_json.language_id(code)) << code;
  EXPECT_EQ(tok.encode_source("काही भजने", "mar_Deva"), with_json.encode_source("काही भजने", "mar_Deva"));
}

// The slow layout as transformers saves it after a user adds a code (tests/goldens/
// nllb_tiny_added, transformers 4.57): every id comes from added_tokens_decoder /
// added_tokens.json. pivotmt numbered the codes by their order in special_tokens_map.json,
// so the added code took <mask>'s id and the forced first token was wrong.
TEST(NllbTokenizer, SlowLayoutReadsTheIdsTransformersSaved) {
  const std::string golden = std::string(PIVOTMT_SOURCE_DIR) + "/tests/goldens/nllb_tiny_added";
  test::TempDir dir;
  std::filesystem::copy_file(kModel + "/sentencepiece.bpe.model", dir.str("sentencepiece.bpe.model"));
  for (const char* f : {"special_tokens_map.json", "tokenizer_config.json", "added_tokens.json"})
    std::filesystem::copy_file(golden + "/" + f, dir.str(f));
  const NllbTokenizer tok(dir.str());
  const auto j = read_json_file(golden + "/golden.json");
  for (const auto& [code, id] : j.at("ids").items())
    if (code != "<mask>") EXPECT_EQ(tok.language_id(code), id.get<int32_t>()) << code;
  const auto& src = j.at("source");
  EXPECT_EQ(tok.encode_source(src.at("text").get<std::string>(), src.at("lang").get<std::string>()),
            src.at("ids").get<std::vector<int32_t>>());
}

TEST(NllbTokenizer, MissingFilesNameTheFolder) {
  test::TempDir dir;
  try {
    NllbTokenizer tok(dir.str());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sentencepiece.bpe.model"), std::string::npos) << e.what();
  }
  std::filesystem::copy_file(kModel + "/sentencepiece.bpe.model", dir.str("sentencepiece.bpe.model"));
  EXPECT_THROW(NllbTokenizer{dir.str()}, FormatError);  // no language codes anywhere
}

TEST(M2M100, SinusoidalPositionsAsTorch) {
  // Row p: [sin(p f_0) .. sin(p f_{h-1}), cos(p f_0) .. cos(p f_{h-1})], f_i = 10000^(−i/(h−1)).
  const size_t d = 8;
  const auto rows = sinusoidal_positions(0, 5, d, 1);
  for (size_t i = 0; i < d; ++i) EXPECT_EQ(rows[1 * d + i], 0.0f);  // the padding row
  for (size_t p : {0u, 2u, 4u})
    for (size_t i = 0; i < 4; ++i) {
      const double f = std::exp(-double(i) * std::log(10000.0) / 3.0);
      EXPECT_NEAR(rows[p * d + i], std::sin(double(p) * f), 1e-6);
      EXPECT_NEAR(rows[p * d + 4 + i], std::cos(double(p) * f), 1e-6);
    }
}

class M2M100Golden : public ::testing::TestWithParam<OpsImpl> {};

TEST_P(M2M100Golden, EncoderStatesAndLogits) {
  const M2M100Model model(kModel, DType::F32, GetParam());
  const SafetensorsFile golden_file(kModel + "/golden.safetensors");
  const SafetensorsFile* golden = &golden_file;
  for (int i = 0; i < 3; ++i) {
    const auto ids = test::read_tensor<int32_t>(*golden, fmt::format("input_ids.{}", i));
    const auto dec = test::read_tensor<int32_t>(*golden, fmt::format("decoder_ids.{}", i));
    const auto enc_expected = test::read_tensor<float>(*golden, fmt::format("encoder.{}", i));
    const auto logits_expected = test::read_tensor<float>(*golden, fmt::format("logits.{}", i));
    // The source packed after another (attention must stay within each source).
    const auto enc = model.encode({std::vector<int32_t>{1501, 5, 9, 2}, ids});
    ASSERT_EQ(enc.starts.back() - enc.starts[1], ids.size());
    const auto states = model.to_host(enc.states);
    double max_diff = 0;
    for (size_t k = 0; k < enc_expected.size(); ++k)
      max_diff = std::max(max_diff, double(std::fabs(states[enc.starts[1] * 64 + k] - enc_expected[k])));
    EXPECT_LT(max_diff, 1e-4) << "encoder, input " << i;

    const auto cross = model.cross_caches(enc);
    auto cache = model.new_self_cache();
    // Teacher forcing in two passes (3 tokens, then the rest) exercises the cache.
    std::vector<float> logits;
    const std::span<const int32_t> all(dec);
    auto first = model.decode({M2M100Model::DecoderRow{&cache, &cross[1], all.subspan(0, 3)}}, false);
    auto rest = model.decode({M2M100Model::DecoderRow{&cache, &cross[1], all.subspan(3)}}, false);
    logits.insert(logits.end(), first.begin(), first.end());
    logits.insert(logits.end(), rest.begin(), rest.end());
    ASSERT_EQ(logits.size(), logits_expected.size());
    max_diff = 0;
    for (size_t k = 0; k < logits.size(); ++k)
      max_diff = std::max(max_diff, double(std::fabs(logits[k] - logits_expected[k])));
    EXPECT_LT(max_diff, 1e-4) << "logits, input " << i;
  }
}

TEST_P(M2M100Golden, GenerationMatchesTransformers) {
  const M2M100Model model(kModel, DType::F32, GetParam());
  const NllbTokenizer tok(kModel);
  size_t cases = 0;
  for (auto& g : test::nllb_generation_cases(tok)) {
    g.settings.batch_size = 3;  // batches that end at different steps
    std::vector<size_t> seen;
    const auto results = generate_seq2seq(model, g.sources, g.settings, [&](size_t i, const Seq2SeqResult&) { seen.push_back(i); });
    EXPECT_EQ(seen.size(), g.sources.size());
    for (size_t i = 0; i < g.sources.size(); ++i) {
      auto ids = results[i].ids;
      while (!ids.empty() && ids.back() == NllbTokenizer::kPad) ids.pop_back();
      EXPECT_EQ(ids, g.expected_ids[i]) << g.name << ", source " << i;
      EXPECT_EQ(tok.decode(results[i].ids), g.expected_texts[i]) << g.name << ", source " << i;
      EXPECT_EQ(results[i].hit_max_length, results[i].ids.back() != 2);
      ++cases;
    }
  }
  EXPECT_EQ(cases, 70u);
}

INSTANTIATE_TEST_SUITE_P(Impl, M2M100Golden, ::testing::Values(OpsImpl::Reference, OpsImpl::Fast),
                         [](const auto& info) { return info.param == OpsImpl::Reference ? "Reference" : "Fast"; });

TEST(M2M100, LowerPrecisionWeightsStayClose) {
  // F16 and INT8 weights: the same greedy tokens on most sources is too weak a check on a
  // random model; the teacher-forced logits stay within the weights' rounding instead.
  const M2M100Model f32(kModel, DType::F32);
  const SafetensorsFile golden_file(kModel + "/golden.safetensors");
  const SafetensorsFile* golden = &golden_file;
  const auto ids = test::read_tensor<int32_t>(*golden, "input_ids.0");
  const auto dec = test::read_tensor<int32_t>(*golden, "decoder_ids.0");
  auto logits_of = [&](const M2M100Model& m) {
    const auto cross = m.cross_caches(m.encode(std::vector<std::vector<int32_t>>{ids}));
    auto cache = m.new_self_cache();
    return m.decode({M2M100Model::DecoderRow{&cache, &cross[0], std::span<const int32_t>(dec)}}, false);
  };
  const auto reference = logits_of(f32);
  for (auto [dtype, tol] : {std::pair{DType::F16, 0.02}, std::pair{DType::I8, 0.2}}) {
    const M2M100Model m(kModel, dtype);
    const auto logits = logits_of(m);
    double max_diff = 0, max_abs = 0;
    for (size_t k = 0; k < logits.size(); ++k) {
      max_diff = std::max(max_diff, double(std::fabs(logits[k] - reference[k])));
      max_abs = std::max(max_abs, double(std::fabs(reference[k])));
    }
    EXPECT_LT(max_diff, tol * max_abs) << dtype_name(dtype);
    EXPECT_GT(max_diff, 0.0) << dtype_name(dtype) << ": the weights were not converted";
  }
}

TEST(M2M100, NoRepeatNgramBansAsTransformers) {
  // transformers' example: 2-grams of [40, 2883, 2712, 4346] → after ...4346 nothing is
  // banned; after a sequence ending in 2883 the continuation 2712 is.
  EXPECT_TRUE(banned_ngram_tokens({40, 2883, 2712, 4346}, 2).empty());
  EXPECT_EQ(banned_ngram_tokens({40, 2883, 2712, 2883}, 2), std::vector<int32_t>{2712});
  EXPECT_EQ(banned_ngram_tokens({1, 2, 3, 1, 2}, 3), std::vector<int32_t>{3});
  EXPECT_TRUE(banned_ngram_tokens({1, 2}, 3).empty());  // shorter than n − 1 + 1
  EXPECT_EQ(banned_ngram_tokens({5, 6}, 1), (std::vector<int32_t>{5, 6}));
}

TEST(M2M100, BadInputIsNamed) {
  test::TempDir dir;
  auto config = read_json(kModel + "/config.json");
  config["model_type"] = "llama";
  test::write_file(dir.str("config.json"), config.dump());
  try {
    M2M100Model m(dir.str());
    FAIL();
  } catch (const UnsupportedError& e) {
    EXPECT_NE(std::string(e.what()).find("not an M2M100"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(is_m2m100_model(dir.str()));
  EXPECT_TRUE(is_m2m100_model(kModel));

  const M2M100Model model(kModel);
  Seq2SeqSettings s;
  s.max_length = 1;
  EXPECT_THROW(generate_seq2seq(model, {{1501, 2}}, s), Error);
  s.max_length = 10;
  s.forced_bos_token_id = 99999;
  EXPECT_THROW(generate_seq2seq(model, {{1501, 2}}, s), Error);
  EXPECT_THROW(model.encode({{1501, 99999, 2}}), Error);
}

}  // namespace
}  // namespace pivotmt

namespace pivotmt {
namespace {

TEST(NllbFiles, PytorchModelBinConvertedOnceWithoutTiedCopies) {
  // The hub's NLLB-200 repositories ship pytorch_model.bin only; its tied embeddings are one
  // storage under four names. Converted once into the cache, the model computes as from the
  // safetensors of the same weights.
  const std::string bin_dir = kModel + "_bin";
  test::TempDir cache;
  const std::string weights = nllb_weights_dir(bin_dir, cache.str());
  ASSERT_NE(weights, bin_dir);
  const auto converted = std::filesystem::path(weights) / "model.safetensors";
  ASSERT_TRUE(std::filesystem::exists(converted));
  const SafetensorsFile file(converted.string());
  EXPECT_NE(file.find("model.shared.weight"), nullptr);
  for (const char* alias : {"lm_head.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"})
    EXPECT_EQ(file.find(alias), nullptr) << alias << " written again";
  const auto written = std::filesystem::last_write_time(converted);
  EXPECT_EQ(nllb_weights_dir(bin_dir, cache.str()), weights);  // found, not converted again
  EXPECT_EQ(std::filesystem::last_write_time(converted), written);
  EXPECT_EQ(nllb_weights_dir(kModel, cache.str()), kModel);  // safetensors: used in place

  const NllbTranslator from_bin(bin_dir, weights, DType::F32);
  const NllbTranslator from_safetensors(kModel, "", DType::F32);
  const std::vector<std::string> texts = {"काही भजने शतकांपूर्वीची आहेत", "हे खूप सुंदर आहे"};
  auto s = from_safetensors.settings("gom_Deva");
  s.num_beams = 2;
  const auto a = from_bin.translate(texts, "mar_Deva", s);
  const auto b = from_safetensors.translate(texts, "mar_Deva", s);
  for (size_t i = 0; i < texts.size(); ++i) EXPECT_EQ(a[i].ids, b[i].ids);

  test::TempDir empty;
  EXPECT_THROW(nllb_weights_dir(empty.str(), cache.str()), Error);
}

// Goan Konkani is not among NLLB-200's 202 codes (the real model's special_tokens_map.json
// has no gom_Deva): the study's default is Marathi as a named proxy, and Konkani's Marathi
// source then gives way to its Hindi pivot. Every default code is one of the real model's.
TEST(NllbFiles, KonkaniHasANamedProxyTarget) {
  const auto real = read_json_file(test::fixture("tokenizers/nllb-200-distilled-600M/special_tokens_map.json"));
  std::set<std::string> codes;
  for (const auto& c : real.at("additional_special_tokens")) codes.insert(c.is_string() ? c.get<std::string>() : c.at("content").get<std::string>());
  ASSERT_EQ(codes.size(), 202u);
  EXPECT_FALSE(codes.count("gom_Deva"));
  for (const auto& [column, code] : nllb_column_codes()) EXPECT_TRUE(codes.count(code)) << column << " -> " << code;

  const auto konkani = nllb_study_languages("hin", "mar", "gom", "", "", false, "--src-lang", "--tgt-lang");
  EXPECT_EQ(konkani.tgt_lang, "mar_Deva");
  EXPECT_EQ(konkani.src_lang, "hin_Deva");
  EXPECT_EQ(konkani.column, "hin");
  EXPECT_TRUE(konkani.from_pivot);
  EXPECT_NE(konkani.proxy_note.find("Goan Konkani (gom) is not an NLLB-200 language: mar_Deva stands in"), std::string::npos)
      << konkani.proxy_note;
  // A source code given: kept, and the proxy still named.
  const auto given = nllb_study_languages("hin", "mar", "gom", "mar_Deva", "", false, "--src-lang", "--tgt-lang");
  EXPECT_EQ(given.src_lang, "mar_Deva");
  EXPECT_FALSE(given.from_pivot);
  EXPECT_FALSE(given.proxy_note.empty());
  // Tunisian Arabic is an NLLB-200 language: no proxy.
  const auto tunisian = nllb_study_languages("msa", "eg", "tn", "", "", false, "--src-lang", "--tgt-lang");
  EXPECT_EQ(tunisian.tgt_lang, "aeb_Arab");
  EXPECT_EQ(tunisian.src_lang, "arz_Arab");
  EXPECT_TRUE(tunisian.proxy_note.empty());
  EXPECT_THROW(nllb_study_languages("hin", "mar", "xx", "", "", false, "--src-lang", "--tgt-lang"), Error);
}

TEST(NllbFiles, ColumnCodesAndTruncation) {
  EXPECT_EQ(nllb_code_for_column("gom"), "mar_Deva");
  EXPECT_EQ(nllb_code_for_column("translation.tn"), "aeb_Arab");
  EXPECT_EQ(nllb_code_for_column("msa"), "arb_Arab");
  EXPECT_EQ(nllb_code_for_column("xx"), "");
  // Sources past the limit are cut and say so; the output is still a translation.
  const NllbTranslator t(kModel);
  const std::string long_text = test::read_file(test::fixture("original/konkani_train_pool_reconstructed.jsonl")).substr(0, 3000);
  auto s = t.settings("gom_Deva");
  s.max_length = 6;
  const auto out = t.translate({long_text, "हे"}, "mar_Deva", s, 20);
  EXPECT_TRUE(out[0].truncated);
  EXPECT_EQ(out[0].source_tokens, 20u);
  EXPECT_FALSE(out[1].truncated);
  EXPECT_LE(out[0].ids.size(), 6u);
}

}  // namespace
}  // namespace pivotmt
