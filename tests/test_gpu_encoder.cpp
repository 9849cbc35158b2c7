// The encoders on a GPU (CTest label "gpu", and "emulator" on the CUDA emulator; every test
// skips cleanly without a device): each encoder op against the CPU's reference loops on
// random data (packed sequences of uneven lengths, odd widths), then BERT (tiny-minilm) and
// XLM-R (COMET's encoder) on the device against transformers' goldens — the same limits
// the CPU meets: hidden states within 1e-5 —, and COMET's scores against unbabel-comet's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "backends/backend.h"
#include "backends/encoder_ops.h"
#include "core/error.h"
#include "core/dtype.h"
#include "io/safetensors.h"
#include "metrics/comet.h"
#include "retrieval/index.h"
#include "engine/seq2seq.h"
#include "experiment/nllb_translate.h"
#include "models/bert_model.h"
#include "models/m2m100_model.h"
#include "nllb_golden.h"
#include "gpu_test.h"
#include "test_util.h"

namespace pivotmt {
namespace {

using test::kGpu;
using test::random_values;

// v rounded to F16 and back (nearest even; finite values beyond F16's range saturated, as
// an F16 encoder linear rounds its inputs).
float f16_rounded(float v) {
  if (!std::isnan(v)) v = std::clamp(v, -65504.0f, 65504.0f);
  uint16_t h;
  float back;
  convert_floats(DType::F32, &v, DType::F16, &h, 1);
  convert_floats(DType::F16, &h, DType::F32, &back, 1);
  return back;
}

// max |a − b| / max(1, max |b|).
double worst_difference(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0, scale = 1;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    worst = std::max(worst, std::fabs(double(a[i]) - b[i]));
    scale = std::max(scale, std::fabs(double(b[i])));
  }
  return worst / scale;
}

TEST(GpuEncoder, EveryOpEqualsTheCpuReference) {
  REQUIRE_GPU();
  auto gpu = make_encoder_ops(kGpu), cpu = make_encoder_ops(Device{}, OpsImpl::Reference);
  std::mt19937 rng(11);
  const std::vector<size_t> starts = {0, 1, 8, 38, 45};  // sequences of 1, 7, 30 and 7 rows
  const size_t T = starts.back();
  for (const auto [heads, d] : std::vector<std::pair<size_t, size_t>>{{4, 32}, {3, 64}, {2, 48}}) {
    const size_t H = heads * d, F = 3 * H + 5;  // an odd intermediate width
    auto both = [&](const std::vector<float>& v, size_t rows, size_t cols) {
      return std::pair{gpu->upload(v, rows, cols), cpu->upload(v, rows, cols)};
    };
    const auto x = random_values(T * H, rng), y = random_values(T * H, rng), w = random_values(H, rng),
               b = random_values(H, rng), bias = random_values(H, rng);
    const auto [gw, cw] = both(w, 1, H);
    const auto [gb, cb] = both(b, 1, H);
    const auto [gbias, cbias] = both(bias, 1, H);
    const std::string shape = std::to_string(heads) + " heads of " + std::to_string(d);
    {
      auto [gx, cx] = both(x, T, H);
      gpu->layer_norm(gx, gw, gb, 1e-5f);
      cpu->layer_norm(cx, cw, cb, 1e-5f);
      EXPECT_LT(worst_difference(gpu->download(gx), cpu->download(cx)), 1e-5) << "layer_norm, " << shape;
      const auto [gy, cy] = both(y, T, H);
      gpu->residual_layer_norm(gx, gy, gbias, gw, gb, 1e-12f);
      cpu->residual_layer_norm(cx, cy, cbias, cw, cb, 1e-12f);
      EXPECT_LT(worst_difference(gpu->download(gx), cpu->download(cx)), 1e-5) << "residual_layer_norm, " << shape;
    }
    {
      auto [gx, cx] = both(random_values(T * F, rng, 4.0f), T, F);
      gpu->gelu(gx);
      cpu->gelu(cx);
      EXPECT_LT(worst_difference(gpu->download(gx), cpu->download(cx)), 1e-6) << "gelu, " << shape;
    }
    for (const bool with_bias : {false, true}) {
      const auto wv = random_values(F * H, rng, 0.1f);
      const auto bv = with_bias ? random_values(F, rng) : std::vector<float>{};
      const auto gl = gpu->make_linear(wv, F, H, bv), cl = cpu->make_linear(wv, F, H, bv);
      const auto [gx, cx] = both(x, T, H);
      const Tensor gy = gpu->empty(T, F), cy = cpu->empty(T, F);
      gpu->linear(gx, *gl, gy);
      cpu->linear(cx, *cl, cy);
      EXPECT_LT(worst_difference(gpu->download(gy), cpu->download(cy)), 1e-5) << "linear, bias " << with_bias << ", " << shape;
    }
    {
      // F16 weights on the tensor cores: the products of the inputs and weights rounded to
      // F16, summed in F32 — against the same products summed in double.
      const auto wv = random_values(F * H, rng, 0.1f), bv = random_values(F, rng);
      const auto gl = gpu->make_linear(wv, F, H, bv, DType::F16);
      EXPECT_EQ(gl->bytes, F * H * 2 + F * 4);
      const Tensor gx = gpu->upload(x, T, H), gy = gpu->empty(T, F);
      gpu->linear(gx, *gl, gy);
      std::vector<float> want(T * F);
      for (size_t t = 0; t < T; ++t)
        for (size_t o = 0; o < F; ++o) {
          double sum = 0;
          for (size_t i = 0; i < H; ++i) sum += double(f16_rounded(x[t * H + i])) * f16_rounded(wv[o * H + i]);
          want[t * F + o] = float(sum) + bv[o];
        }
      const auto got = gpu->download(gy);
      EXPECT_LT(worst_difference(got, want), 1e-5) << "F16 linear, " << shape;
      // Not the F32 product: the rounding is there (a test of the test).
      const auto gl32 = gpu->make_linear(wv, F, H, bv);
      const Tensor gy32 = gpu->empty(T, F);
      gpu->linear(gx, *gl32, gy32);
      EXPECT_GT(worst_difference(got, gpu->download(gy32)), 1e-6) << "F16 linear, " << shape;
    }
    {
      const auto qkv = random_values(T * 3 * H, rng, 2.0f);
      const auto [gq, cq] = both(qkv, T, 3 * H);
      std::vector<float> poison(T * H, NAN);
      const auto [go, co] = both(poison, T, H);
      gpu->attention(gq, starts, heads, d, go);
      cpu->attention(cq, starts, heads, d, co);
      EXPECT_LT(worst_difference(gpu->download(go), cpu->download(co)), 1e-5) << "attention, " << shape;
    }
  }
  {
    // pool_rows (COMET's layer mix and mean on the device): two layers' rows summed into F64
    // per sequence, some rows left out — the same bits as the CPU's loop, and the sums of
    // the rows kept computed here in double.
    const size_t H = 37;
    const auto l0 = random_values(T * H, rng), l1 = random_values(T * H, rng);
    std::vector<uint8_t> keep(T, 1);
    keep[0] = keep[9] = keep[44] = 0;  // a sequence of one row left with nothing
    const Tensor ga = gpu->pooled_sums(starts.size() - 1, H), ca = cpu->pooled_sums(starts.size() - 1, H);
    for (const auto& [layer, w] : {std::pair{&l0, 0.25}, std::pair{&l1, 1.0 / 3}}) {
      gpu->pool_rows(gpu->upload(*layer, T, H), starts, keep, w, ga);
      cpu->pool_rows(cpu->upload(*layer, T, H), starts, keep, w, ca);
    }
    const auto got = gpu->download_pooled(ga);
    EXPECT_EQ(got, cpu->download_pooled(ca)) << "pool_rows";
    for (size_t s = 0; s + 1 < starts.size(); ++s)
      for (size_t i = 0; i < H; ++i) {
        double want = 0;
        for (const auto& [layer, w] : {std::pair{&l0, 0.25}, std::pair{&l1, 1.0 / 3}})
          for (size_t t = starts[s]; t < starts[s + 1]; ++t)
            if (keep[t]) want += w * (*layer)[t * H + i];
        EXPECT_NEAR(got[s * H + i], want, 1e-12) << "pool_rows, sequence " << s << ", column " << i;
      }
    EXPECT_EQ(got[0], 0.0);  // the one-row sequence, its row left out
    EXPECT_THROW(gpu->pool_rows(gpu->upload(l0, T, H), starts, std::vector<uint8_t>(T - 1, 1), 1.0, ga), Error);
    EXPECT_THROW(gpu->pool_rows(gpu->upload(l0, T, H), starts, keep, 1.0, gpu->empty(starts.size() - 1, H)), Error);
  }
  {
    // An F16 linear's inputs beyond F16's range saturate to ±65504 (no infinities), NaN
    // stays NaN (and reaches every output of its row): y = x · Wᵀ with W's rows picking one
    // input each.
    std::vector<float> w(3 * 8, 0.0f), x(2 * 8, 0.5f);
    for (size_t o = 0; o < 3; ++o) w[o * 8 + o] = 1.0f;
    x[0] = 1e6f;
    x[1] = -7e4f;
    x[8 + 2] = NAN;
    const auto l = gpu->make_linear(w, 3, 8, {}, DType::F16);
    const Tensor y = gpu->empty(2, 3);
    gpu->linear(gpu->upload(x, 2, 8), *l, y);
    const auto got = gpu->download(y);
    EXPECT_EQ(got[0], 65504.0f);
    EXPECT_EQ(got[1], -65504.0f);
    EXPECT_EQ(got[2], 0.5f);
    for (size_t o = 0; o < 3; ++o) EXPECT_TRUE(std::isnan(got[3 + o])) << o;  // 0 · NaN is NaN
    EXPECT_NE(gpu->describe().find("F16 weights"), std::string::npos) << gpu->describe();
    EXPECT_THROW(gpu->make_linear(w, 3, 8, {}, DType::I8), UnsupportedError);
  }
  // Refusals name the op and what was wrong.
  const Tensor a = gpu->empty(4, 8), host = cpu->empty(4, 8);
  EXPECT_THROW(gpu->gelu(host), Error);
  const std::vector<size_t> bad = {0, 3};
  EXPECT_THROW(gpu->attention(gpu->empty(4, 3 * 8), bad, 1, 8, a), Error);
}

// The encoder–decoder's ops (M2M100): residual add and ReLU exactly; copies of blocks
// between strided tensors; embedding rows (product rounded, then the sum: exact); a pass's
// new keys and values written into caches of different capacities and lengths, and its
// rows' attention over them — causal spans of 1, 4 and 2 rows, then cross attention
// (every row sees all keys) — within 1e-5 of the CPU's reference loops.
TEST(GpuEncoder, DecoderOpsEqualTheCpuReference) {
  REQUIRE_GPU();
  auto gpu = make_encoder_ops(kGpu), cpu = make_encoder_ops(Device{}, OpsImpl::Reference);
  std::mt19937 rng(23);
  const size_t heads = 3, d = 40, H = heads * d, layers = 2, T = 7;
  auto both = [&](const std::vector<float>& v, size_t rows, size_t cols) {
    return std::pair{gpu->upload(v, rows, cols), cpu->upload(v, rows, cols)};
  };
  {
    const auto x = random_values(T * H, rng), y = random_values(T * H, rng);
    auto [gx, cx] = both(x, T, H);
    const auto [gy, cy] = both(y, T, H);
    gpu->add(gx, gy);
    cpu->add(cx, cy);
    EXPECT_EQ(gpu->download(gx), cpu->download(cx)) << "add";
    gpu->relu(gx);
    cpu->relu(cx);
    EXPECT_EQ(gpu->download(gx), cpu->download(cx)) << "relu";
    // A [5, 7] block from (1, 11) of a column view into (2, 4) of a [9, 50] tensor.
    const auto z = random_values(9 * 50, rng);
    auto [gz, cz] = both(z, 9, 50);
    gpu->copy(gx.cols(3, 60), 1, 11, gz, 2, 4, 5, 7);
    cpu->copy(cx.cols(3, 60), 1, 11, cz, 2, 4, 5, 7);
    const auto got = gpu->download(gz);
    EXPECT_EQ(got, cpu->download(cz)) << "copy";
    EXPECT_EQ(got[(2 + 4) * 50 + 4 + 6], cpu->download(cx)[(1 + 4) * H + 3 + 11 + 6]) << "copy: the block's last value";
  }
  {
    // top_k: rows of 3001 logits with ties (values on a coarse grid: many equal ones), a
    // row of one repeated value, k from 1 to the kernel's 64 and beyond (the host path);
    // the tokens, their logits and the max exactly the CPU's, log Σ e^(x − max) within F32
    // rounding of the CPU's (a different summation order).
    const size_t V = 3001, n = 4;
    std::vector<float> x(n * V);
    std::uniform_int_distribution<int> grid(-400, 400);
    for (auto& v : x) v = float(grid(rng)) / 32.0f;
    std::fill(x.begin() + 2 * V, x.begin() + 3 * V, 1.5f);
    const auto [gl, cl] = both(x, n, V);
    for (size_t k : {1, 7, 64, 65}) {
      std::vector<RowTop> g, c;
      gpu->top_k(gl, k, g);
      cpu->top_k(cl, k, c);
      ASSERT_EQ(g.size(), n);
      for (size_t r = 0; r < n; ++r) {
        RowTop want;
        row_top_k_host(x.data() + r * V, V, k, want);
        EXPECT_EQ(c[r].tokens, want.tokens) << "cpu top_k row " << r;
        EXPECT_EQ(g[r].tokens, want.tokens) << "top_k k " << k << " row " << r;
        EXPECT_EQ(g[r].logits, want.logits) << "top_k k " << k << " row " << r;
        EXPECT_EQ(g[r].max, want.max);
        EXPECT_NEAR(g[r].log_sum, want.log_sum, 1e-6f * std::fabs(want.log_sum)) << "log_sum row " << r;
      }
    }
    // The ties row: the lowest tokens first.
    std::vector<RowTop> g;
    gpu->top_k(gl, 5, g);
    EXPECT_EQ(g[2].tokens, (std::vector<int32_t>{0, 1, 2, 3, 4}));
    EXPECT_THROW(gpu->top_k(gl, 0, g), Error);
    EXPECT_THROW(gpu->top_k(gl, V + 1, g), Error);
  }
  {
    const size_t V = 37, P = 20;
    const auto table = random_values(V * H, rng), pos = random_values(P * H, rng);
    const auto gt = gpu->make_linear(table, V, H, {}), ct = cpu->make_linear(table, V, H, {});
    const auto [gp, cp] = both(pos, P, H);
    const std::vector<int32_t> ids = {36, 0, 5, 5, 17}, positions = {2, 3, 19, 0, 7};
    const Tensor ge = gpu->empty(5, H), ce = cpu->empty(5, H);
    gpu->embed(*gt, ids, 2.5f, gp, positions, ge);
    cpu->embed(*ct, ids, 2.5f, cp, positions, ce);
    EXPECT_EQ(gpu->download(ge), cpu->download(ce)) << "embed";
    // An F16 table (NLLB's tied embeddings in F16): the same sums as the CPU's F16 table.
    const auto gt16 = gpu->make_linear(table, V, H, {}, DType::F16), ct16 = cpu->make_linear(table, V, H, {}, DType::F16);
    gpu->embed(*gt16, ids, 2.5f, gp, positions, ge);
    cpu->embed(*ct16, ids, 2.5f, cp, positions, ce);
    const auto got16 = gpu->download(ge);
    EXPECT_EQ(got16, cpu->download(ce)) << "embed, F16 table";
    EXPECT_EQ(got16[1], f16_rounded(table[36 * H + 1]) * 2.5f + pos[2 * H + 1]) << "embed, F16 table";
    EXPECT_THROW(gpu->embed(*gt, std::vector<int32_t>{1, 2, 3, 4, int32_t(V)}, 1.0f, gp, positions, ge), Error);
    EXPECT_THROW(gpu->embed(*gt, ids, 1.0f, gp, std::vector<int32_t>{0, 0, 0, 0, int32_t(P)}, ge), Error);
  }
  // Three caches: capacities 8, 5, 12 holding 3, 0, 9 positions; the pass adds 1, 4, 2 rows.
  const size_t capacity[3] = {8, 5, 12}, held[3] = {3, 0, 9}, added[3] = {1, 4, 2};
  std::vector<Tensor> gcache, ccache;
  for (size_t c = 0; c < 3; ++c) {
    const auto v = random_values(2 * layers * capacity[c] * H, rng);
    auto [g, h] = both(v, 2 * layers * capacity[c], H);
    gcache.push_back(g);
    ccache.push_back(h);
  }
  auto spans_of = [&](const std::vector<Tensor>& caches) {
    std::vector<CachedRows> spans;
    for (size_t c = 0; c < 3; ++c) spans.push_back({added[c], &caches[c], capacity[c], held[c] + added[c], true});
    return spans;
  };
  const auto gspans = spans_of(gcache), cspans = spans_of(ccache);
  const auto qkv = random_values(T * 3 * H, rng);
  const auto [gqkv, cqkv] = both(qkv, T, 3 * H);
  for (size_t layer : {size_t(1), size_t(0)}) {
    gpu->write_cache(gqkv.cols(H, 2 * H), gspans, layer);
    cpu->write_cache(cqkv.cols(H, 2 * H), cspans, layer);
    for (size_t c = 0; c < 3; ++c)
      EXPECT_EQ(gpu->download(gcache[c]), cpu->download(ccache[c])) << "write_cache, cache " << c << ", layer " << layer;
    const auto poison = std::vector<float>(T * H, NAN);
    const auto [go, co] = both(poison, T, H);
    gpu->cached_attention(gqkv.cols(0, H), gspans, layer, heads, d, go);
    cpu->cached_attention(cqkv.cols(0, H), cspans, layer, heads, d, co);
    EXPECT_LT(worst_difference(gpu->download(go), cpu->download(co)), 1e-5) << "cached_attention, layer " << layer;
  }
  // Cross attention: every row of a span sees all of its cache's keys.
  std::vector<CachedRows> gcross = gspans, ccross = cspans;
  for (size_t c = 0; c < 3; ++c) {
    gcross[c].causal = ccross[c].causal = false;
    gcross[c].keys = ccross[c].keys = capacity[c];
  }
  const auto q = random_values(T * H, rng);
  const auto [gq, cq] = both(q, T, H);
  const auto [go, co] = both(std::vector<float>(T * H, NAN), T, H);
  gpu->cached_attention(gq, gcross, 1, heads, d, go);
  cpu->cached_attention(cq, ccross, 1, heads, d, co);
  EXPECT_LT(worst_difference(gpu->download(go), cpu->download(co)), 1e-5) << "cross attention";
  // Refusals: spans that do not cover the pass's rows, or see more keys than the cache holds.
  EXPECT_THROW(gpu->cached_attention(gq.rows(0, 6), gcross, 1, heads, d, go.rows(0, 6)), Error);
  auto too_many = gcross;
  too_many[1].keys = capacity[1] + 1;
  EXPECT_THROW(gpu->cached_attention(gq, too_many, 1, heads, d, go), Error);
  EXPECT_THROW(gpu->write_cache(gqkv.cols(H, 2 * H), gspans, layers), Error);  // no such layer
}

// NLLB-200's architecture on the device (`translate --device cuda`, the ablation's
// baseline on its GPU): tests/goldens/nllb_tiny's encoder states and teacher-forced logits
// against transformers, and all 70 generation cases (greedy and beam search, several
// settings) giving transformers' tokens — and the CPU's tokens and beam scores.
TEST(GpuEncoder, NllbOnTheDeviceMatchesTransformersAndTheCpu) {
  REQUIRE_GPU();
  const std::string dir = test::nllb_tiny_dir();
  const M2M100Model gpu(dir, DType::F32, OpsImpl::Fast, "", kGpu), cpu(dir, DType::F32, OpsImpl::Fast);
  EXPECT_EQ(gpu.device(), kGpu);
  EXPECT_EQ(gpu.weight_bytes(), cpu.weight_bytes());
  const SafetensorsFile golden(dir + "/golden.safetensors");
  for (int i = 0; i < 3; ++i) {
    const auto ids = test::read_tensor<int32_t>(golden, "input_ids." + std::to_string(i));
    const auto dec = test::read_tensor<int32_t>(golden, "decoder_ids." + std::to_string(i));
    const auto enc_want = test::read_tensor<float>(golden, "encoder." + std::to_string(i));
    const auto logits_want = test::read_tensor<float>(golden, "logits." + std::to_string(i));
    const auto enc = gpu.encode({std::vector<int32_t>{1501, 5, 9, 2}, ids});  // packed after another source
    const auto states = gpu.to_host(enc.states);
    const std::vector<float> mine(states.begin() + long(enc.starts[1] * 64), states.end());
    EXPECT_LT(worst_difference(mine, enc_want), 1e-5) << "encoder, input " << i;
    const auto cross = gpu.cross_caches(enc);
    auto cache = gpu.new_self_cache(2);  // grown twice on the way
    const std::span<const int32_t> all(dec);
    auto logits = gpu.decode({M2M100Model::DecoderRow{&cache, &cross[1], all.subspan(0, 3)}}, false);
    const auto rest = gpu.decode({M2M100Model::DecoderRow{&cache, &cross[1], all.subspan(3)}}, false);
    logits.insert(logits.end(), rest.begin(), rest.end());
    EXPECT_LT(worst_difference(logits, logits_want), 1e-5) << "logits, input " << i;
  }
  const NllbTokenizer tok(dir);
  size_t n = 0;
  for (auto& g : test::nllb_generation_cases(tok)) {
    g.settings.batch_size = 3;
    const auto on_gpu = generate_seq2seq(gpu, g.sources, g.settings), on_cpu = generate_seq2seq(cpu, g.sources, g.settings);
    for (size_t i = 0; i < g.sources.size(); ++i, ++n) {
      auto ids = on_gpu[i].ids;
      while (!ids.empty() && ids.back() == NllbTokenizer::kPad) ids.pop_back();
      EXPECT_EQ(ids, g.expected_ids[i]) << g.name << ", source " << i;
      EXPECT_EQ(on_gpu[i].ids, on_cpu[i].ids) << g.name << ", source " << i;
      EXPECT_NEAR(on_gpu[i].score, on_cpu[i].score, 1e-5) << g.name << ", source " << i;
    }
  }
  EXPECT_EQ(n, 70u);
  // Those decode steps ran as CUDA graphs, most of them replayed; launched op by op instead
  // they give the same bits (tokens and beam scores).
  const PassCounters graphs = gpu.step_counters();
  EXPECT_GT(graphs.graph_captures, 0u);
  EXPECT_GT(graphs.graph_replays, 2 * graphs.graph_captures);
  std::printf("NLLB tiny on the device: %zu decode steps, %zu captured as CUDA graphs, %zu replayed\n", graphs.passes,
              graphs.graph_captures, graphs.graph_replays);
  const M2M100Model launched(dir, DType::F32, OpsImpl::Fast, "", kGpu);
  launched.set_cuda_graphs(false);
  auto cases = test::nllb_generation_cases(tok);
  cases.resize(std::min<size_t>(cases.size(), 4));  // greedy and beam search (the emulator is slow)
  for (auto& g : cases) {
    g.settings.batch_size = 3;
    const auto with = generate_seq2seq(gpu, g.sources, g.settings), without = generate_seq2seq(launched, g.sources, g.settings);
    for (size_t i = 0; i < g.sources.size(); ++i) {
      EXPECT_EQ(with[i].ids, without[i].ids) << g.name << ", source " << i;
      EXPECT_EQ(with[i].score, without[i].score) << g.name << ", source " << i;
    }
  }
  EXPECT_EQ(launched.step_counters().graph_captures + launched.step_counters().graph_replays, 0u);
  EXPECT_GT(launched.step_counters().passes, 0u);
  // INT8 (per-row scales) is a CPU storage: the GPU refuses it by name (translate and the
  // ablation's baseline store F16 instead: stored_weights).
  EXPECT_THROW(M2M100Model(dir, DType::I8, OpsImpl::Fast, "", kGpu), UnsupportedError);
  EXPECT_EQ(stored_weights(DType::I8, kGpu), DType::F16);
  EXPECT_EQ(stored_weights(DType::I8, Device{}), DType::I8);
}

// NLLB with F16 weights on the device (`translate --device cuda`'s default --weights f16):
// the tensor cores' numerics (a linear's inputs rounded to F16, F32 sums). The teacher-forced
// logits stay within 2e-3 of transformers' F32 ones (relative to the largest), and the
// generated tokens agree with the CPU's F32 tokens on most of the 70 cases — the agreement
// is printed (a random model's logits are close together: real models' margins are wider).
TEST(GpuEncoder, NllbInF16OnTheDeviceStaysCloseToF32) {
  REQUIRE_GPU();
  const std::string dir = test::nllb_tiny_dir();
  const M2M100Model gpu(dir, DType::F16, OpsImpl::Fast, "", kGpu), cpu(dir, DType::F32, OpsImpl::Fast);
  EXPECT_NE(gpu.describe_device().find("F16 weights"), std::string::npos) << gpu.describe_device();
  EXPECT_LT(gpu.weight_bytes(), cpu.weight_bytes() * 0.55);
  const SafetensorsFile golden(dir + "/golden.safetensors");
  for (int i = 0; i < 3; ++i) {
    const auto ids = test::read_tensor<int32_t>(golden, "input_ids." + std::to_string(i));
    const auto dec = test::read_tensor<int32_t>(golden, "decoder_ids." + std::to_string(i));
    const auto logits_want = test::read_tensor<float>(golden, "logits." + std::to_string(i));
    const auto cross = gpu.cross_caches(gpu.encode({ids}));
    auto cache = gpu.new_self_cache();
    const auto logits = gpu.decode({M2M100Model::DecoderRow{&cache, &cross[0], std::span<const int32_t>(dec)}}, false);
    const double diff = worst_difference(logits, logits_want);
    std::printf("NLLB tiny, F16 weights on the device: teacher-forced logits within %.2e (relative) of transformers' F32, input %d\n", diff, i);
    EXPECT_LT(diff, 2e-3) << "logits, input " << i;  // measured ≤ 1.8e-4
    EXPECT_GT(diff, 0.0) << "logits, input " << i << ": the F16 rounding did not happen";
  }
  const NllbTokenizer tok(dir);
  size_t n = 0, same = 0;
  for (auto& g : test::nllb_generation_cases(tok)) {
    g.settings.batch_size = 3;
    const auto on_gpu = generate_seq2seq(gpu, g.sources, g.settings), on_cpu = generate_seq2seq(cpu, g.sources, g.settings);
    for (size_t i = 0; i < g.sources.size(); ++i, ++n) same += on_gpu[i].ids == on_cpu[i].ids;
  }
  EXPECT_EQ(n, 70u);
  std::printf("NLLB tiny, F16 weights on the device: %zu of %zu generations equal the CPU's F32 tokens\n", same, n);
  EXPECT_GE(double(same), 0.8 * double(n));
}

TEST(GpuEncoder, MiniLmOnTheDeviceMatchesTransformers) {
  REQUIRE_GPU();
  const std::string dir = test::fixture("models/tiny-minilm");
  const BertEncoder gpu(dir, "", kGpu), cpu(dir);
  EXPECT_EQ(gpu.device(), kGpu);
  const SafetensorsFile golden(dir + "/golden.safetensors");
  const auto sentences = nlohmann::json::parse(golden.metadata().at("sentences")).get<std::vector<std::string>>();
  const auto embeddings = gpu.embed(sentences), on_cpu = cpu.embed(sentences);
  EXPECT_LT(worst_difference(embeddings, on_cpu), 1e-5);
  const size_t H = gpu.dimension();
  for (size_t s = 0; s < sentences.size(); ++s) {
    const std::string p = "s" + std::to_string(s) + ".";
    const auto ids = gpu.tokenize(sentences[s]);
    const auto want = test::read_tensor<float>(golden, p + "last_hidden_state");
    const auto hidden = gpu.hidden_states(ids);  // the device's kernels, one sequence
    double worst = 0;
    for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, double(std::fabs(hidden[i] - want[i])));
    EXPECT_LT(worst, 1e-5) << "sentence " << s;
    const auto e = test::read_tensor<float>(golden, p + "embedding");
    double dot = 0;
    for (size_t i = 0; i < H; ++i) dot += double(embeddings[s * H + i]) * e[i];
    EXPECT_GE(dot, 0.9999) << "sentence " << s;
  }
}

// COMET's encoder: every hidden state (the layer mix reads them all) of packed batches on
// the device against transformers' XLMRobertaModel.
TEST(GpuEncoder, XlmRobertaOnTheDeviceMatchesTransformers) {
  REQUIRE_GPU();
  const std::string goldens = test::source_dir() + "/tests/goldens/";
  const test::TempDir dir;
  for (const char* f : {"config.json", "tokenizer.json"}) std::filesystem::copy_file(goldens + "unigram/" + f, dir.str(f));
  std::filesystem::copy_file(goldens + "xlmr/model.safetensors", dir.str("model.safetensors"));
  const BertEncoder encoder(dir.str(), "", kGpu);
  const SafetensorsFile golden(goldens + "xlmr/golden.safetensors");
  const auto sentences = nlohmann::json::parse(golden.metadata().at("sentences")).get<std::vector<std::string>>();
  const size_t H = encoder.dimension(), layers = size_t(encoder.config().num_layers);
  std::vector<std::vector<TokenId>> seqs;
  for (const auto& s : sentences) seqs.push_back(encoder.tokenize(s));
  std::vector<size_t> row0{0};
  for (const auto& ids : seqs) row0.push_back(row0.back() + ids.size());
  size_t checked = 0;
  encoder.encode_batch(seqs, layers, [&](size_t layer, const float* states) {
    for (size_t s = 0; s < seqs.size(); ++s) {
      const auto want = test::read_tensor<float>(golden, "s" + std::to_string(s) + ".hidden_states");
      const size_t T = seqs[s].size();
      double worst = 0;
      for (size_t i = 0; i < T * H; ++i)
        worst = std::max(worst, double(std::fabs(states[row0[s] * H + i] - want[layer * T * H + i])));
      EXPECT_LT(worst, 1e-5) << "sentence " << s << " layer " << layer;
      ++checked;
    }
  });
  EXPECT_EQ(checked, (layers + 1) * seqs.size());
}

// `pivotmt index --device cuda`: the pool embedded on the device — vectors within 1e-5 of
// the CPU's, the same neighbours, the same manifest (the device is not part of it).
TEST(GpuEncoder, RetrievalIndexBuiltOnTheDevice) {
  REQUIRE_GPU();
  const std::string dir = test::fixture("models/tiny-minilm");
  const SafetensorsFile golden(dir + "/golden.safetensors");
  const auto sentences = nlohmann::json::parse(golden.metadata().at("sentences")).get<std::vector<std::string>>();
  const test::TempDir tmp;
  {
    std::ofstream out(tmp.str("pool.jsonl"));
    for (size_t i = 0; i < sentences.size(); ++i)
      if (!sentences[i].empty())
        out << nlohmann::json{{"pivot", sentences[i]}, {"source", "s" + std::to_string(i)}, {"target", "t" + std::to_string(i)}}.dump()
            << "\n";
  }
  IndexSpec spec;
  spec.data = tmp.str("pool.jsonl");
  spec.pivot = "pivot";
  spec.source = "source";
  spec.target = "target";
  spec.model = dir;
  const auto on_cpu = build_index(spec, tmp.str("cpu"));
  spec.device = kGpu;
  const auto on_gpu = build_index(spec, tmp.str("gpu"));
  EXPECT_EQ(on_gpu.manifest, on_cpu.manifest);
  EXPECT_EQ(std::filesystem::file_size(tmp.str("gpu/vectors.f32")), std::filesystem::file_size(tmp.str("cpu/vectors.f32")));
  for (size_t q = 0; q < on_cpu.pool.rows.size(); q += 3) {
    const std::string query = on_cpu.pool.rows[q].pivot;
    const auto a = retrieve(*on_gpu.retriever, on_gpu.pool, query, 5), b = retrieve(*on_cpu.retriever, on_cpu.pool, query, 5);
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_EQ(a[i].index, b[i].index) << "query " << q << " neighbour " << i;
      EXPECT_NEAR(a[i].distance, b[i].distance, 1e-5) << "query " << q << " neighbour " << i;
    }
  }
}

// tests/goldens/comet_tiny/golden.json: unbabel-comet's scores of its (src, mt, ref) rows.
struct CometGolden {
  nlohmann::json j;
  std::vector<std::string> src, mt, ref;
  std::vector<double> want;
};
CometGolden comet_golden(const std::string& goldens) {
  CometGolden g;
  g.j = nlohmann::json::parse(test::read_file(goldens + "comet_tiny/golden.json"));
  for (const auto& r : g.j.at("rows")) {
    g.src.push_back(r.at("src"));
    g.mt.push_back(r.at("mt"));
    g.ref.push_back(r.at("ref"));
  }
  g.want = g.j.at("scores").get<std::vector<double>>();
  return g;
}

// COMET on the device (`score --device cuda`): the tiny metric of tests/goldens/comet_tiny
// scored against unbabel-comet's own scores (make_comet_golden.py), within the 1e-5 the
// CPU meets (the issue asks 1e-4), and against the CPU's scores.
TEST(GpuEncoder, CometScoresOnTheDeviceMatchUnbabelComet) {
  REQUIRE_GPU();
  const std::string goldens = test::source_dir() + "/tests/goldens/";
  const CometGolden g = comet_golden(goldens);
  const auto& [j, src, mt, ref, want] = g;
  const comet::Model gpu(goldens + "comet_tiny", goldens + "unigram", "", kGpu), cpu(goldens + "comet_tiny", goldens + "unigram");
  EXPECT_NE(gpu.describe_device().find("cuda:0"), std::string::npos) << gpu.describe_device();
  const auto scores = gpu.score(src, mt, ref), on_cpu = cpu.score(src, mt, ref);
  ASSERT_EQ(scores.segments.size(), want.size());
  for (size_t s = 0; s < want.size(); ++s) {
    EXPECT_NEAR(scores.segments[s], want[s], 1e-5) << "segment " << s;
    EXPECT_NEAR(scores.segments[s], on_cpu.segments[s], 1e-5) << "segment " << s;
  }
  EXPECT_NEAR(scores.system, j.at("system_score").get<double>(), 1e-5);
  EXPECT_EQ(scores.truncated, 1u);
  EXPECT_EQ(gpu.signature("enc", 1), "model:" + goldens + "comet_tiny|encoder:enc|truncated:1");
}

// COMET with F16 weights on the device (`--comet-weights f16`): the tensor cores' numerics.
// Every segment within 3e-4 of unbabel-comet's F32 score (measured 3.1e-5; printed), some
// segment not equal to the F32 one (the rounding happened), and a signature that says so.
TEST(GpuEncoder, CometInF16OnTheDeviceStaysClose) {
  REQUIRE_GPU();
  const std::string goldens = test::source_dir() + "/tests/goldens/";
  const CometGolden g = comet_golden(goldens);
  const auto& [j, src, mt, ref, want] = g;
  const comet::Model gpu(goldens + "comet_tiny", goldens + "unigram", "", kGpu, DType::F16);
  EXPECT_NE(gpu.describe_device().find("F16 weights"), std::string::npos) << gpu.describe_device();
  const auto scores = gpu.score(src, mt, ref);
  ASSERT_EQ(scores.segments.size(), want.size());
  double worst = 0;
  for (size_t s = 0; s < want.size(); ++s) worst = std::max(worst, std::fabs(scores.segments[s] - want[s]));
  std::printf("COMET tiny, F16 weights on the device: segments within %.2e of unbabel-comet's F32 scores\n", worst);
  EXPECT_LT(worst, 3e-4);
  EXPECT_GT(worst, 1e-7);
  EXPECT_EQ(gpu.signature("enc", 0), "model:" + goldens + "comet_tiny|encoder:enc|truncated:0|weights:f16");
}

}  // namespace
}  // namespace pivotmt
