// The Llama-family forward pass against Hugging Face transformers (float32, eager):
// ../shared/fixtures/models/*/golden.safetensors holds, per prompt, logits at chosen
// positions and 24 greedy tokens with the logits of the first greedy steps.
// Both the reference ops and the fast kernels must agree within 1e-4.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"
#include "models/llama_model.h"
#include "test_util.h"

namespace pivotmt {
namespace {

std::vector<int64_t> i64(const SafetensorsFile& f, const std::string& name) { return test::read_tensor<int64_t>(f, name); }
std::vector<float> f32(const SafetensorsFile& f, const std::string& name) { return test::read_tensor<float>(f, name); }

size_t argmax(const float* row, size_t n) {
  size_t best = 0;
  for (size_t i = 1; i < n; ++i)
    if (row[i] > row[best]) best = i;  // first maximum, as torch.argmax
  return best;
}

struct Case {
  std::string model;
  OpsImpl ops;
  size_t max_prompt_len;  // the reference ops are slow: limit them to short prompts
};

class LlamaParity : public ::testing::TestWithParam<Case> {};

TEST_P(LlamaParity, LogitsAndGreedyTokens) {
  const Case c = GetParam();
  const std::string dir = test::fixture("models/" + c.model);
  LlamaModel model(dir, {DType::F32, c.ops});
  const SafetensorsFile golden(dir + "/golden.safetensors");
  const size_t V = size_t(model.config().vocab_size);
  size_t prompts = 0;
  for (int r = 0; golden.find("r" + std::to_string(r) + ".input_ids"); ++r) {
    const std::string p = "r" + std::to_string(r) + ".";
    const auto ids64 = i64(golden, p + "input_ids");
    if (ids64.size() > c.max_prompt_len) continue;
    ++prompts;
    std::vector<TokenId> ids(ids64.begin(), ids64.end());
    KvCache cache = model.new_cache();
    std::vector<LlamaModel::Input> batch = {{&cache, ids, true}};
    const auto logits = model.forward(batch);
    const auto positions = i64(golden, p + "logits_positions");
    const auto want = f32(golden, p + "logits");
    double worst = 0;
    for (size_t i = 0; i < positions.size(); ++i)
      for (size_t v = 0; v < V; ++v)
        worst = std::max(worst, double(std::fabs(logits[size_t(positions[i]) * V + v] - want[i * V + v])));
    EXPECT_LT(worst, 1e-4) << c.model << " prompt " << r << ": logits differ by " << worst;

    // Greedy decoding with the KV cache, one token at a time.
    const auto greedy = i64(golden, p + "greedy_tokens");
    const auto step_logits = f32(golden, p + "greedy_step_logits");
    const size_t steps_with_logits = step_logits.size() / V;
    size_t next = argmax(&logits[(ids.size() - 1) * V], V);
    double worst_step = 0;
    for (size_t s = 0; s < greedy.size(); ++s) {
      ASSERT_EQ(int64_t(next), greedy[s]) << c.model << " prompt " << r << " step " << s;
      std::vector<LlamaModel::Input> step = {{&cache, {TokenId(next)}, false}};
      const auto row = model.forward(step);
      if (s + 1 < steps_with_logits)
        for (size_t v = 0; v < V; ++v)
          worst_step = std::max(worst_step, double(std::fabs(row[v] - step_logits[(s + 1) * V + v])));
      next = argmax(row.data(), V);
    }
    EXPECT_LT(worst_step, 1e-4) << c.model << " prompt " << r << ": greedy step logits differ by " << worst_step;
  }
  EXPECT_GT(prompts, 0u);
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, LlamaParity,
    ::testing::Values(Case{"tiny-gqa", OpsImpl::Fast, 10000}, Case{"tiny-gqa", OpsImpl::Reference, 10000},
                      Case{"tiny-bf16-tied", OpsImpl::Fast, 10000}, Case{"tiny-bf16-tied", OpsImpl::Reference, 10000},
                      Case{"tiny-sharded", OpsImpl::Fast, 10000}, Case{"tiny-sharded", OpsImpl::Reference, 40},
                      Case{"tiny-tower", OpsImpl::Fast, 10000}, Case{"tiny-tower", OpsImpl::Reference, 10}),
    [](const auto& info) {
      std::string n = info.param.model + (info.param.ops == OpsImpl::Fast ? "_fast" : "_ref");
      for (auto& ch : n)
        if (ch == '-') ch = '_';
      return n;
    });

// A request's logits do not depend on what else is in the batch.
TEST(LlamaBatch, BatchInvariance) {
  LlamaModel model(test::fixture("models/tiny-sharded"));
  const size_t V = size_t(model.config().vocab_size);
  const std::vector<std::vector<TokenId>> prompts = {{1, 5, 9, 200, 7}, {1, 3}, {1, 4, 4, 4, 4, 4, 4, 4, 4, 100, 1999}};
  std::vector<std::vector<float>> alone;
  for (const auto& p : prompts) {
    KvCache c = model.new_cache();
    std::vector<LlamaModel::Input> b = {{&c, p, true}};
    alone.push_back(model.forward(b));
  }
  std::vector<KvCache> caches;
  for (size_t i = 0; i < prompts.size(); ++i) caches.push_back(model.new_cache());
  std::vector<LlamaModel::Input> batch;
  for (size_t i = 0; i < prompts.size(); ++i) batch.push_back({&caches[i], prompts[i], true});
  const auto together = model.forward(batch);
  size_t offset = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    for (size_t j = 0; j < alone[i].size(); ++j)
      ASSERT_NEAR(together[offset + j], alone[i][j], 1e-5) << "prompt " << i;
    offset += alone[i].size();
  }
  // Decode steps batched across sequences of different lengths.
  std::vector<LlamaModel::Input> step;
  for (size_t i = 0; i < prompts.size(); ++i) step.push_back({&caches[i], {TokenId(42 + i)}, false});
  const auto batched_step = model.forward(step);
  for (size_t i = 0; i < prompts.size(); ++i) {
    KvCache c = model.new_cache();
    std::vector<LlamaModel::Input> b = {{&c, prompts[i], false}};
    model.forward(b);
    std::vector<LlamaModel::Input> s = {{&c, {TokenId(42 + i)}, false}};
    const auto single = model.forward(s);
    for (size_t v = 0; v < V; ++v) ASSERT_NEAR(batched_step[i * V + v], single[v], 1e-5) << "sequence " << i;
  }
}

TEST(LlamaModel, F16WeightsStayClose) {
  LlamaModel f32(test::fixture("models/tiny-gqa")), f16(test::fixture("models/tiny-gqa"), {DType::F16, OpsImpl::Fast});
  KvCache a = f32.new_cache(), b = f16.new_cache();
  std::vector<LlamaModel::Input> x = {{&a, {1, 2, 3, 50, 60}, true}}, y = {{&b, {1, 2, 3, 50, 60}, true}};
  const auto la = f32.forward(x), lb = f16.forward(y);
  for (size_t i = 0; i < la.size(); ++i) ASSERT_NEAR(la[i], lb[i], 2e-2 * std::max(1.0f, std::fabs(la[i])));
  EXPECT_LT(f16.weight_bytes(), f32.weight_bytes());
}

TEST(LlamaModel, RejectsBadTokens) {
  LlamaModel model(test::fixture("models/tiny-gqa"));
  KvCache c = model.new_cache();
  std::vector<LlamaModel::Input> b = {{&c, {1, 300}, false}};
  EXPECT_THROW(model.forward(b), Error);
  std::vector<LlamaModel::Input> empty = {{&c, {}, false}};
  EXPECT_THROW(model.forward(empty), Error);
}

}  // namespace
}  // namespace pivotmt

namespace pivotmt {
namespace {

// Weight-only INT8 stays close to F32 (per-row absmax quantisation of random weights).
TEST(LlamaModel, Int8WeightsStayClose) {
  LlamaModel f32(test::fixture("models/tiny-sharded")), i8(test::fixture("models/tiny-sharded"), {DType::I8, OpsImpl::Fast});
  KvCache a = f32.new_cache(), b = i8.new_cache();
  const std::vector<TokenId> ids = {1, 20, 300, 4000 % 2002, 55, 66, 77};
  std::vector<LlamaModel::Input> x = {{&a, ids, true}}, y = {{&b, ids, true}};
  const auto la = f32.forward(x), lb = i8.forward(y);
  double max_abs = 0, max_err = 0;
  for (size_t i = 0; i < la.size(); ++i) {
    max_abs = std::max(max_abs, double(std::fabs(la[i])));
    max_err = std::max(max_err, double(std::fabs(la[i] - lb[i])));
  }
  EXPECT_LT(max_err, 0.05 * max_abs) << "max error " << max_err << " of " << max_abs;
  EXPECT_LT(i8.weight_bytes(), f32.weight_bytes() / 2);
}

}  // namespace
}  // namespace pivotmt
