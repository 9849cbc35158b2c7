// COMET end to end against the real unbabel-comet package: a tiny random regression metric
// (tests/goldens/make_comet_golden.py: the tiny XLM-R of tests/goldens/xlmr, the Unigram
// vocabulary of tests/goldens/unigram, wmt22-comet-da's head at small sizes) scored by
// unbabel-comet's model.predict at batch size 1.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"
#include "metrics/comet.h"
#include "metrics/comet_files.h"
#include "test_util.h"

namespace pivotmt {
namespace {

const std::string kGoldens = std::string(PIVOTMT_SOURCE_DIR) + "/tests/goldens/";

// The golden's triples and unbabel-comet's scores of them (make_comet_golden.py).
struct Golden {
  std::vector<std::string> src, mt, ref;
  std::vector<double> scores;
  double system = 0;
};
Golden read_golden() {
  const auto j = nlohmann::json::parse(test::read_file(kGoldens + "comet_tiny/golden.json"));
  Golden g;
  for (const auto& r : j.at("rows")) {
    g.src.push_back(r.at("src"));
    g.mt.push_back(r.at("mt"));
    g.ref.push_back(r.at("ref"));
  }
  g.scores = j.at("scores").get<std::vector<double>>();
  g.system = j.at("system_score").get<double>();
  return g;
}

TEST(Comet, SegmentAndSystemScoresMatchUnbabelComet) {
  // The encoder's config and tokenizer (xlm-roberta-large's part) and the metric's weights.
  const comet::Model model(kGoldens + "comet_tiny", kGoldens + "unigram");
  EXPECT_EQ(model.max_tokens(), 126u);  // 130 positions − 4, as unbabel-comet truncates
  const Golden golden = read_golden();
  const auto scores = model.score(golden.src, golden.mt, golden.ref);
  const auto& want = golden.scores;
  ASSERT_EQ(scores.segments.size(), want.size());
  for (size_t s = 0; s < want.size(); ++s) EXPECT_NEAR(scores.segments[s], want[s], 1e-5) << "segment " << s;
  EXPECT_NEAR(scores.system, golden.system, 1e-5);
  EXPECT_EQ(scores.truncated, 1u);  // the long translation

  EXPECT_THROW(model.score({"a"}, {"b", "c"}, {"d"}), Error);
  EXPECT_TRUE(model.score({}, {}, {}).segments.empty());
}

std::vector<std::string> golden_texts() {
  const Golden g = read_golden();
  std::vector<std::string> texts;
  for (size_t i = 0; i < g.mt.size(); ++i)
    for (const auto* list : {&g.src, &g.mt, &g.ref}) texts.push_back((*list)[i]);
  return texts;
}

void expect_same_embeddings(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i)
    ASSERT_NEAR(got[i], want[i], 2e-6 * std::max(1.0f, std::fabs(want[i]))) << what << " at " << i;
}

// A literal "<pad>" in a text (tests/goldens/comet_tiny/pad_golden.json, unbabel-comet
// 2.2.7 with transformers 4.57): the tokenizer takes it as the padding token (XLM-R's class
// names it even when tokenizer.json does not), RoBERTa's positions skip it, COMET's pooling
// leaves it out of the sum. pivotmt numbered positions straight through and averaged it in
// (-0.682 against -0.712 on another model).
TEST(Comet, LiteralPadTokensAsUnbabelComet) {
  const comet::Model model(kGoldens + "comet_tiny", kGoldens + "unigram");
  const auto j = nlohmann::json::parse(test::read_file(kGoldens + "comet_tiny/pad_golden.json"));
  std::vector<std::string> src, mt, ref;
  for (const auto& r : j.at("rows")) {
    src.push_back(r.at("src"));
    mt.push_back(r.at("mt"));
    ref.push_back(r.at("ref"));
  }
  const auto ids = j.at("mt_ids").get<std::vector<std::vector<TokenId>>>();
  for (size_t s = 0; s < mt.size(); ++s) EXPECT_EQ(model.tokenize(mt[s]), ids[s]) << mt[s];
  const auto want = j.at("scores").get<std::vector<double>>();
  const auto fast = model.score(src, mt, ref);
  ASSERT_EQ(fast.segments.size(), want.size());
  for (size_t s = 0; s < want.size(); ++s) EXPECT_NEAR(fast.segments[s], want[s], 1e-5) << "segment " << s;
  // The reference path (one sentence at a time) agrees.
  std::vector<std::string> texts;
  for (size_t i = 0; i < mt.size(); ++i)
    for (const auto* list : {&src, &mt, &ref}) texts.push_back((*list)[i]);
  expect_same_embeddings(model.embed(texts), model.embed_reference(texts), "embeddings with <pad>");
}

// The packed fast path against the reference (one sentence at a time, every hidden state,
// the head's own mix); repeated texts encoded once and remembered, truncations still
// counted per occurrence.
TEST(Comet, FastEmbeddingsMatchTheReferencePath) {
  const comet::Model model(kGoldens + "comet_tiny", kGoldens + "unigram");
  const auto texts = golden_texts();
  size_t cut_fast = 0, cut_ref = 0;
  const auto want = model.embed_reference(texts, &cut_ref);
  expect_same_embeddings(model.embed(texts, &cut_fast), want, "embeddings");
  EXPECT_EQ(cut_fast, cut_ref);
  EXPECT_GE(cut_ref, 1u);
  // Twice over, from the cache: the same values, truncations counted again.
  std::vector<std::string> twice = texts;
  twice.insert(twice.end(), texts.begin(), texts.end());
  size_t cut_twice = 0;
  const auto again = model.embed(twice, &cut_twice);
  EXPECT_EQ(cut_twice, 2 * cut_ref);
  const size_t H = want.size() / texts.size();
  for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(again[i], again[want.size() + i]);
  expect_same_embeddings(std::vector<float>(again.begin(), again.begin() + std::ptrdiff_t(texts.size() * H)), want,
                         "cached embeddings");
}

// Layers after the last one sparsemax weighs above zero are not run; the result is the
// reference's, which runs them all.
TEST(Comet, LayersWithZeroWeightAreSkippedExactly) {
  const test::TempDir dir;
  {
    const SafetensorsFile tiny(kGoldens + "comet_tiny/model.safetensors");
    std::vector<TensorData> tensors;
    for (const auto& t : tiny.tensors()) {
      const auto bytes = tiny.data(t);
      tensors.push_back({{t.name, t.dtype, t.shape}, std::vector<std::byte>(bytes.begin(), bytes.end())});
    }
    // Mix weights [0.4, 0.35, -0.3]: sparsemax gives [0.525, 0.475, 0] (the last layer unused).
    for (auto& t : tensors) {
      const std::string prefix = "layerwise_attention.scalar_parameters.";
      if (!t.spec.name.starts_with(prefix)) continue;
      const int k = std::stoi(t.spec.name.substr(prefix.size()));
      const float v = k == 0 ? 0.4f : k == 1 ? 0.35f : -0.3f;
      ASSERT_EQ(t.bytes.size(), 4u);
      std::memcpy(t.bytes.data(), &v, 4);
    }
    write_safetensors(dir.str("model.safetensors"), tensors);
  }
  const comet::Model model(dir.str(), kGoldens + "unigram");
  const auto& w = model.layer_weights();
  ASSERT_EQ(w.size(), 3u);
  EXPECT_NEAR(w[0], 0.525f, 1e-6f);
  EXPECT_EQ(w[2], 0.0f);
  const auto texts = golden_texts();
  expect_same_embeddings(model.embed(texts), model.embed_reference(texts), "embeddings without the last layer");
}

// The hub repo's layout (checkpoints/model.ckpt, hparams.yaml): the checkpoint converted
// once into the cache without running its pickle, the encoder named by hparams.yaml and
// resolved through the callback, the scores those of the golden; a damaged checkpoint
// is named and leaves nothing in the cache.
TEST(Comet, HubLayoutIsConvertedOnceAndScoresTheGolden) {
  const std::string hub = kGoldens + "comet_tiny_hub";
  EXPECT_EQ(comet::pretrained_model_from_hparams(hub + "/hparams.yaml"), "FacebookAI/xlm-roberta-large");
  const test::TempDir cache;
  std::vector<std::string> asked;
  const auto resolver = [&](const std::string& id) {
    asked.push_back(id);
    return kGoldens + "unigram";
  };
  const auto where = comet::locate(hub, "", cache.str(), resolver);
  EXPECT_EQ(asked, std::vector<std::string>{"FacebookAI/xlm-roberta-large"});
  EXPECT_TRUE(where.model_dir.starts_with(cache.str()));
  EXPECT_TRUE(std::filesystem::exists(where.model_dir + "/model.safetensors"));
  const auto stamp = std::filesystem::last_write_time(where.model_dir + "/model.safetensors");
  EXPECT_EQ(comet::locate(hub, kGoldens + "unigram", cache.str(), resolver).model_dir, where.model_dir);
  EXPECT_EQ(std::filesystem::last_write_time(where.model_dir + "/model.safetensors"), stamp) << "converted twice";
  EXPECT_EQ(asked.size(), 1u);  // an explicit encoder is not resolved

  const comet::Model model(where.model_dir, where.encoder_dir);
  const Golden golden = read_golden();
  EXPECT_NEAR(model.score(golden.src, golden.mt, golden.ref).system, golden.system, 1e-5);

  // A converted folder is used as it is.
  EXPECT_EQ(comet::locate(kGoldens + "comet_tiny", kGoldens + "unigram", "", resolver).model_dir, kGoldens + "comet_tiny");

  // A checkpoint cut short.
  const test::TempDir damaged;
  std::filesystem::create_directories(damaged.str("checkpoints"));
  const std::string bytes = test::read_file(hub + "/checkpoints/model.ckpt");
  test::write_file(damaged.str("checkpoints/model.ckpt"), bytes.substr(0, bytes.size() / 2));
  const test::TempDir cache2;
  try {
    comet::locate(damaged.str(), kGoldens + "unigram", cache2.str(), resolver);
    FAIL() << "a truncated checkpoint was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.ckpt"), std::string::npos) << e.what();
  }
  for (const auto& f : std::filesystem::recursive_directory_iterator(cache2.str()))
    EXPECT_FALSE(f.is_regular_file()) << f.path() << " left behind";
  // Neither weights nor a checkpoint; an encoder that is not there.
  EXPECT_THROW(comet::locate(cache2.str(), kGoldens + "unigram", cache2.str(), resolver), Error);
  EXPECT_THROW(comet::locate(hub, cache2.str(), cache.str(), resolver), Error);
}

}  // namespace
}  // namespace pivotmt
