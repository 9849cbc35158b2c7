// COMET end to end against the real unbabel-comet package: a tiny random regression metric
// (tests/goldens/make_comet_golden.py: the tiny XLM-R of tests/goldens/xlmr, the Unigram
// vocabulary of tests/goldens/unigram, wmt22-comet-da's head at small sizes) scored by
// unbabel-comet's model.predict at batch size 1.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "metrics/comet.h"
#include "test_util.h"

namespace pivotmt {
namespace {

const std::string kGoldens = std::string(PIVOTMT_SOURCE_DIR) + "/tests/goldens/";

TEST(Comet, SegmentAndSystemScoresMatchUnbabelComet) {
  // The encoder's config and tokenizer (xlm-roberta-large's part) and the metric's weights.
  const comet::Model model(kGoldens + "comet_tiny", kGoldens + "unigram");
  EXPECT_EQ(model.max_tokens(), 126u);  // 130 positions − 4, as unbabel-comet truncates
  const auto golden = nlohmann::json::parse(test::read_file(kGoldens + "comet_tiny/golden.json"));
  std::vector<std::string> src, mt, ref;
  for (const auto& r : golden.at("rows")) {
    src.push_back(r.at("src"));
    mt.push_back(r.at("mt"));
    ref.push_back(r.at("ref"));
  }
  const auto scores = model.score(src, mt, ref);
  const auto want = golden.at("scores").get<std::vector<double>>();
  ASSERT_EQ(scores.segments.size(), want.size());
  for (size_t s = 0; s < want.size(); ++s) EXPECT_NEAR(scores.segments[s], want[s], 1e-5) << "segment " << s;
  EXPECT_NEAR(scores.system, golden.at("system_score").get<double>(), 1e-5);
  EXPECT_EQ(scores.truncated, 1u);  // the long translation

  EXPECT_THROW(model.score({"a"}, {"b", "c"}, {"d"}), Error);
  EXPECT_TRUE(model.score({}, {}, {}).segments.empty());
}

}  // namespace
}  // namespace pivotmt
