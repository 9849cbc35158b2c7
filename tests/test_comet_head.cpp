// COMET's scoring head against unbabel-comet's own modules (LayerwiseAttention with
// sparsemax, average_pooling, RegressionMetric.estimate's features, FeedForward) on random
// hidden states: tests/goldens/comet_head.safetensors, written by make_comet_head_golden.py.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "core/error.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "metrics/comet_head.h"
#include "test_util.h"

namespace pivotmt {
namespace {

const std::string kGolden = std::string(PIVOTMT_SOURCE_DIR) + "/tests/goldens/comet_head.safetensors";

TEST(CometHead, SparsemaxMatchesEntmax) {
  const SafetensorsFile golden(kGolden);
  for (int i = 0; i < 4; ++i) {
    const auto z = test::read_tensor<float>(golden, "sparsemax" + std::to_string(i) + ".z");
    const auto want = test::read_tensor<float>(golden, "sparsemax" + std::to_string(i) + ".p");
    const auto got = comet::sparsemax(z);
    ASSERT_EQ(got.size(), want.size());
    double sum = 0;
    for (size_t k = 0; k < got.size(); ++k) {
      EXPECT_NEAR(got[k], want[k], 1e-6) << "vector " << i << " entry " << k;
      EXPECT_EQ(got[k] == 0.0f, want[k] == 0.0f) << "support differs: vector " << i << " entry " << k;
      sum += got[k];
    }
    EXPECT_NEAR(sum, 1.0, 1e-6);  // a point of the simplex
  }
  EXPECT_THROW(comet::sparsemax({}), Error);
}

TEST(CometHead, EmbeddingsAndScoresMatchUnbabelComet) {
  const SafetensorsFile golden(kGolden);
  const test::TempDir dir;
  std::filesystem::copy_file(kGolden, dir.str("model.safetensors"));
  const Checkpoint ckpt(dir.str());
  const size_t H = 16;
  const comet::Head head(ckpt, H);
  ASSERT_EQ(head.layers(), 5u);
  EXPECT_FLOAT_EQ(head.gamma(), 1.7f);
  std::vector<float> emb[3];  // src, mt, ref: [3, H] each
  const char* parts[3] = {"src", "mt", "ref"};
  for (int n = 0; n < 3; ++n)
    for (int p = 0; p < 3; ++p) {
      const std::string key = "t" + std::to_string(n) + "." + parts[p] + ".";
      const auto states = test::read_tensor<float>(golden, key + "hidden_states");
      const size_t T = states.size() / (head.layers() * H);
      const auto got = head.sentence_embedding(states.data(), T);
      const auto want = test::read_tensor<float>(golden, key + "embedding");
      ASSERT_EQ(got.size(), H);
      for (size_t i = 0; i < H; ++i) ASSERT_NEAR(got[i], want[i], 1e-5) << key << i;
      emb[p].insert(emb[p].end(), got.begin(), got.end());
    }
  const auto scores = head.score(emb[0].data(), emb[1].data(), emb[2].data(), 3);
  const auto want = test::read_tensor<float>(golden, "scores");
  ASSERT_EQ(scores.size(), 3u);
  for (size_t s = 0; s < 3; ++s) EXPECT_NEAR(scores[s], want[s], 1e-5) << "segment " << s;
}

TEST(CometHead, MissingOrMisshapedTensorsAreNamed) {
  const test::TempDir dir;
  std::filesystem::copy_file(kGolden, dir.str("model.safetensors"));
  const Checkpoint ckpt(dir.str());
  try {
    comet::Head head(ckpt, 8);  // the estimator expects 6 * 8 inputs, the file has 96
    FAIL() << "expected a shape error";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("estimator.ff.0.weight"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace pivotmt
