// QLoRA fine-tuning on a GPU (CTest label "gpu", and "emulator" on the CUDA emulator; every
// test skips cleanly without a device): each training op against the CPU's reference loops
// on random data (GQA, a sliding window, odd widths; the optimiser's Σ x², clipping scale and
// AdamW update bit for bit), then LoraLlama on the device — one
// sequence's loss and every LoRA gradient against the CPU's, with dropout — and the
// original recipe's 10 steps on an NF4 base against PyTorch + PEFT's goldens and the CPU's
// trajectory — F32 base GEMMs within 1e-5, the default F16 ones within the 1e-3
// relative per step —, a run resumed from its checkpoint on the device as one run through.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "backends/backend.h"
#include "core/error.h"
#include "experiment/finetune_plan.h"
#include "lora_golden.h"
#include "gpu_test.h"
#include "test_util.h"
#include "train/dropout_mask.h"
#include "train/train_device.h"

namespace pivotmt {
namespace {

using namespace test::lora_golden;

using test::kGpu;
using test::random_values;

// PEFT's initial adapter with B made non-zero (PEFT starts it at zero), so that every
// gradient path carries signal: B's values uniform in ±b_scale, drawn from b_seed.
LoraAdapter adapter_with_signal(const ModelConfig& c, const LoraConfig& cfg, uint64_t seed, unsigned b_seed,
                                float b_scale) {
  LoraAdapter a = init_lora(c, cfg, seed);
  std::mt19937 rng(b_seed);
  for (auto& [k, p] : a.weights) p.B = random_values(p.B.size(), rng, b_scale);
  return a;
}

// Host values on both devices; reading back either.
struct Pair {
  Tensor gpu, cpu;
};
class Both {
 public:
  Both() : gpu(train::make_train_device(kGpu)), cpu(train::make_train_device(Device{}, train::Kernels::Reference)) {}
  Pair put(const std::vector<float>& v) {
    Pair p{gpu->buffer(v.size()), cpu->buffer(v.size())};
    gpu->upload(v.data(), v.size() * 4, p.gpu.data());
    cpu->upload(v.data(), v.size() * 4, p.cpu.data());
    return p;
  }
  std::vector<float> get_gpu(const Pair& p, size_t n) {
    std::vector<float> v(n);
    gpu->download(p.gpu.data(), n * 4, v.data());
    return v;
  }
  std::vector<float> get_cpu(const Pair& p, size_t n) {
    std::vector<float> v(n);
    cpu->download(p.cpu.data(), n * 4, v.data());
    return v;
  }
  std::unique_ptr<train::TrainDevice> gpu, cpu;
};
float* g(const Pair& p) { return p.gpu.as<float>(); }
float* c(const Pair& p) { return p.cpu.as<float>(); }

TEST(GpuTrain, EveryOpEqualsTheCpuReference) {
  REQUIRE_GPU();
  Both b;
  std::mt19937 rng(5);
  auto same = [&](const Pair& p, size_t n, double tol, const std::string& what) {
    const auto want = b.get_cpu(p, n);
    EXPECT_TRUE(close(want, b.get_gpu(p, n), tol, what));
  };
  // GEMM, every transpose, alpha and beta (C row-major with a wider leading dimension).
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const size_t M = 7, N = 9, K = 13, ldc = 11;
      const auto A = b.put(random_values(M * K, rng)), B = b.put(random_values(N * K, rng));
      const auto C = b.put(random_values(M * ldc, rng));
      b.gpu->gemm(ta, tb, M, N, K, 0.75f, g(A), ta ? M : K, g(B), tb ? K : N, 0.5f, g(C), ldc);
      b.cpu->gemm(ta, tb, M, N, K, 0.75f, c(A), ta ? M : K, c(B), tb ? K : N, 0.5f, c(C), ldc);
      same(C, M * ldc, 1e-5, "gemm " + std::to_string(ta) + std::to_string(tb));
    }
  const size_t T = 13, H = 40, nh = 4, nkv = 2, d = 16, F = 37;
  {
    const auto x = b.put(random_values(T * H, rng)), w = b.put(random_values(H, rng)), y = b.put(std::vector<float>(T * H));
    const auto r = b.put(std::vector<float>(T)), dy = b.put(random_values(T * H, rng)), dx = b.put(random_values(T * H, rng));
    b.gpu->rmsnorm_forward(g(x), g(w), T, H, 1e-6f, g(y), g(r));
    b.cpu->rmsnorm_forward(c(x), c(w), T, H, 1e-6f, c(y), c(r));
    same(y, T * H, 1e-6, "rmsnorm_forward");
    same(r, T, 1e-6, "rmsnorm_forward rinv");
    b.gpu->rmsnorm_backward(g(x), g(w), g(r), g(dy), T, H, g(dx));
    b.cpu->rmsnorm_backward(c(x), c(w), c(r), c(dy), T, H, c(dx));
    same(dx, T * H, 1e-6, "rmsnorm_backward");
  }
  {
    std::vector<float> inv_freq(d / 2);
    for (size_t i = 0; i < d / 2; ++i) inv_freq[i] = std::pow(10000.0f, -2.0f * float(i) / float(d));
    const auto tables = train::rope_tables(inv_freq, T, 3);
    b.gpu->set_rope(tables);
    b.cpu->set_rope(tables);
    const auto x = b.put(random_values(T * (nh + 1) * d, rng));
    for (bool inverse : {false, true}) {
      b.gpu->rope_apply(g(x), T, (nh + 1) * d, nh, d, inverse);
      b.cpu->rope_apply(c(x), T, (nh + 1) * d, nh, d, inverse);
      same(x, T * (nh + 1) * d, 1e-6, inverse ? "rope inverse" : "rope");
    }
  }
  // Attention: F32 mode's kernels (the CPU's numerics) within 1e-5; F16 mode's tensor-core
  // path (train_attention.h) within its roundings — head dim 16: TF32 GEMMs in blocks of 4
  // query rows (13 rows: four blocks, the last of one row; under the window, blocks whose
  // first key is past 0); head dims 64 and 128: the fused kernels — the F16 forward (77 rows:
  // two tiles of 64, the second partial) and the backward (F16 scores, TF32 gradients: key
  // blocks of 64 over query tiles of 16, row tiles of 64 over key tiles of 16; under the
  // window, tiles partly seen and tiles skipped); with the fused kernels off, every shape
  // as the blocks of TF32 GEMMs (the fused kernels' twin).
  struct AttentionShape {
    size_t T, d, window;
  };
  for (const AttentionShape shape : {AttentionShape{13, 16, 0}, AttentionShape{13, 16, 5}, AttentionShape{77, 64, 0},
                                     AttentionShape{77, 64, 20}, AttentionShape{70, 128, 0}, AttentionShape{70, 128, 33}})
  for (int variant = 0; variant < 3; ++variant) {  // F32 kernels; tensor cores fused; blocks of GEMMs
    const size_t T = shape.T, d = shape.d, window = shape.window;
    const bool f16 = variant > 0;
    auto gpu = train::make_train_device(kGpu, train::Kernels::Fast, f16 ? train::BaseCompute::F16 : train::BaseCompute::F32);
    if (f16) gpu->set_attention_block_rows(4);
    gpu->set_attention_fused(variant != 2);
    const double tol = f16 ? 1e-3 : 1e-5;
    const std::string w = std::string(variant == 0 ? " f32" : variant == 1 ? " f16" : " f16 blocks") + " (T " +
                          std::to_string(T) + ", d " + std::to_string(d) + ", window " + std::to_string(window) + ")";
    auto put = [&](const std::vector<float>& v) {
      Pair p{gpu->buffer(v.size()), b.cpu->buffer(v.size())};
      gpu->upload(v.data(), v.size() * 4, p.gpu.data());
      b.cpu->upload(v.data(), v.size() * 4, p.cpu.data());
      return p;
    };
    auto check = [&](const Pair& p, size_t n, const std::string& what) {
      std::vector<float> got(n);
      gpu->download(p.gpu.data(), n * 4, got.data());
      EXPECT_TRUE(close(b.get_cpu(p, n), got, tol, what + w));
    };
    const auto q = put(random_values(T * nh * d, rng)), k = put(random_values(T * nkv * d, rng)),
               v = put(random_values(T * nkv * d, rng));
    const auto out = put(std::vector<float>(T * nh * d)), lse = put(std::vector<float>(nh * T));
    gpu->attention_forward(g(q), g(k), g(v), T, nh, nkv, d, window, g(out), g(lse));
    b.cpu->attention_forward(c(q), c(k), c(v), T, nh, nkv, d, window, c(out), c(lse));
    check(out, T * nh * d, "attention_forward");
    {  // lse to an absolute tolerance: an error ε in it scales the backward's P by e^ε
      const auto want = b.get_cpu(lse, nh * T);
      std::vector<float> got(nh * T);
      gpu->download(lse.gpu.data(), got.size() * 4, got.data());
      for (size_t i = 0; i < got.size(); ++i)
        ASSERT_NEAR(got[i], want[i], tol) << "attention_forward lse" << w << " [" << i << "]";
    }
    const auto dout = put(random_values(T * nh * d, rng));
    const auto dq = put(random_values(T * nh * d, rng)), dk = put(random_values(T * nkv * d, rng)),
               dv = put(random_values(T * nkv * d, rng));  // backward adds into them
    gpu->attention_backward(g(q), g(k), g(v), g(out), g(dout), g(lse), T, nh, nkv, d, window, g(dq), g(dk), g(dv));
    b.cpu->attention_backward(c(q), c(k), c(v), c(out), c(dout), c(lse), T, nh, nkv, d, window, c(dq), c(dk), c(dv));
    check(dq, T * nh * d, "attention_backward dq");
    check(dk, T * nkv * d, "attention_backward dk");
    check(dv, T * nkv * d, "attention_backward dv");
  }
  {
    const size_t n = T * F;
    const auto gt = b.put(random_values(n, rng, 4.0f)), u = b.put(random_values(n, rng)), out = b.put(std::vector<float>(n));
    b.gpu->silu_mul_forward(g(gt), g(u), n, g(out));
    b.cpu->silu_mul_forward(c(gt), c(u), n, c(out));
    same(out, n, 1e-6, "silu_mul_forward");
    const auto dout = b.put(random_values(n, rng)), dg = b.put(random_values(n, rng)), du = b.put(random_values(n, rng));
    b.gpu->silu_mul_backward(g(gt), g(u), g(dout), n, g(dg), g(du));
    b.cpu->silu_mul_backward(c(gt), c(u), c(dout), n, c(dg), c(du));
    same(dg, n, 1e-6, "silu_mul_backward dg");
    same(du, n, 1e-6, "silu_mul_backward du");
    b.gpu->add(g(gt), g(u), n, g(out));
    b.cpu->add(c(gt), c(u), n, c(out));
    EXPECT_EQ(b.get_gpu(out, n), b.get_cpu(out, n)) << "add";
    // Dropout: the same masks on both devices, to the bit; p = 0 adds everything.
    const uint64_t seed = train::mask_seed(42, 3, 5);
    b.gpu->dropout(g(gt), n, seed, 0.25f, g(out));
    b.cpu->dropout(c(gt), n, seed, 0.25f, c(out));
    const auto dropped = b.get_gpu(out, n);
    EXPECT_EQ(dropped, b.get_cpu(out, n)) << "dropout";
    EXPECT_GT(std::count(dropped.begin(), dropped.end(), 0.0f), long(n / 8)) << "dropout: about a quarter dropped";
    for (float p : {0.25f, 0.0f}) {
      b.gpu->add_dropped(g(u), n, seed, p, g(dg));
      b.cpu->add_dropped(c(u), n, seed, p, c(dg));
      EXPECT_EQ(b.get_gpu(dg, n), b.get_cpu(dg, n)) << "add_dropped p " << p;
    }
  }
  {
    const size_t rows = 5, V = 301;
    const auto logits = b.put(random_values(rows * V, rng, 6.0f));
    const std::vector<int32_t> labels = {3, -100, 300, 0, 150};
    const double lg = b.gpu->cross_entropy(g(logits), labels.data(), rows, V, 0.125f);
    const double lc = b.cpu->cross_entropy(c(logits), labels.data(), rows, V, 0.125f);
    EXPECT_NEAR(lg, lc, 1e-6 * std::fabs(lc)) << "cross_entropy loss";
    same(logits, rows * V, 1e-6, "cross_entropy gradients");
  }
  // The optimiser on the device: Σ x² in double (order aside, the CPU's), clipping's scale and
  // AdamW's update bit for bit (three steps, with and without weight decay).
  {
    const size_t n = 9001;  // several blocks and a ragged tail
    const auto x = b.put(random_values(n, rng, 3.0f));
    const double sg = b.gpu->sum_squares(g(x), n), sc = b.cpu->sum_squares(c(x), n);
    EXPECT_NEAR(sg, sc, 1e-12 * sc) << "sum_squares";
    EXPECT_EQ(b.gpu->sum_squares(g(x), 0), 0.0) << "sum_squares of nothing";
    b.gpu->scale(g(x), n, 0.3f);
    b.cpu->scale(c(x), n, 0.3f);
    EXPECT_EQ(b.get_gpu(x, n), b.get_cpu(x, n)) << "scale";
    for (double decay : {0.0, 0.01}) {
      const auto p = b.put(random_values(n, rng)), m = b.put(std::vector<float>(n)), v = b.put(std::vector<float>(n));
      train::AdamWConfig config;
      config.weight_decay = decay;
      for (int64_t t = 1; t <= 3; ++t) {
        auto grads = random_values(n, rng, t == 2 ? 1e-4f : 2.0f);
        for (size_t i = 0; i < n; i += 7) grads[i] = 0.0f;  // untouched parameters keep decaying moments
        const auto gr = b.put(grads);
        const auto s = train::adamw_scalars(t, 2e-4 * double(t), config);
        b.gpu->adamw(g(p), g(gr), g(m), g(v), n, s);
        b.cpu->adamw(c(p), c(gr), c(m), c(v), n, s);
      }
      EXPECT_EQ(b.get_gpu(p, n), b.get_cpu(p, n)) << "adamw parameters, weight decay " << decay;
      EXPECT_EQ(b.get_gpu(m, n), b.get_cpu(m, n)) << "adamw first moments";
      EXPECT_EQ(b.get_gpu(v, n), b.get_cpu(v, n)) << "adamw second moments";
    }
  }
  // The frozen base: F32 kept, F16 converted and NF4 dequantised on the device exactly as
  // the host does; embedding rows of an F32 table.
  const std::vector<float> values = random_values(24 * 40, rng);
  for (BaseWeights storage : {BaseWeights::F32, BaseWeights::F16, BaseWeights::NF4}) {
    FrozenMatrix m;
    m.out = 24;
    m.in = 40;
    m.storage = storage;
    if (storage == BaseWeights::F32) m.f32 = values;
    if (storage == BaseWeights::F16) {
      m.f16.resize(values.size());
      convert_floats(DType::F32, values.data(), DType::F16, m.f16.data(), values.size());
    }
    if (storage == BaseWeights::NF4) m.q = nf4::quantize(values, true);
    std::vector<float> want(values.size()), got(values.size());
    m.rows_f32(0, m.out, want.data());
    const auto fg = b.gpu->frozen(m);
    train::WeightScratch scratch;
    b.gpu->download(b.gpu->weight_f32(*fg, scratch), got.size() * 4, got.data());
    EXPECT_EQ(got, want) << base_weights_name(storage);
    // Device bytes: F32 4 a weight, F16 2, NF4 the packed codes and an F32 absmax per 64.
    const size_t want_bytes = storage == BaseWeights::F32   ? values.size() * 4
                              : storage == BaseWeights::F16 ? values.size() * 2
                                                            : values.size() / 2 + (values.size() + 63) / 64 * 4;
    EXPECT_EQ(fg->bytes, want_bytes) << base_weights_name(storage);
    // The base GEMM: F32 mode exactly the CPU's path; F16 mode (inputs rounded to F16, F32
    // sums) within F16's rounding of the CPU's F32 products — also for activations far from
    // 1: a long window's gradients (~1e-7, F16's subnormals unscaled) and outliers past
    // F16's 65504, which the F16 path scales by a power of two before rounding.
    for (float magnitude : {1.0f, 1e-7f, 2e5f})
    for (bool trans_w : {true, false}) {
      const size_t M = 6, N = trans_w ? m.out : m.in, K = trans_w ? m.in : m.out;
      const auto x = random_values(M * (K + 3), rng, magnitude);
      const auto y0 = random_values(M * N, rng, magnitude);
      std::vector<float> want_y = y0, got_y(M * N);
      FrozenMatrix host = m;
      const auto fc = b.cpu->frozen(host);
      train::WeightScratch cs;
      b.cpu->base_gemm(trans_w, M, N, K, 0.5f, x.data(), K + 3, *fc, 1.0f, want_y.data(), N, cs);
      for (auto compute : {train::BaseCompute::F32, train::BaseCompute::F16}) {
        auto dev = train::make_train_device(kGpu, train::Kernels::Fast, compute);
        const auto fw = dev->frozen(m);
        Tensor xs = dev->buffer(x.size()), ys = dev->buffer(y0.size());
        train::WeightScratch sc;
        dev->upload(x.data(), x.size() * 4, xs.data());
        dev->upload(y0.data(), y0.size() * 4, ys.data());
        dev->base_gemm(trans_w, M, N, K, 0.5f, xs.as<float>(), K + 3, *fw, 1.0f, ys.as<float>(), N, sc);
        dev->download(ys.data(), got_y.size() * 4, got_y.data());
        const bool f16 = compute == train::BaseCompute::F16;
        EXPECT_TRUE(close(want_y, got_y, f16 ? 3e-3 : 1e-5,
                          std::string("base_gemm ") + base_weights_name(storage) + (f16 ? " f16" : " f32") +
                              (trans_w ? " (x Wt)" : " (dy W)") + " magnitude " + std::to_string(magnitude)));
        // The scratch converts a matrix once while it holds it, and again for another
        // matrix: 2W (every storage doubles exactly) through the same scratch gives 2y.
        if (magnitude != 1.0f) continue;
        FrozenMatrix twice = m;
        for (auto& w : twice.f32) w *= 2;
        if (!twice.f16.empty()) {
          std::vector<float> halves(twice.f16.size());
          convert_floats(DType::F16, twice.f16.data(), DType::F32, halves.data(), halves.size());
          for (auto& h : halves) h *= 2;
          convert_floats(DType::F32, halves.data(), DType::F16, twice.f16.data(), halves.size());
        }
        for (auto& a : twice.q.absmax) a *= 2;
        const auto fw2 = dev->frozen(twice);
        std::vector<float> once(M * N), again(M * N), doubled(M * N);
        auto product = [&](const train::DeviceFrozen& w, std::vector<float>& out) {
          dev->base_gemm(trans_w, M, N, K, 0.5f, xs.as<float>(), K + 3, w, 0.0f, ys.as<float>(), N, sc);
          dev->download(ys.data(), out.size() * 4, out.data());
        };
        product(*fw, once);
        product(*fw, again);
        product(*fw2, doubled);
        EXPECT_EQ(once, again) << "the same matrix through a scratch that holds it";
        for (auto& v : once) v *= 2;
        EXPECT_EQ(once, doubled) << "another matrix through the same scratch: " << base_weights_name(storage);
      }
    }
    if (storage == BaseWeights::F32) {
      const std::vector<int32_t> ids = {23, 0, 7};
      Tensor rows = b.gpu->buffer(3 * 40);
      b.gpu->embed_rows(*fg, ids.data(), 3, rows.as<float>());
      std::vector<float> r(3 * 40);
      b.gpu->download(rows.data(), r.size() * 4, r.data());
      for (size_t i = 0; i < 3; ++i)
        EXPECT_TRUE(std::equal(r.begin() + long(i * 40), r.begin() + long(i * 40 + 40), values.begin() + long(ids[i] * 40)));
    }
  }
}

// One sequence's loss and every LoRA gradient on the device, with dropout (the masks drawn
// on the device), against the CPU's; logits against the CPU's. The device runs the MLP in
// blocks of 8 rows (each block's part of the dropout masks, its matrices converted once
// for all blocks), the CPU in one.
TEST(GpuTrain, LossAndGradientsEqualTheCpu) {
  REQUIRE_GPU();
  SafetensorsFile f(golden_path());
  const auto seqs = golden_sequences(f);
  LoraConfig cfg = golden_config();
  cfg.dropout = 0.1;
  for (BaseWeights base : {BaseWeights::NF4, BaseWeights::F16}) {
    LoraLlama gpu(model_dir(), base, train::Kernels::Fast, kGpu, train::BaseCompute::F32), cpu(model_dir(), base);
    LoraLlama gpu16(model_dir(), base, train::Kernels::Fast, kGpu);  // the default: F16 base GEMMs
    gpu.set_mlp_block_rows(8);
    gpu16.set_mlp_block_rows(8);
    EXPECT_EQ(gpu.device(), kGpu);
    const auto b = adapter_with_signal(cpu.config(), cfg, 11, 3, 0.05f);
    gpu.set_adapter(b);
    cpu.set_adapter(b);
    gpu16.set_adapter(b);
    EXPECT_TRUE(close(cpu.logits(seqs[0].tokens), gpu.logits(seqs[0].tokens), 1e-5, "logits"));
    for (size_t i = 0; i < 2; ++i) {
      const double lg = gpu.forward_backward(seqs[i], 0.5f, 1234 + i), lc = cpu.forward_backward(seqs[i], 0.5f, 1234 + i);
      EXPECT_NEAR(lg, lc, 1e-5 * lc) << base_weights_name(base) << " sequence " << i;
      EXPECT_NEAR(gpu16.forward_backward(seqs[i], 0.5f, 1234 + i), lc, 1e-3 * lc)
          << base_weights_name(base) << " sequence " << i << ", F16 base GEMMs";
    }
    EXPECT_NEAR(gpu.loss(seqs[2]), cpu.loss(seqs[2]), 1e-5 * cpu.loss(seqs[2])) << base_weights_name(base);
    const auto& gg = gpu.grads();
    const auto& g16 = gpu16.grads();
    for (const auto& [k, p] : cpu.grads().weights) {
      const std::string what = std::string(base_weights_name(base)) + " layer " + std::to_string(k.first) + " " + k.second;
      EXPECT_TRUE(close(p.A, gg.weights.at(k).A, 1e-4, what + " dA"));
      EXPECT_TRUE(close(p.B, gg.weights.at(k).B, 1e-4, what + " dB"));
      EXPECT_TRUE(close(p.A, g16.weights.at(k).A, 2e-2, what + " dA, F16 base GEMMs"));
      EXPECT_TRUE(close(p.B, g16.weights.at(k).B, 2e-2, what + " dB, F16 base GEMMs"));
    }
    // The device keeps the base in its storage format (NF4's absmax as F32, not 8-bit).
    EXPECT_LE(double(gpu.base_bytes()), 1.05 * double(cpu.base_bytes())) << base_weights_name(base);
  }
}

// A real trained model (SmolLM2-135M-Instruct, from its GGUF file; F16 base) fine-tuned on
// the device in the default F16 mode against the CPU in F32: real activations and gradients
// (outlier dimensions, the loss a mean over the window) through the fused attention forward
// (head dim 64, 9 query heads over 3: two tiles of 64 rows), the TF32 backward, the F16
// base products with their scaling and the tied output layer converted per product. One
// sequence (the two chat prompts of tests/goldens/smollm2 end to end, 85 tokens): the loss
// within the 1e-3 relative, every LoRA gradient within 2e-2 of the largest (the
// tiny model's bounds), with dropout.
TEST(GpuTrain, RealModelInF16TrainsAsTheCpu) {
  REQUIRE_GPU();
  const std::string file = test::fixture("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
  if (!std::filesystem::exists(file)) GTEST_SKIP() << file << " is not here (the GPU bundle leaves it out: 98 MB)";
  const SafetensorsFile golden(std::string(PIVOTMT_SOURCE_DIR) + "/tests/goldens/smollm2/golden.safetensors");
  TrainSequence seq;
  for (const char* p : {"r0.input_ids", "r1.input_ids"})
    for (int64_t id : test::read_tensor<int64_t>(golden, p)) seq.tokens.push_back(int32_t(id));
  seq.target.assign(seq.tokens.size(), 1);
  LoraLlama gpu(file, BaseWeights::F16, train::Kernels::Fast, kGpu), cpu(file, BaseWeights::F16);
  ASSERT_EQ(cpu.config().head_dim, 64);
  LoraConfig cfg;  // the original's: r 16 on all seven projections, dropout 0.05
  const auto adapter = adapter_with_signal(cpu.config(), cfg, 17, 9, 0.02f);
  gpu.set_adapter(adapter);
  cpu.set_adapter(adapter);
  const float scale = 1.0f / float(seq.tokens.size() - 1);  // a window's token mean
  const double lc = cpu.forward_backward(seq, scale, 99), lg = gpu.forward_backward(seq, scale, 99);
  ASSERT_TRUE(std::isfinite(lg));
  EXPECT_NEAR(lg, lc, 1e-3 * lc);
  const auto& gg = gpu.grads();
  for (const auto& [k, p] : cpu.grads().weights) {
    const std::string what = "layer " + std::to_string(k.first) + " " + k.second;
    EXPECT_TRUE(close(p.A, gg.weights.at(k).A, 2e-2, what + " dA"));
    EXPECT_TRUE(close(p.B, gg.weights.at(k).B, 2e-2, what + " dB"));
  }
}

// `finetune --dry-run`'s memory model against what LoraLlama holds on the device after a
// training pass and an optimiser step (every buffer is kept between steps), to the byte: base storages, F16 and F32 base
// products, checkpointing on and off, with and without dropout, a subset of targets.
TEST(GpuTrain, FinetunePlanCountsWhatTheDeviceHolds) {
  REQUIRE_GPU();
  SafetensorsFile f(golden_path());
  const auto seqs = golden_sequences(f);
  struct Case {
    BaseWeights base;
    train::BaseCompute compute;
    Checkpointing checkpointing;
    double dropout;
    std::vector<std::string> targets;
    std::string dir = model_dir();
    size_t mlp_block_rows = kMlpBlockRows;
    bool offload_inputs = true;
  };
  const std::vector<std::string> all = LoraConfig{}.targets;
  const std::vector<Case> cases = {
      {BaseWeights::NF4, train::BaseCompute::F16, Checkpointing::Always, 0.1, all},
      {BaseWeights::NF4, train::BaseCompute::F32, Checkpointing::Never, 0.1, all},
      {BaseWeights::F16, train::BaseCompute::F16, Checkpointing::Always, 0.0, {"q_proj", "v_proj"}},
      {BaseWeights::F32, train::BaseCompute::F32, Checkpointing::Always, 0.05, {"down_proj"}},
      // Tied embeddings: the device holds the table (F32, converted per product in F16 mode).
      {BaseWeights::NF4, train::BaseCompute::F16, Checkpointing::Always, 0.1, all, test::fixture("models/tiny-bf16-tied")},
      {BaseWeights::F16, train::BaseCompute::F32, Checkpointing::Never, 0.0, all, test::fixture("models/tiny-bf16-tied")},
      // The MLP in blocks of 8 rows: a block's buffers (a short last one), every row's when kept.
      {BaseWeights::NF4, train::BaseCompute::F16, Checkpointing::Always, 0.1, all, model_dir(), 8},
      {BaseWeights::NF4, train::BaseCompute::F32, Checkpointing::Never, 0.1, {"down_proj", "q_proj"}, model_dir(), 8},
      // The layers' inputs on the device (else offloaded: two slots there, the rest pinned).
      {BaseWeights::NF4, train::BaseCompute::F16, Checkpointing::Always, 0.1, all, model_dir(), kMlpBlockRows, false},
      // Head dim 64: attention's fused kernels, which hold no buffers (F32 mode's kernels neither).
      {BaseWeights::NF4, train::BaseCompute::F16, Checkpointing::Always, 0.1, all, test::fixture("models/tiny-sharded")},
      {BaseWeights::F16, train::BaseCompute::F16, Checkpointing::Never, 0.0, all, test::fixture("models/tiny-sharded")},
  };
  for (const auto& c : cases) {
    const size_t before = cuda::allocated_bytes(kGpu.index);
    LoraLlama model(c.dir, c.base, train::Kernels::Fast, kGpu, c.compute);
    model.set_checkpointing(c.checkpointing);
    model.set_mlp_block_rows(c.mlp_block_rows);
    model.set_offload_inputs(c.offload_inputs);
    LoraConfig lora = golden_config();
    lora.dropout = c.dropout;
    lora.targets = c.targets;
    model.set_adapter(init_lora(model.config(), lora, 5));
    TrainSequence seq = seqs[0];  // within the model's vocabulary
    for (auto& t : seq.tokens) t %= int32_t(model.config().vocab_size);
    model.forward_backward(seq, 0.5f, 7);
    model.optimizer_step(model.grad_norm(), 1.0, 1e-3, {});
    const size_t held = cuda::allocated_bytes(kGpu.index) - before;
    FinetuneSetup setup;
    setup.base = c.base;
    setup.compute = c.compute;
    setup.lora = lora;
    setup.mlp_block_rows = c.mlp_block_rows;
    setup.offload_inputs = c.offload_inputs;
    const auto plan = finetune_memory(model.config(), setup, seqs[0].tokens.size(), true, c.checkpointing == Checkpointing::Never);
    EXPECT_EQ(plan.total(), held)  // byte for byte: the plan names every buffer
        << c.dir << " " << base_weights_name(c.base) << (c.compute == train::BaseCompute::F16 ? " f16" : " f32")
        << " held " << held
        << " planned " << plan.total() << " (base " << plan.base << ", scratch " << plan.scratch << ")";
  }
}

// The layers' inputs offloaded to pinned host memory (copies on a second stream beside the
// compute, which the emulator runs as late as CUDA's ordering allows: a missing wait shows
// as stale data) give the bits of inputs kept on the device: losses, every gradient, and
// an evaluation loss after (buffers for a longer sequence reused by shorter ones).
TEST(GpuTrain, OffloadedInputsChangeNoBit) {
  REQUIRE_GPU();
  SafetensorsFile f(golden_path());
  const auto seqs = golden_sequences(f);
  LoraConfig cfg = golden_config();
  cfg.dropout = 0.1;
  auto model_with = [&](bool offload) {
    LoraLlama model(model_dir(), BaseWeights::NF4, train::Kernels::Fast, kGpu);
    model.set_checkpointing(Checkpointing::Always);
    model.set_offload_inputs(offload);
    model.set_adapter(adapter_with_signal(model.config(), cfg, 21, 5, 0.05f));
    return model;
  };
  std::vector<std::vector<double>> losses;
  std::vector<LoraAdapter> grads;
  for (bool offload : {true, false}) {
    LoraLlama model = model_with(offload);
    losses.emplace_back();
    for (size_t i : {size_t(1), size_t(0), size_t(2)}) losses.back().push_back(model.forward_backward(seqs[i], 0.5f, 40 + i));
    losses.back().push_back(model.loss(seqs[3 % seqs.size()]));
    grads.push_back(model.grads());
  }
  EXPECT_EQ(losses[0], losses[1]);
  for (const auto& [k, g] : grads[1].weights) {
    EXPECT_EQ(grads[0].weights.at(k).A, g.A) << "layer " << k.first << " " << k.second;
    EXPECT_EQ(grads[0].weights.at(k).B, g.B) << "layer " << k.first << " " << k.second;
  }
  // A host that cannot pin the inputs: a warning, and the device keeps them (the same bits).
  setenv("PIVOTMT_CUDA_EMULATOR_PINNED_MIB", "0", 1);
  LoraLlama model = model_with(true);
  ::testing::internal::CaptureStderr();
  const double loss = model.forward_backward(seqs[1], 0.5f, 41);
  const std::string err = ::testing::internal::GetCapturedStderr();
  unsetenv("PIVOTMT_CUDA_EMULATOR_PINNED_MIB");
  if (cuda_device_info(kGpu.index).name.find("emulator") != std::string::npos) {  // the cap is the emulator's
    EXPECT_NE(err.find("stay in device memory"), std::string::npos) << err;
    EXPECT_EQ(model.offloaded_host_bytes(), 0u);
  }
  EXPECT_EQ(loss, losses[0][0]);
}

// The original recipe's 10 steps on an NF4 base on the device: PyTorch + PEFT's trajectory
// (the CPU test's limits) and the CPU's (1e-5); then interrupted and resumed on the device.
TEST(GpuTrain, RecipeTrajectoryMatchesPeftAndTheCpuAndResumes) {
  REQUIRE_GPU();
  SafetensorsFile f(golden_path());
  LoraLlama gpu(model_dir(), BaseWeights::NF4, train::Kernels::Fast, kGpu, train::BaseCompute::F32),
      cpu(model_dir(), BaseWeights::NF4), gpu16(model_dir(), BaseWeights::NF4, train::Kernels::Fast, kGpu);
  const auto start = adapter_from(f, "nf4.init.", cpu.config());
  gpu.set_adapter(start);
  cpu.set_adapter(start);
  gpu16.set_adapter(start);
  const auto on_gpu = Trainer(gpu, golden_sequences(f), {}, golden_options()).run();
  const auto on_cpu = Trainer(cpu, golden_sequences(f), {}, golden_options()).run();
  // F16 base GEMMs over the recipe's first 5 steps (a 5-step schedule), against the CPU's.
  auto five = golden_options();
  five.steps = 5;
  cpu.set_adapter(start);
  const auto cpu5 = Trainer(cpu, golden_sequences(f), {}, five).run();
  const auto on_gpu16 = Trainer(gpu16, golden_sequences(f), {}, five).run();
  ASSERT_EQ(on_gpu16.size(), cpu5.size());
  for (size_t i = 0; i < cpu5.size(); ++i)  // the limit for F16 compute: 1e-3 relative per step
    EXPECT_NEAR(on_gpu16[i].loss, cpu5[i].loss, 1e-3 * cpu5[i].loss) << "step " << i + 1 << ", F16 base GEMMs";
  const auto loss = test::read_tensor<double>(f, "nf4.loss");
  const auto norm = test::read_tensor<double>(f, "nf4.grad_norm");
  ASSERT_EQ(on_gpu.size(), loss.size());
  for (size_t i = 0; i < loss.size(); ++i) {
    EXPECT_NEAR(on_gpu[i].loss, loss[i], 1e-4 * loss[i]) << "step " << i + 1;
    EXPECT_NEAR(on_gpu[i].grad_norm, norm[i], 1e-3 * norm[i]) << "step " << i + 1;
    EXPECT_NEAR(on_gpu[i].loss, on_cpu[i].loss, 1e-5 * on_cpu[i].loss) << "step " << i + 1;
  }
  EXPECT_TRUE(close(adapter_from(f, "nf4.final.", cpu.config()).weights.begin()->second.A,
                    gpu.adapter().weights.begin()->second.A, 1e-3, "final adapter"));

  auto options = golden_options();
  options.steps = 5;
  options.save_every = 2;
  test::TempDir straight_dir, resumed_dir;
  gpu.set_adapter(start);
  options.out_dir = straight_dir.str();
  const auto straight = Trainer(gpu, golden_sequences(f), {}, options).run();
  gpu.set_adapter(start);
  options.out_dir = resumed_dir.str();
  EXPECT_THROW(Trainer(gpu, golden_sequences(f), {}, options).run([](const StepRecord& r) {
    if (r.step == 3) throw Error("killed");
  }), Error);
  gpu.set_adapter(init_lora(gpu.config(), golden_config(), 99));
  Trainer again(gpu, golden_sequences(f), {}, options);
  const auto resumed = again.run();
  EXPECT_EQ(again.resumed_from(), 2);
  ASSERT_EQ(resumed.size(), straight.size());
  for (size_t i = 0; i < straight.size(); ++i) EXPECT_EQ(resumed[i].loss, straight[i].loss) << "step " << i + 1;
  EXPECT_EQ(test::read_file(straight_dir.str("adapter_model.safetensors")),
            test::read_file(resumed_dir.str("adapter_model.safetensors")));
}

}  // namespace
}  // namespace pivotmt
