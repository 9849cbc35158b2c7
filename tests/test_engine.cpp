// Generation: greedy output equals transformers' (fixtures), batching does not change any
// request's output (greedy or seeded sampling), Hugging Face's sampling order, stop
// conditions and the context policies.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "engine/generate.h"
#include "io/safetensors.h"
#include "test_util.h"

namespace pivotmt {
namespace {

std::vector<int64_t> i64(const SafetensorsFile& f, const std::string& name) { return test::read_tensor<int64_t>(f, name); }

TEST(Sampling, HuggingFaceOrder) {
  const std::vector<float> logits = {1, 2, 3, 4};
  SamplingParams p{.greedy = false, .temperature = 1.0f, .top_k = 2, .top_p = 1.0f};
  auto d = sampling_distribution(logits, p);
  const double e3 = std::exp(-1.0), z = 1 + e3;
  EXPECT_EQ(d[0], 0.0f);
  EXPECT_EQ(d[1], 0.0f);
  EXPECT_NEAR(d[2], e3 / z, 1e-6);
  EXPECT_NEAR(d[3], 1 / z, 1e-6);
  p.top_p = 0.75f;  // the lower survivor's cumulative 0.269 > 0.25: kept
  d = sampling_distribution(logits, p);
  EXPECT_GT(d[2], 0.0f);
  p.top_p = 0.7f;  // 0.269 <= 0.3: removed, only the best remains
  d = sampling_distribution(logits, p);
  EXPECT_EQ(d[2], 0.0f);
  EXPECT_NEAR(d[3], 1.0f, 1e-6);
  // Temperature before top-k: a low temperature sharpens, the set is unchanged.
  p = {.greedy = false, .temperature = 0.1f, .top_k = 0, .top_p = 1.0f};
  d = sampling_distribution(logits, p);
  EXPECT_NEAR(d[3], 1.0 / (1 + std::exp(-10.0) + std::exp(-20.0) + std::exp(-30.0)), 1e-6);
  // top-k keeps ties with the k-th score.
  d = sampling_distribution(std::vector<float>{5, 5, 5, 1}, {.greedy = false, .temperature = 1.0f, .top_k = 2});
  EXPECT_GT(d[2], 0.0f);
  EXPECT_EQ(d[3], 0.0f);
  EXPECT_EQ(argmax(std::vector<float>{1, 7, 7, 2}), 1);  // first maximum
  EXPECT_THROW(sampling_distribution(logits, {.greedy = false, .temperature = 0.0f}), Error);
}

TEST(Sampling, SeededDrawsFollowTheDistribution) {
  const std::vector<float> logits = {0.0f, std::log(3.0f)};  // probabilities 1/4, 3/4
  SamplerRng rng(7);
  int ones = 0;
  for (int i = 0; i < 20000; ++i) ones += sample_token(logits, {.greedy = false}, rng);
  EXPECT_NEAR(ones / 20000.0, 0.75, 0.015);
}

class EngineTest : public ::testing::Test {
 protected:
  static LlamaModel& model() {
    static LlamaModel m(test::fixture("models/tiny-sharded"));
    return m;
  }
};

TEST_F(EngineTest, GreedyMatchesTransformersAloneAndBatched) {
  const SafetensorsFile golden(test::fixture("models/tiny-sharded/golden.safetensors"));
  std::vector<GenerationRequest> requests;
  std::vector<std::vector<int64_t>> expected;
  for (int r = 0; golden.find("r" + std::to_string(r) + ".input_ids"); ++r) {
    const auto ids = i64(golden, "r" + std::to_string(r) + ".input_ids");
    GenerationRequest q;
    q.prompt.assign(ids.begin(), ids.end());
    q.max_new_tokens = 24;
    q.ignore_eos = true;
    requests.push_back(q);
    expected.push_back(i64(golden, "r" + std::to_string(r) + ".greedy_tokens"));
  }
  Engine engine(model());
  for (size_t max_batch : {size_t(1), size_t(2), size_t(32)}) {
    const auto results = engine.generate(requests, {.max_batch = max_batch});
    for (size_t i = 0; i < results.size(); ++i) {
      EXPECT_EQ(std::vector<int64_t>(results[i].tokens.begin(), results[i].tokens.end()), expected[i])
          << "request " << i << " max_batch " << max_batch;
      EXPECT_EQ(results[i].finish, FinishReason::Length);
    }
  }
}

TEST_F(EngineTest, SeededSamplingIsBatchInvariant) {
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 4; ++i) {
    GenerationRequest r;
    r.prompt = {1, TokenId(10 + i), TokenId(100 + 3 * i)};
    for (int k = 0; k < i * 5; ++k) r.prompt.push_back(TokenId(200 + k));
    r.max_new_tokens = 12;
    r.sampling = {.greedy = false, .temperature = 1.0f, .top_k = 50, .top_p = 0.9f, .seed = uint64_t(1000 + i)};
    requests.push_back(r);
  }
  Engine engine(model());
  const auto together = engine.generate(requests, {.max_batch = 8});
  for (size_t i = 0; i < requests.size(); ++i) {
    const auto alone = engine.generate({requests[i]}, {});
    EXPECT_EQ(alone[0].tokens, together[i].tokens) << "request " << i;
  }
  auto other = requests[0];
  other.sampling.seed = 99;
  EXPECT_NE(engine.generate({other}, {})[0].tokens, together[0].tokens);
}

TEST_F(EngineTest, StopsAtEosAndBudget) {
  GenerationRequest r;
  r.prompt = {1, 5, 6};
  r.max_new_tokens = 10;
  Engine engine(model());
  const auto free_run = engine.generate({r}, {})[0];
  ASSERT_EQ(free_run.tokens.size(), 10u);
  r.eos_ids = {free_run.tokens[3]};
  const auto stopped = engine.generate({r}, {})[0];
  EXPECT_EQ(stopped.finish, FinishReason::Eos);
  EXPECT_LE(stopped.tokens.size(), 4u);
  EXPECT_EQ(stopped.tokens.back(), free_run.tokens[3]);
  r.ignore_eos = true;
  EXPECT_EQ(engine.generate({r}, {})[0].tokens, free_run.tokens);
  r.max_new_tokens = 0;
  const auto none = engine.generate({r}, {})[0];
  EXPECT_TRUE(none.tokens.empty());
  EXPECT_EQ(none.finish, FinishReason::Length);
}

TEST_F(EngineTest, EdgeCasesAndContextPolicies) {
  Engine engine(model());
  EXPECT_THROW(engine.generate({GenerationRequest{}}, {}), Error);  // empty prompt
  GenerationRequest bad;
  bad.prompt = {1, 5000};  // vocabulary is 2002
  bad.max_new_tokens = 1;
  EXPECT_THROW(engine.generate({bad}, {}), Error);
  GenerationRequest longer;
  longer.prompt.assign(2040, 7);
  longer.prompt[0] = 1;
  longer.max_new_tokens = 16;  // 2056 > 2048 positions
  EXPECT_THROW(engine.generate({longer}, {.context = ContextPolicy::Error}), Error);
  longer.max_new_tokens = 2;
  longer.prompt.resize(2047);
  longer.max_new_tokens = 4;
  const auto truncated = engine.generate({longer}, {.context = ContextPolicy::TruncateLeft})[0];
  EXPECT_EQ(truncated.truncated_tokens, 3u);
  EXPECT_FALSE(truncated.context_overflow);
  const auto allowed = engine.generate({longer}, {.context = ContextPolicy::Allow})[0];
  EXPECT_TRUE(allowed.context_overflow);
  EXPECT_EQ(allowed.tokens.size(), 4u);
}

TEST(EngineText, StopStringsCutTheText) {
  LlamaModel model(test::fixture("models/tiny-tower"));
  const auto tok = load_tokenizer(test::fixture("models/tiny-tower"));
  Engine engine(model, tok.get());
  GenerationRequest r;
  r.prompt = tok->encode("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n", true);
  r.max_new_tokens = 12;
  r.ignore_eos = true;
  const auto free_run = engine.generate({r}, {})[0];
  ASSERT_GE(free_run.text.size(), 4u);
  const std::string stop = free_run.text.substr(free_run.text.size() / 2, 2);
  r.stop_strings = {stop};
  const auto cut = engine.generate({r}, {})[0];
  EXPECT_EQ(cut.finish, FinishReason::StopString);
  EXPECT_EQ(cut.text.find(stop), std::string::npos);
  EXPECT_TRUE(free_run.text.starts_with(cut.text));
}

}  // namespace
}  // namespace pivotmt
