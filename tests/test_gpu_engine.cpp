// The whole model and engine on a GPU (CTest label "gpu"; every test skips cleanly
// without a device): FP16 logits within 1e-2 (relative) of transformers' golden logits,
// greedy tokens equal to the golden ones or diverging only where the golden's top-1/top-2
// gap is a close call, batch invariance, sequences across KV block boundaries, shared
// prefixes equal to recomputation, preemption changing no output, and the GPU engine's
// greedy output equal to the CPU engine's up to a close call.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "backends/backend.h"
#include "backends/kv_blocks.h"
#include "core/error.h"
#include "engine/generate.h"
#include "io/safetensors.h"
#include "models/llama_model.h"
#include "test_util.h"

namespace pivotmt {
namespace {

bool have_gpu() { return cuda_compiled() && cuda_device_count() > 0; }
#define REQUIRE_GPU() \
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device"

const LoadOptions kGpu{.weights = DType::F16, .ops = OpsImpl::Fast, .device = {DeviceKind::CUDA, 0}};

std::vector<int64_t> i64(const SafetensorsFile& f, const std::string& name) { return test::read_tensor<int64_t>(f, name); }
std::vector<float> f32(const SafetensorsFile& f, const std::string& name) { return test::read_tensor<float>(f, name); }

// ‖a − b‖ / ‖b‖ over one row.
double relative(const float* a, const float* b, size_t n) {
  double err = 0, norm = 0;
  for (size_t i = 0; i < n; ++i) err += (double(a[i]) - b[i]) * (double(a[i]) - b[i]), norm += double(b[i]) * b[i];
  return std::sqrt(err / std::max(norm, 1e-30));
}

// top-1 minus top-2 of a row.
float gap(const float* row, size_t n) {
  std::vector<float> v(row, row + n);
  std::partial_sort(v.begin(), v.begin() + 2, v.end(), std::greater<>());
  return v[0] - v[1];
}
// A close call: FP16 rounding may legitimately pick the other token (logits of these models
// are O(1); FP16's relative precision is 1e-3).
constexpr float kCloseCall = 0.05f;

std::vector<std::vector<TokenId>> golden_prompts(const SafetensorsFile& golden, size_t max_len = 100000) {
  std::vector<std::vector<TokenId>> out;
  for (int r = 0; golden.find("r" + std::to_string(r) + ".input_ids"); ++r) {
    const auto ids = i64(golden, "r" + std::to_string(r) + ".input_ids");
    if (ids.size() <= max_len) out.emplace_back(ids.begin(), ids.end());
  }
  return out;
}

// The fixture's prompts.json ([{"name", "ids"}]), up to max_len tokens each.
std::vector<std::vector<TokenId>> fixture_prompts(const std::string& dir, size_t max_len = 100000) {
  std::vector<std::vector<TokenId>> out;
  for (const auto& p : nlohmann::json::parse(test::read_file(dir + "/prompts.json")))
    if (p.at("ids").size() <= max_len) out.push_back(p.at("ids").get<std::vector<TokenId>>());
  return out;
}

class GpuParity : public ::testing::TestWithParam<std::string> {};

TEST_P(GpuParity, LogitsAndGreedyTokensAgainstTransformers) {
  REQUIRE_GPU();
  const std::string dir = test::fixture("models/" + GetParam());
  if (!std::filesystem::exists(dir + "/golden.safetensors"))
    GTEST_SKIP() << dir << " has no golden.safetensors here (the GPU bundle leaves tiny-tower's out; "
                 << "SameGreedyOutputAsTheCpuUpToACloseCall covers that model)";
  LlamaModel model(dir, kGpu);
  const SafetensorsFile golden(dir + "/golden.safetensors");
  const size_t V = size_t(model.config().vocab_size);
  const auto prompts = golden_prompts(golden);
  ASSERT_FALSE(prompts.empty());
  for (size_t r = 0; r < prompts.size(); ++r) {
    const std::string p = "r" + std::to_string(r) + ".";
    KvCache cache = model.new_cache();
    std::vector<LlamaModel::Input> batch = {{&cache, prompts[r], true}};
    const auto logits = model.forward(batch);
    const auto positions = i64(golden, p + "logits_positions");
    const auto want = f32(golden, p + "logits");
    double worst = 0;
    for (size_t i = 0; i < positions.size(); ++i)
      worst = std::max(worst, relative(&logits[size_t(positions[i]) * V], &want[i * V], V));
    EXPECT_LT(worst, 1e-2) << GetParam() << " prompt " << r << " (" << prompts[r].size() << " tokens)";
    // Greedy through the engine: equal to the golden tokens up to a close call.
    Engine engine(model);
    GenerationRequest q;
    q.prompt = prompts[r];
    q.max_new_tokens = 24;
    q.ignore_eos = true;
    const auto got = engine.generate({q}, {})[0].tokens;
    const auto expected = i64(golden, p + "greedy_tokens");
    const auto steps = f32(golden, p + "greedy_step_logits");
    for (size_t i = 0; i < expected.size(); ++i) {
      if (got[i] == TokenId(expected[i])) continue;
      ASSERT_LT(i, steps.size() / V) << GetParam() << " prompt " << r << ": token " << i
                                     << " differs beyond the golden's recorded steps";
      EXPECT_LT(gap(&steps[i * V], V), kCloseCall)
          << GetParam() << " prompt " << r << ": token " << i << " differs where the golden's margin is "
          << gap(&steps[i * V], V);
      break;  // after a legitimate divergence the continuations differ
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GpuParity, ::testing::Values("tiny-gqa", "tiny-bf16-tied", "tiny-sharded", "tiny-tower"));

TEST(GpuEngine, BatchInvarianceAndBlockBoundaries) {
  REQUIRE_GPU();
  const std::string dir = test::fixture("models/tiny-sharded");
  LlamaModel model(dir, kGpu);
  const auto prompts = golden_prompts(SafetensorsFile(dir + "/golden.safetensors"));
  const size_t V = size_t(model.config().vocab_size);
  std::vector<std::vector<float>> alone;
  for (const auto& p : prompts) {
    KvCache c = model.new_cache();
    std::vector<LlamaModel::Input> b = {{&c, p, false}};
    alone.push_back(model.forward(b));
  }
  std::vector<KvCache> caches;
  for (size_t i = 0; i < prompts.size(); ++i) caches.push_back(model.new_cache());
  std::vector<LlamaModel::Input> batch;
  for (size_t i = 0; i < prompts.size(); ++i) batch.push_back({&caches[i], prompts[i], false});
  const auto together = model.forward(batch);
  for (size_t i = 0; i < prompts.size(); ++i)
    EXPECT_LT(relative(&together[i * V], alone[i].data(), V), 2e-3) << "prompt " << i << " batched";
  // Decode 40 steps one token at a time across block boundaries: equal to one prefill of
  // the same tokens (positions computed through the block tables either way).
  std::vector<TokenId> seq = prompts[0];
  KvCache step_cache = model.new_cache();
  std::vector<LlamaModel::Input> first = {{&step_cache, seq, false}};
  auto last = model.forward(first);
  for (int s = 0; s < 40; ++s) {
    const TokenId next = TokenId(std::max_element(last.begin(), last.end()) - last.begin());
    seq.push_back(next);
    std::vector<LlamaModel::Input> step = {{&step_cache, {next}, false}};
    last = model.forward(step);
  }
  KvCache full_cache = model.new_cache();
  std::vector<LlamaModel::Input> full = {{&full_cache, seq, false}};
  EXPECT_LT(relative(model.forward(full).data(), last.data(), V), 5e-3) << "decode over " << seq.size() << " positions";
}

// A pass mixing a prompt chunk with decode rows and a 3-row sequence (the engine's rounds):
// the chunk's tiles on the tensor cores, the few-row sequences split-KV in the same pass;
// each sequence's logits as when it runs alone.
TEST(GpuEngine, MixedPassEqualsSeparatePasses) {
  REQUIRE_GPU();
  const std::string dir = test::fixture("models/tiny-sharded");
  LlamaModel model(dir, kGpu);
  const size_t V = size_t(model.config().vocab_size);
  auto tokens = [](size_t n, int salt) {
    std::vector<TokenId> t(n);
    for (size_t i = 0; i < n; ++i) t[i] = TokenId(3 + (i * 31 + size_t(salt) * 7) % 900);
    return t;
  };
  // Three sequences with 40, 75 and 20 cached positions, then: 37 more rows, 1 row, 3 rows.
  const std::vector<size_t> cached = {40, 75, 20}, fresh = {37, 1, 3};
  auto run = [&](bool together) {
    std::vector<KvCache> caches;
    for (size_t s = 0; s < 3; ++s) {
      caches.push_back(model.new_cache());
      std::vector<LlamaModel::Input> p = {{&caches.back(), tokens(cached[s], int(s)), false}};
      model.forward(p);
    }
    std::vector<std::vector<float>> logits(3);
    if (together) {
      std::vector<LlamaModel::Input> b;
      for (size_t s = 0; s < 3; ++s) b.push_back({&caches[s], tokens(fresh[s], int(10 + s)), false});
      const auto all = model.forward(b);
      for (size_t s = 0; s < 3; ++s) logits[s].assign(all.begin() + long(s * V), all.begin() + long((s + 1) * V));
    } else {
      for (size_t s = 0; s < 3; ++s) {
        std::vector<LlamaModel::Input> b = {{&caches[s], tokens(fresh[s], int(10 + s)), false}};
        logits[s] = model.forward(b);
      }
    }
    return logits;
  };
  const auto mixed = run(true), alone = run(false);
  for (size_t s = 0; s < 3; ++s)
    EXPECT_LT(relative(mixed[s].data(), alone[s].data(), V), 2e-3) << "sequence " << s << " (" << fresh[s] << " rows)";
}

TEST(GpuEngine, SharedPrefixEqualsRecomputation) {
  REQUIRE_GPU();
  const std::string dir = test::fixture("models/tiny-tower");
  LlamaModel model(dir, kGpu);
  const auto prompts = fixture_prompts(dir, 800);
  const auto& p = *std::max_element(prompts.begin(), prompts.end(), [](auto& a, auto& b) { return a.size() < b.size(); });
  const size_t V = size_t(model.config().vocab_size);
  KvCache donor = model.new_cache();
  std::vector<LlamaModel::Input> d = {{&donor, p, false}};
  model.forward(d);
  for (size_t shared : {size_t(16), size_t(37), p.size() - 1}) {  // block-aligned, partial block, all but one
    KvCache full = model.new_cache();
    std::vector<LlamaModel::Input> f = {{&full, p, false}};
    const auto want = model.forward(f);
    KvCache copy = model.prefix_of(donor, shared);
    ASSERT_EQ(copy.length, shared);
    std::vector<LlamaModel::Input> rest = {{&copy, std::vector<TokenId>(p.begin() + long(shared), p.end()), false}};
    EXPECT_LT(relative(model.forward(rest).data(), want.data(), V), 2e-3) << "shared " << shared;
  }
}

TEST(GpuEngine, PreemptionChangesNoOutput) {
  REQUIRE_GPU();
  const std::string dir = test::fixture("models/tiny-sharded");
  LoadOptions roomy_options = kGpu;
  roomy_options.kv_capacity_bytes = size_t(1) << 30;  // a second model must fit beside it
  LlamaModel roomy(dir, roomy_options);
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 6; ++i) {
    GenerationRequest r;
    r.prompt = {1, TokenId(20 + i)};
    for (int k = 0; k < 40 + 9 * i; ++k) r.prompt.push_back(TokenId(300 + 7 * k + i));
    r.max_new_tokens = 30;
    r.ignore_eos = true;
    requests.push_back(r);
  }
  Engine a(roomy);
  const auto expected = a.generate(requests, {.max_batch = 8});
  LoadOptions tight_options = kGpu;
  tight_options.kv_capacity_bytes = 12 * kKvBlockPositions * roomy.kv_bytes_per_position();  // 12 blocks
  LlamaModel tight(dir, tight_options);
  Engine b(tight);
  const auto got = b.generate(requests, {.max_batch = 8});
  size_t preemptions = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    EXPECT_EQ(got[i].tokens, expected[i].tokens) << "request " << i;
    preemptions += got[i].preemptions;
  }
  EXPECT_GT(preemptions, 0u);
}

// Decode steps as CUDA graphs compute what the same steps launched kernel by kernel do, to
// the bit: the split-KV kernel cuts each row's keys by its own length, so a graph's split
// count (fixed by its row count) and a launched pass's (from its longest row) leave the
// same non-empty splits. Through the engine (continuous batching: row counts rise and
// fall), then by hand across a longer prefill that reallocates the activations (the
// graph of that row count is captured again, never replayed on stale buffers).
TEST(GpuEngine, CudaGraphDecodeEqualsLaunchedDecode) {
  REQUIRE_GPU();
  const std::string dir = test::fixture("models/tiny-sharded");
  LoadOptions graphs_on = kGpu, graphs_off = kGpu;
  graphs_on.kv_capacity_bytes = graphs_off.kv_capacity_bytes = size_t(1) << 28;  // two models side by side
  graphs_off.cuda_graphs = false;
  LlamaModel on(dir, graphs_on), off(dir, graphs_off);
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 7; ++i) {
    GenerationRequest r;
    r.prompt = {1};
    for (int k = 0; k < 5 + 23 * i; ++k) r.prompt.push_back(TokenId(100 + 13 * k + 5 * i));
    r.max_new_tokens = size_t(6 + 9 * i);  // finishing at different steps: the batch shrinks
    r.ignore_eos = true;
    requests.push_back(r);
  }
  const auto with_graphs = Engine(on).generate(requests, {.max_batch = 4});
  const auto launched = Engine(off).generate(requests, {.max_batch = 4});
  for (size_t i = 0; i < requests.size(); ++i) EXPECT_EQ(with_graphs[i].tokens, launched[i].tokens) << "request " << i;
  const PassCounters c = on.ops().pass_counters();
  EXPECT_GT(c.graph_replays, c.graph_captures) << "graphs captured but seldom replayed";
  EXPECT_GT(c.graph_captures, 0u);
  EXPECT_EQ(off.ops().pass_counters().graph_captures + off.ops().pass_counters().graph_replays, 0u);

  // By hand: two sequences decoding together, logits equal to the bit step by step; a
  // 300-token prefill in the middle grows the activation buffers.
  const size_t V = size_t(on.config().vocab_size);
  auto decode = [&](LlamaModel& m, bool long_prefill_midway) {
    std::vector<KvCache> caches;
    std::vector<std::vector<float>> all;
    for (int s = 0; s < 2; ++s) {
      caches.push_back(m.new_cache());
      std::vector<LlamaModel::Input> p = {{&caches.back(), requests[size_t(2 * s + 1)].prompt, false}};
      m.forward(p);
    }
    for (int step = 0; step < 12; ++step) {
      if (long_prefill_midway && step == 6) {
        KvCache other = m.new_cache();
        std::vector<TokenId> tokens(300);
        for (size_t k = 0; k < tokens.size(); ++k) tokens[k] = TokenId(2 + k % 500);
        std::vector<LlamaModel::Input> p = {{&other, tokens, false}};
        m.forward(p);
      }
      std::vector<LlamaModel::Input> b = {{&caches[0], {TokenId(40 + step)}, false}, {&caches[1], {TokenId(90 + step)}, false}};
      all.push_back(m.forward(b));
    }
    return all;
  };
  const size_t captures_before = on.ops().pass_counters().graph_captures;
  const auto got = decode(on, true), want = decode(off, false);
  EXPECT_GE(on.ops().pass_counters().graph_captures, captures_before + 1) << "no capture after the activations moved";
  for (size_t step = 0; step < want.size(); ++step) {
    ASSERT_EQ(got[step].size(), 2 * V);
    for (size_t i = 0; i < 2 * V; ++i)
      ASSERT_EQ(got[step][i], want[step][i]) << "step " << step << " row " << i / V << " logit " << i % V;
  }
}

// A real trained model (SmolLM2-135M-Instruct, from its GGUF file) in F16 against the CPU
// in F32: real activations are where FP16 overflows (random weights never reach its
// outlier dimensions). The chat and digits prompts of tests/goldens/smollm2: finite logits
// within 1e-2 (relative) of the CPU's and the same greedy tokens up to a close call.
TEST(GpuEngine, RealModelInF16MatchesTheCpu) {
  REQUIRE_GPU();
  const std::string file = test::fixture("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
  if (!std::filesystem::exists(file)) GTEST_SKIP() << file << " is not here (the GPU bundle leaves it out: 98 MB)";
  LlamaModel gpu(file, kGpu), cpu(file, {.weights = DType::F32});
  const SafetensorsFile golden(std::string(PIVOTMT_SOURCE_DIR) + "/tests/goldens/smollm2/golden.safetensors");
  const size_t V = size_t(cpu.config().vocab_size);
  for (const char* p : {"r0.", "r1."}) {
    const auto ids64 = i64(golden, std::string(p) + "input_ids");
    const std::vector<TokenId> prompt(ids64.begin(), ids64.end());
    KvCache cg = gpu.new_cache(), cc = cpu.new_cache();
    std::vector<LlamaModel::Input> bg = {{&cg, prompt, false}}, bc = {{&cc, prompt, false}};
    const auto lg = gpu.forward(bg), lc = cpu.forward(bc);
    for (size_t v = 0; v < V; ++v) ASSERT_TRUE(std::isfinite(lg[v])) << p << " logit " << v << " = " << lg[v];
    EXPECT_LT(relative(lg.data(), lc.data(), V), 1e-2) << p;
    GenerationRequest q;
    q.prompt = prompt;
    q.max_new_tokens = 12;
    q.ignore_eos = true;
    const auto on_gpu = Engine(gpu).generate({q}, {})[0].tokens, on_cpu = Engine(cpu).generate({q}, {})[0].tokens;
    for (size_t i = 0; i < on_cpu.size(); ++i) {
      if (on_gpu[i] == on_cpu[i]) continue;
      std::vector<TokenId> context = prompt;
      context.insert(context.end(), on_cpu.begin(), on_cpu.begin() + long(i));
      KvCache c = cpu.new_cache();
      std::vector<LlamaModel::Input> b = {{&c, context, false}};
      const auto logits = cpu.forward(b);
      EXPECT_LT(gap(logits.data(), V), kCloseCall) << p << " token " << i;
      break;
    }
  }
}

TEST(GpuEngine, SameGreedyOutputAsTheCpuUpToACloseCall) {
  REQUIRE_GPU();
  const std::string dir = test::fixture("models/tiny-tower");
  LlamaModel gpu(dir, kGpu), cpu(dir, {.weights = DType::F32});
  const auto prompts = fixture_prompts(dir);
  std::vector<GenerationRequest> requests;
  for (const auto& p : prompts) {
    GenerationRequest q;
    q.prompt = p;
    q.max_new_tokens = 24;
    q.ignore_eos = true;
    requests.push_back(q);
  }
  const auto on_gpu = Engine(gpu).generate(requests, {.max_batch = 8});
  const auto on_cpu = Engine(cpu).generate(requests, {.max_batch = 8});
  const size_t V = size_t(cpu.config().vocab_size);
  for (size_t r = 0; r < requests.size(); ++r)
    for (size_t i = 0; i < on_cpu[r].tokens.size(); ++i) {
      if (on_gpu[r].tokens[i] == on_cpu[r].tokens[i]) continue;
      // The CPU's logits at that step: the GPU may differ only on a close call.
      std::vector<TokenId> context = requests[r].prompt;
      context.insert(context.end(), on_cpu[r].tokens.begin(), on_cpu[r].tokens.begin() + long(i));
      KvCache c = cpu.new_cache();
      std::vector<LlamaModel::Input> b = {{&c, context, false}};
      const auto logits = cpu.forward(b);
      EXPECT_LT(gap(logits.data(), V), kCloseCall) << "prompt " << r << " token " << i;
      break;
    }
}

TEST(GpuEngine, BadInputNamesTheDevice) {
  REQUIRE_GPU();
  const std::string dir = test::fixture("models/tiny-gqa");
  try {
    LlamaModel m(dir, {.weights = DType::F16, .device = {DeviceKind::CUDA, 999}});
    FAIL() << "loaded on cuda:999";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuda:999"), std::string::npos) << e.what();
  }
  EXPECT_THROW(LlamaModel(dir, {.weights = DType::I8, .device = {DeviceKind::CUDA, 0}}), UnsupportedError);
}

}  // namespace
}  // namespace pivotmt
