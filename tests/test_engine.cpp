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

// A family of prompts like one test row's at k = 10, 5, 0: a shared head (system prompt and
// the first examples), then different tails.
std::vector<GenerationRequest> prompt_family(size_t rows) {
  std::vector<GenerationRequest> out;
  for (size_t row = 0; row < rows; ++row)
    for (size_t examples : {10, 5, 0}) {
      GenerationRequest r;
      r.prompt = {1};
      for (int t = 0; t < 20; ++t) r.prompt.push_back(TokenId(30 + t));  // system prompt
      for (size_t e = 0; e < examples; ++e)
        for (int t = 0; t < 9; ++t) r.prompt.push_back(TokenId(100 + 37 * row + 13 * e + t));
      for (int t = 0; t < 6; ++t) r.prompt.push_back(TokenId(900 + 11 * row + t));  // the query
      r.max_new_tokens = 10;
      r.sampling = {.greedy = false, .temperature = 1.0f, .top_k = 50, .top_p = 0.9f, .seed = 500 + row};
      out.push_back(r);
    }
  return out;
}

TEST_F(EngineTest, PrefixCopiesMatchRecomputation) {
  // The keys and values of a copied prefix give the same logits as computing the whole prompt.
  auto requests = prompt_family(1);
  const auto& longer = requests[0].prompt;
  const auto& shorter = requests[1].prompt;  // shares 1 + 20 + 5 * 9 tokens with `longer`
  KvCache full = model().new_cache(), donor = model().new_cache();
  std::vector<LlamaModel::Input> a = {{&full, shorter, true}};
  const auto expected = model().forward(a);
  std::vector<LlamaModel::Input> b = {{&donor, longer, false}};
  model().forward(b);
  const size_t shared = 66;
  ASSERT_EQ(std::vector<TokenId>(shorter.begin(), shorter.begin() + shared),
            std::vector<TokenId>(longer.begin(), longer.begin() + shared));
  KvCache copy = model().prefix_of(donor, shared);
  EXPECT_EQ(copy.length, shared);
  std::vector<LlamaModel::Input> c = {{&copy, std::vector<TokenId>(shorter.begin() + shared, shorter.end()), true}};
  const auto got = model().forward(c);
  const size_t V = size_t(model().config().vocab_size);
  ASSERT_EQ(got.size(), (shorter.size() - shared) * V);
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], expected[shared * V + i], 1e-5) << i;
  EXPECT_THROW(model().prefix_of(donor, donor.length + 1), Error);
}

TEST_F(EngineTest, PrefixReuseChangesNoOutput) {
  const auto requests = prompt_family(3);
  Engine engine(model());
  const auto plain = engine.generate(requests, {.max_batch = 4, .reuse_prefixes = false});
  for (const auto& r : plain) EXPECT_EQ(r.reused_prompt_tokens, 0u);
  // A KV budget below one request's needs: one sequence at a time, same outputs.
  const size_t one = (requests[0].prompt.size() + 10) * model().kv_bytes_per_position();
  for (size_t budget : {size_t(1), 2 * one}) {
    const auto tight = engine.generate(requests, {.max_batch = 9, .max_kv_bytes = budget});
    for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(tight[i].tokens, plain[i].tokens) << i << " budget " << budget;
  }
  // Same round (batch 9: the k = 5 and k = 0 prompts wait one pass for their k = 10 row-mate),
  // running donors (batch 4) and finished donors (batch 1).
  for (size_t max_batch : {9, 4, 1}) {
    std::vector<int> reported(requests.size(), 0);
    GenerationHooks hooks;
    hooks.on_finished = [&](const std::vector<size_t>& done, const std::vector<GenerationResult>& results) {
      for (size_t i : done) {
        ++reported[i];
        EXPECT_EQ(results[i].tokens.size(), 10u);  // complete when reported
      }
    };
    const auto reused = engine.generate(requests, {.max_batch = max_batch}, hooks);
    for (size_t i = 0; i < requests.size(); ++i) {
      EXPECT_EQ(reused[i].tokens, plain[i].tokens) << "request " << i << " max_batch " << max_batch;
      EXPECT_EQ(reported[i], 1) << i;
      // k = 5 shares its head and 5 examples (66 tokens) with its row's k = 10, waited for in
      // the same round when needed; other pairs share the head only (21 tokens: copied from a
      // donor already there, never waited for).
      if (i % 3 == 1) EXPECT_EQ(reused[i].reused_prompt_tokens, 66u) << i << " max_batch " << max_batch;
      else EXPECT_LE(reused[i].reused_prompt_tokens, 21u) << i;
      if (max_batch == 1 && i % 3 != 1 && i > 0) EXPECT_EQ(reused[i].reused_prompt_tokens, 21u) << i;
    }
  }
}

// The device's KV memory smaller than what admission counted (a GPU's block pool is what it
// is): requests wait and running sequences are preempted and recomputed, and no output
// changes. The CPU's capacity option stands in for the pool.
TEST_F(EngineTest, PreemptionChangesNoOutput) {
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 5; ++i) {
    GenerationRequest r;
    r.prompt = {1, TokenId(20 + i)};
    for (int k = 0; k < 18 + 3 * i; ++k) r.prompt.push_back(TokenId(300 + 7 * k + i));
    r.max_new_tokens = 20;
    r.ignore_eos = true;
    if (i % 2) r.sampling = {.greedy = false, .temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .seed = uint64_t(50 + i)};
    requests.push_back(r);
  }
  Engine engine(model());
  const auto roomy = engine.generate(requests, {.max_batch = 8});
  const size_t per_position = model().kv_bytes_per_position();
  // Room for about two and a half whole sequences: everything is admitted (the budget is the
  // machine's), the prompts fit, the decode steps run out and preempt.
  LlamaModel tight_model(test::fixture("models/tiny-sharded"), {.kv_capacity_bytes = 2 * 50 * per_position + 25 * per_position});
  Engine tight(tight_model);
  std::vector<size_t> streamed(requests.size(), 0);
  GenerationHooks hooks;
  hooks.on_token = [&](size_t i, TokenId) { ++streamed[i]; };
  const auto squeezed = tight.generate(requests, {.max_batch = 8}, hooks);
  size_t preemptions = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(squeezed[i].tokens, roomy[i].tokens) << "request " << i;
    EXPECT_EQ(streamed[i], roomy[i].tokens.size()) << "each token streamed once, request " << i;
    preemptions += squeezed[i].preemptions;
  }
  EXPECT_GT(preemptions, 0u) << "the capacity was meant to force preemption";
  // A single request larger than the device's KV memory: a clear error, not a hang.
  LlamaModel tiny_model(test::fixture("models/tiny-sharded"), {.kv_capacity_bytes = 10 * per_position});
  Engine tiny(tiny_model);
  try {
    tiny.generate({requests[0]}, {});
    FAIL() << "a request larger than the KV memory ran";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("do not fit in the KV memory of cpu"), std::string::npos) << e.what();
  }
}

// A prompt longer than a pass's token budget is computed in chunks over several passes, and
// decode rows ride along with prompt chunks in one pass (max_prefill_tokens rows in all):
// outputs equal to whole-prompt passes (greedy, seeded sampling — a chunk before a
// prompt's last draws nothing —, and with preemption), and the passes as the rules count
// them.
TEST_F(EngineTest, ChunkedPromptsAndMixedPassesChangeNoOutput) {
  auto request = [](size_t prompt, size_t new_tokens, int salt, bool sampled) {
    GenerationRequest r;
    r.prompt = {1};
    for (size_t k = 1; k < prompt; ++k) r.prompt.push_back(TokenId(50 + (k * 37 + size_t(salt) * 11) % 900));
    r.max_new_tokens = new_tokens;
    r.ignore_eos = true;
    if (sampled) r.sampling = {.greedy = false, .temperature = 0.9f, .top_k = 40, .top_p = 0.95f, .seed = uint64_t(salt)};
    return r;
  };
  // A (10-token prompt, 20 new tokens) and B (100 and 5), batch 2, 32 rows a pass. Pass 1:
  // A's prompt (B's 100 do not fit the 22 rows left and a first chunk needs 256). Passes 2-4:
  // A's decode row + 31 of B's prompt; pass 5: A's row + B's last 7 (B's first token). Then
  // both decode: A's 20th token comes in pass 20, when B is long done.
  const std::vector<GenerationRequest> pair = {request(10, 20, 1, false), request(100, 5, 2, false)};
  Engine engine(model());
  const auto whole = engine.generate(pair, {.max_batch = 2});
  const size_t passes_before = model().ops().pass_counters().passes;
  const auto chunked = engine.generate(pair, {.max_batch = 2, .max_prefill_tokens = 32});
  EXPECT_EQ(model().ops().pass_counters().passes - passes_before, 20u);
  for (size_t i = 0; i < pair.size(); ++i) EXPECT_EQ(chunked[i].tokens, whole[i].tokens) << "request " << i;
  EXPECT_GT(chunked[1].prefill_seconds, 0.0);
  // A prompt sharing 90 tokens with one computed in chunks copies all 90 (it is admitted
  // once the room is there, by then they are computed).
  GenerationRequest c = request(100, 4, 3, false), d = c;
  for (size_t k = 90; k < d.prompt.size(); ++k) d.prompt[k] = TokenId(960 + k % 30);
  const auto plain = engine.generate({c, d}, {.max_batch = 4, .reuse_prefixes = false});
  const auto shared = engine.generate({c, d}, {.max_batch = 4, .max_prefill_tokens = 32});
  EXPECT_EQ(shared[1].reused_prompt_tokens, 90u);
  for (size_t i = 0; i < 2; ++i) EXPECT_EQ(shared[i].tokens, plain[i].tokens) << "request " << i;
  // A prompt whose donor finishes its last chunk in this round's first pass waits for the
  // second pass (38 tokens shared) rather than copying the 32 the donor held at the start.
  GenerationRequest e = request(40, 4, 4, false), f = e;
  for (size_t k = 38; k < f.prompt.size(); ++k) f.prompt[k] = TokenId(990 - k);
  const auto second = engine.generate({e, f}, {.max_batch = 4, .max_prefill_tokens = 32, .min_shared_prefix = 1});
  EXPECT_EQ(second[1].reused_prompt_tokens, 38u);
  EXPECT_EQ(second[1].tokens, engine.generate({f}, {})[0].tokens);

  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 6; ++i) requests.push_back(request(size_t(20 + 29 * i), size_t(8 + 3 * i), 10 + i, i % 2 == 1));
  const auto reference = engine.generate(requests, {.max_batch = 8});
  for (size_t budget : {size_t(1), size_t(7), size_t(16), size_t(64)})
    for (size_t max_batch : {size_t(1), size_t(3), size_t(8)}) {
      // A budget of one row a pass runs a pass per prompt token: once is enough (and keeps
      // the sanitizer build's run short).
      if (budget == 1 && max_batch != 3) continue;
      const auto got = engine.generate(requests, {.max_batch = max_batch, .max_prefill_tokens = budget});
      for (size_t i = 0; i < requests.size(); ++i)
        EXPECT_EQ(got[i].tokens, reference[i].tokens) << "request " << i << " budget " << budget << " batch " << max_batch;
    }
  // Chunks and preemption together: KV memory for the largest sequence (188 positions) and
  // a little more.
  const size_t per_position = model().kv_bytes_per_position();
  LlamaModel tight_model(test::fixture("models/tiny-sharded"), {.kv_capacity_bytes = 200 * per_position});
  Engine tight(tight_model);
  const auto squeezed = tight.generate(requests, {.max_batch = 8, .max_prefill_tokens = 24});
  size_t preemptions = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(squeezed[i].tokens, reference[i].tokens) << "request " << i << " (tight KV memory)";
    preemptions += squeezed[i].preemptions;
  }
  EXPECT_GT(preemptions, 0u) << "the capacity was meant to force preemption";
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
