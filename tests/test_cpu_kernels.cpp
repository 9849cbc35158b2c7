// Every SIMD path of the CPU kernels this machine can run (portable, AVX2, AVX-512,
// AVX-512 VNNI, chosen with set_isa_cap) against the reference ops, on odd shapes: rows
// that leave partial register tiles, widths that leave partial vectors and split k into
// blocks, strided (fused) outputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>

#include "backends/cpu/cpu_features.h"
#include "backends/cpu/gemm.h"
#include "backends/cpu/ops.h"
#include "backends/cpu/vmath.h"
#include "core/error.h"
#include "cpu_kernel_test.h"
#include "test_util.h"

namespace pivotmt::cpu {
namespace {

using test::expect_close;
using test::IsaLevels;
using test::random_normal;

Matrix matrix(size_t out, size_t in, DType dtype, unsigned seed, bool int8_activations = false) {
  const auto values = random_normal(out * in, seed, 0.1f);
  if (dtype == DType::I8) return quantize_int8(values.data(), out, in, int8_activations);
  Matrix m;
  m.out = out;
  m.in = in;
  m.dtype = dtype;
  if (dtype == DType::NF4) {
    m.nf4 = nf4::quantize(values, true);
  } else if (dtype == DType::F32) {
    m.f32 = values;
  } else {
    m.f16.resize(values.size());
    convert_floats(DType::F32, values.data(), DType::F16, m.f16.data(), values.size());
  }
  return m;
}


const std::vector<size_t> kRows = {1, 2, 5, 7, 8, 13, 33, 70, 130};  // 130: F32 SGEMM
// The last two are multiples of 16 wide, as NF4's AVX-512 tiles need: 80 puts a 64-value
// block across two rows, 1104 splits k into two blocks of the tiles (560 + 544).
const std::vector<std::pair<size_t, size_t>> kShapes = {{7, 13},  {769, 65}, {64, 769},
                                                        {37, 1100}, {5, 2050}, {19, 80}, {37, 1104}};

TEST_F(IsaLevels, LinearEveryPathMatchesReference) {
  for (Isa level : levels()) {
    set_isa_cap(level);
    for (DType dtype : {DType::F32, DType::F16, DType::I8, DType::NF4})
      for (auto [out, in] : kShapes)
        for (size_t T : kRows) {
          const Matrix w = matrix(out, in, dtype, unsigned(out * 31 + in));
          const auto x = random_normal(T * in, unsigned(T * 7 + in));
          std::vector<float> want(T * out), got(T * out);
          ref::linear(x.data(), T, w, want.data());
          fast::linear(x.data(), T, w, got.data());
          const std::string what = std::string(isa_name(level)) + " " + std::string(dtype_name(dtype)) + " T=" + std::to_string(T) +
                                   " [" + std::to_string(out) + ", " + std::to_string(in) + "]";
          expect_close(got, want, 2e-5f * std::sqrt(float(in)), what);
          // Into columns [3, 3 + out) of wider rows: the other columns untouched.
          const size_t ldy = out + 5;
          std::vector<float> wide(T * ldy, -7.0f);
          fast::linear(x.data(), T, w, wide.data() + 3, ldy);
          for (size_t t = 0; t < T; ++t)
            for (size_t c = 0; c < ldy; ++c) {
              const bool inside = c >= 3 && c < 3 + out;
              ASSERT_EQ(wide[t * ldy + c], inside ? got[t * out + c - 3] : -7.0f) << what << " strided, column " << c;
            }
        }
  }
}

// Activations quantised per row and 256-value block: every value within half a step of its
// block's scale, padding the zero code, and the scale the block's absmax / 127.
TEST(Q8, QuantizedRowsWithinHalfAStep) {
  const size_t M = 3, K = 600;
  auto x = random_normal(M * K, 5);
  for (size_t k = 256; k < 512; ++k) x[K + k] = 0.0f;  // an all-zero block
  kernels::Q8Rows q;
  kernels::quantize_rows_q8(x.data(), M, K, q);
  ASSERT_EQ(q.stride, 640u);
  ASSERT_EQ(q.blocks, 3u);
  for (size_t m = 0; m < M; ++m) {
    for (size_t b = 0; b < 3; ++b) {
      float absmax = 0;
      for (size_t k = b * 256; k < std::min(K, b * 256 + 256); ++k) absmax = std::max(absmax, std::fabs(x[m * K + k]));
      EXPECT_FLOAT_EQ(q.scale[m * 3 + b], absmax > 0 ? absmax / 127 : 1.0f);
    }
    for (size_t k = 0; k < K; ++k) {
      const float s = q.scale[m * 3 + k / 256];
      ASSERT_LE(std::fabs((float(q.q[m * q.stride + k]) - 128) * s - x[m * K + k]), 0.5f * s * 1.0001f) << m << "," << k;
    }
    for (size_t k = K; k < q.stride; ++k) ASSERT_EQ(q.q[m * q.stride + k], 128) << "padding";
  }
}

// The AVX-512 quantiser gives the reference's bytes and scales exactly, ties to even
// included (a block whose absmax is 127 has scale 1, so x.5 values are exact ties).
TEST(Q8, FastQuantiserMatchesReference) {
  if (hardware_isa() < Isa::Avx512) GTEST_SKIP() << "no AVX-512 on this machine";
  for (auto [M, K] : {std::pair<size_t, size_t>{1, 13}, {3, 600}, {5, 1100}, {2, 2050}, {4, 256}}) {
    auto x = random_normal(M * K, 11 + K);
    for (size_t k = 0; k < std::min<size_t>(K, 256); ++k) x[k] = k == 0 ? 127.0f : float(int(k % 40) - 20) + 0.5f;
    kernels::Q8Rows ref, fast;
    kernels::quantize_rows_q8(x.data(), M, K, ref);
    fast.q.assign(7, 0);  // stale contents must not leak through
    kernels::quantize_rows_q8_fast(x.data(), M, K, fast);
    ASSERT_EQ(fast.stride, ref.stride);
    ASSERT_EQ(fast.blocks, ref.blocks);
    ASSERT_EQ(fast.q, ref.q) << M << "x" << K;
    ASSERT_EQ(fast.scale, ref.scale) << M << "x" << K;
  }
}

// INT8 · INT8: the VNNI kernel's int32 block sums are exact, so it matches the reference to
// float rounding; and the quantised product stays near the F32 one.
TEST_F(IsaLevels, Int8ActivationsMatchReference) {
  for (Isa level : levels()) {
    set_isa_cap(level);
    for (auto [out, in] : kShapes)
      for (size_t T : kRows) {
        const Matrix w = matrix(out, in, DType::I8, unsigned(out + in), true);
        const Matrix wf = matrix(out, in, DType::F32, unsigned(out + in));
        const auto x = random_normal(T * in, unsigned(T + 3 * in));
        std::vector<float> want(T * out), got(T * out), exact(T * out);
        ref::linear(x.data(), T, w, want.data());
        fast::linear(x.data(), T, w, got.data());
        ref::linear(x.data(), T, wf, exact.data());
        const std::string what = std::string(isa_name(level)) + " q8 T=" + std::to_string(T) + " [" + std::to_string(out) +
                                 ", " + std::to_string(in) + "]";
        expect_close(got, want, 1e-5f, what);
        // Against F32 activations and the unrounded weights: x̂ = x + ex, ŵ = w + ew with
        // |ex| <= sx / 2 (sx its block's step) and |ew| <= sw / 2, so |Σ x̂ŵ − Σ xw| <=
        // Σ_k (sx_k / 2 · |ŵ_k| + sw / 2 · |x_k|), plus float rounding.
        const auto wv = random_normal(out * in, unsigned(out + in), 0.1f);
        for (size_t t = 0; t < T; ++t)
          for (size_t n = 0; n < out; ++n) {
            double bound = 1e-5, f32 = 0;
            std::vector<float> block_absmax((in + kQ8Block - 1) / kQ8Block, 0.0f);
            for (size_t k = 0; k < in; ++k)
              block_absmax[k / kQ8Block] = std::max(block_absmax[k / kQ8Block], std::fabs(x[t * in + k]));
            for (size_t k = 0; k < in; ++k) {
              const float absmax = block_absmax[k / kQ8Block];
              bound += absmax / 127 / 2 * std::fabs(w.scale[n] * w.row_i8(n)[k]) + w.scale[n] / 2 * std::fabs(x[t * in + k]);
              f32 += double(x[t * in + k]) * wv[n * in + k];
            }
            ASSERT_NEAR(got[t * out + n], f32, bound * 1.001) << what << " vs f32 at " << t << "," << n;
          }
        (void)exact;
      }
  }
}

// Long prefill attention runs in blocks of query rows over the keys each block can see;
// a batch of decode rows runs as one parallel section: both against the reference.
TEST_F(IsaLevels, AttentionBlocksAndBatchesMatchReference) {
  const size_t nh = 6, nkv = 2, d = 24;
  // Prefill (T >= 16): query blocks, windows, and more keys than one key block (600).
  for (Isa level : levels()) {
    set_isa_cap(level);
    for (size_t T : {size_t(16), size_t(150), size_t(600)})
      for (size_t window : {size_t(0), size_t(5), size_t(70)}) {
        const size_t L = T + 9;
        const auto q = random_normal(T * nh * d, 1), k = random_normal(L * nkv * d, 2), v = random_normal(L * nkv * d, 3);
        std::vector<float> a(T * nh * d), b(T * nh * d);
        ref::attention(q.data(), nh * d, k.data(), v.data(), T, L, nh, nkv, d, window, a.data());
        fast::attention(q.data(), nh * d, k.data(), v.data(), T, L, nh, nkv, d, window, b.data());
        expect_close(b, a, 1e-5f,
                     std::string(isa_name(level)) + " attention T=" + std::to_string(T) + " window=" + std::to_string(window));
      }
  }
  for (Isa level : levels()) {
    set_isa_cap(level);
    // Five sequences of different lengths, 1 to 3 new rows each, rows interleaved in one
    // output with a stride wider than the heads.
    const std::vector<size_t> lens = {1, 7, 40, 3, 90}, counts = {1, 2, 1, 3, 1};
    std::vector<std::vector<float>> ks, vs;
    size_t rows = 0;
    for (size_t i = 0; i < lens.size(); ++i) {
      ks.push_back(random_normal(lens[i] * nkv * d, unsigned(10 + i)));
      vs.push_back(random_normal(lens[i] * nkv * d, unsigned(20 + i)));
      rows += counts[i];
    }
    const size_t stride = nh * d + 8;
    const auto q = random_normal(rows * stride, 4);
    std::vector<float> got(rows * stride, -3.0f), want(rows * stride, -3.0f);
    std::vector<fast::AttentionJob> jobs;
    size_t row0 = 0;
    for (size_t i = 0; i < lens.size(); ++i) {
      fast::AttentionJob j{q.data() + row0 * stride, stride, ks[i].data(), vs[i].data(), counts[i], lens[i],
                           got.data() + row0 * stride, stride};
      jobs.push_back(j);
      std::vector<float> o(counts[i] * nh * d);
      ref::attention(q.data() + row0 * stride, stride, ks[i].data(), vs[i].data(), counts[i], lens[i], nh, nkv, d, 0, o.data());
      for (size_t t = 0; t < counts[i]; ++t) std::copy(&o[t * nh * d], &o[(t + 1) * nh * d], &want[(row0 + t) * stride]);
      row0 += counts[i];
    }
    fast::attention_many(jobs, nh, nkv, d, 0);
    expect_close(got, want, 1e-5f, std::string("attention_many ") + isa_name(level));
  }
}

// e^x of the vector path against e^x in double: within 2 ulp of the float result over the
// range softmax and SiLU use (and beyond), 0 for -inf and deep underflow, inf past the top.
TEST_F(IsaLevels, VectorExpWithinTwoUlp) {
  for (Isa level : levels()) {
    set_isa_cap(level);
    std::vector<float> xs;
    for (float v = -103.0f; v < 88.7f; v += 0.0137f) xs.push_back(v);
    for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 0.5f, -0.5f, 88.7f, -87.3f}) xs.push_back(v);
    std::vector<float> e = xs;
    vmath::exp_shifted_sum(e.data(), e.size(), 0.0f);
    for (size_t i = 0; i < xs.size(); ++i) {
      const double want = std::exp(double(xs[i]));
      const float ulp = std::nextafter(float(want), INFINITY) - float(want);
      ASSERT_LE(std::fabs(e[i] - want), 2 * ulp + 1e-45) << isa_name(level) << " e^" << xs[i];
    }
    // The sum, over softmax's range (scores minus their max).
    std::vector<float> scores = random_normal(1000, 3, 3.0f);
    const float top = *std::max_element(scores.begin(), scores.end());
    double want_sum = 0;
    for (float v : scores) want_sum += std::exp(double(v) - double(top));
    EXPECT_NEAR(vmath::exp_shifted_sum(scores.data(), scores.size(), top), want_sum, 1e-6 * want_sum) << isa_name(level);
    std::vector<float> edge = {-INFINITY, -200.0f, 100.0f, 3.0f};
    vmath::exp_shifted_sum(edge.data(), edge.size(), 1.0f);  // shifted: e^(x - 1)
    EXPECT_EQ(edge[0], 0.0f);
    EXPECT_EQ(edge[1], 0.0f);
    EXPECT_EQ(edge[2], INFINITY);
    EXPECT_NEAR(edge[3], std::exp(2.0f), 2e-7f * std::exp(2.0f));
  }
}

// max and SiLU · up of the vector paths against plain loops, on lengths with tails.
TEST_F(IsaLevels, VectorMaxAndSiluMatchPlainLoops) {
  for (Isa level : levels()) {
    set_isa_cap(level);
    for (size_t n : {1, 7, 16, 33, 1000}) {
      auto g = random_normal(n, unsigned(n), 4.0f), u = random_normal(n, unsigned(n + 1));
      g[n / 2] = 30.0f;
      EXPECT_EQ(vmath::max_of(g.data(), n), *std::max_element(g.begin(), g.end())) << isa_name(level) << " n=" << n;
      std::vector<float> got(n), want(n);
      vmath::silu_mul(g.data(), u.data(), n, got.data());
      for (size_t i = 0; i < n; ++i) want[i] = float(double(g[i]) / (1.0 + std::exp(-double(g[i]))) * double(u[i]));
      expect_close(got, want, 1e-6f, std::string("silu ") + isa_name(level));
    }
  }
}

// The CPU engine's cache is head-major ([n_kv, capacity, d], capacity > L): prefill (query
// blocks) and decode (attention_many) read it through its strides and give what the
// reference gives on the same keys and values laid out [L, n_kv, d].
TEST_F(IsaLevels, HeadMajorCacheMatchesPositionMajor) {
  const size_t nh = 6, nkv = 2, d = 24, capacity = 700;
  const auto head_major = [&](const std::vector<float>& pos_major, size_t L) {
    std::vector<float> out(nkv * capacity * d, NAN);  // unwritten positions would poison results
    for (size_t j = 0; j < L; ++j)
      for (size_t h = 0; h < nkv; ++h)
        std::copy_n(&pos_major[(j * nkv + h) * d], d, &out[(h * capacity + j) * d]);
    return out;
  };
  const KvStrides strides{d, capacity * d};
  for (Isa level : levels()) {
    set_isa_cap(level);
    for (size_t T : {size_t(1), size_t(3), size_t(16), size_t(150), size_t(600)})
      for (size_t window : {size_t(0), size_t(70)}) {
        const size_t L = T + 9;
        const auto q = random_normal(T * nh * d, 1), k = random_normal(L * nkv * d, 2), v = random_normal(L * nkv * d, 3);
        const auto kh = head_major(k, L), vh = head_major(v, L);
        std::vector<float> want(T * nh * d), got(T * nh * d), got_ref(T * nh * d);
        ref::attention(q.data(), nh * d, k.data(), v.data(), T, L, nh, nkv, d, window, want.data());
        fast::attention(q.data(), nh * d, kh.data(), vh.data(), T, L, nh, nkv, d, window, got.data(), strides);
        ref::attention(q.data(), nh * d, kh.data(), vh.data(), T, L, nh, nkv, d, window, got_ref.data(), strides);
        const std::string what = std::string(isa_name(level)) + " T=" + std::to_string(T) + " window=" + std::to_string(window);
        expect_close(got, want, 1e-5f, "fast head-major " + what);
        EXPECT_EQ(got_ref, want) << "reference head-major " << what;
      }
    // A decode batch: two sequences' rows through attention_many, each with its own strides.
    const size_t L0 = 40, L1 = 9;
    const auto q = random_normal(3 * nh * d, 4), k0 = random_normal(L0 * nkv * d, 5), v0 = random_normal(L0 * nkv * d, 6),
               k1 = random_normal(L1 * nkv * d, 7), v1 = random_normal(L1 * nkv * d, 8);
    const auto k0h = head_major(k0, L0), v0h = head_major(v0, L0);
    std::vector<float> got(3 * nh * d), want(3 * nh * d);
    std::vector<fast::AttentionJob> jobs = {{q.data(), nh * d, k0h.data(), v0h.data(), 2, L0, got.data(), nh * d, strides},
                                            {q.data() + 2 * nh * d, nh * d, k1.data(), v1.data(), 1, L1, got.data() + 2 * nh * d, nh * d}};
    fast::attention_many(jobs, nh, nkv, d, 0);
    ref::attention(q.data(), nh * d, k0.data(), v0.data(), 2, L0, nh, nkv, d, 0, want.data());
    ref::attention(q.data() + 2 * nh * d, nh * d, k1.data(), v1.data(), 1, L1, nh, nkv, d, 0, want.data() + 2 * nh * d);
    expect_close(got, want, 1e-5f, std::string("attention_many, mixed layouts ") + isa_name(level));
  }
}

// RMSNorm rows, residual adds and RoPE rotations of the vector paths against their plain
// loops (the sum of squares in another order: within float rounding); RoPE through a
// pass's table equals RoPE computed per call.
TEST_F(IsaLevels, RmsNormAddAndRopeMatchPlainLoops) {
  for (Isa level : levels()) {
    set_isa_cap(level);
    for (size_t n : {1, 7, 16, 33, 64, 100, 1024}) {
      const auto x = random_normal(n, unsigned(n), 3.0f), w = random_normal(n, unsigned(n + 1));
      std::vector<float> got(n), want(n);
      vmath::rms_norm_row(x.data(), n, w.data(), 1e-6f, got.data());
      vmath::rms_norm_row_scalar(x.data(), n, w.data(), 1e-6f, want.data());
      expect_close(got, want, 2e-6f, std::string("rms_norm ") + isa_name(level));
      std::vector<float> a = x, b = x;
      vmath::add(a.data(), w.data(), n);
      vmath::add_scalar(b.data(), w.data(), n);
      EXPECT_EQ(a, b) << "add " << isa_name(level) << " n=" << n;
    }
    for (size_t half : {1, 4, 16, 32, 40, 64}) {
      const auto v = random_normal(2 * half, unsigned(half)), c = random_normal(half, 9), s = random_normal(half, 10);
      std::vector<float> got = v, want = v;
      vmath::rope_head(got.data(), half, c.data(), s.data());
      vmath::rope_head_scalar(want.data(), half, c.data(), s.data());
      expect_close(got, want, 1e-6f, std::string("rope_head ") + isa_name(level));
    }
    Rope r;
    for (size_t i = 0; i < 16; ++i) r.inv_freq.push_back(std::pow(10000.0f, -float(i) / 16));
    const std::vector<int64_t> positions = {0, 1, 7, 300, 4095, 3};
    const size_t T = positions.size(), heads = 5, d = 32, stride = heads * d + 3;
    auto x = random_normal(T * stride, 11);
    std::vector<float> want = x;
    fast::rope_apply(x.data(), T, stride, heads, d, fast::rope_table(positions.data(), T, r));
    ref::rope(want.data(), T, stride, heads, d, positions.data(), r);
    expect_close(x, want, 1e-5f, std::string("rope table ") + isa_name(level));
    // A table made for another head size, or for fewer rows, is refused.
    const auto table = fast::rope_table(positions.data(), T, r);
    EXPECT_THROW(fast::rope_apply(x.data(), T, stride, heads, 2 * d, table), Error);
    EXPECT_THROW(fast::rope_apply(x.data(), T + 1, stride, heads, d, table), Error);
  }
}

TEST(AttentionProducts, TransposeScaledMatchesPlainLoop) {
  if (hardware_isa() < Isa::Avx512) GTEST_SKIP() << "no AVX-512 on this machine";
  for (size_t rows : {1, 7, 16, 33, 64, 700})
    for (size_t cols : {1, 16, 20, 64, 128}) {
      const size_t ld_src = cols + 5, ld_dst = rows + 3;
      const auto src = random_normal(rows * ld_src, 31);
      std::vector<float> dst(cols * ld_dst, -7.0f);
      kernels::transpose_scaled_avx512(src.data(), ld_src, rows, cols, 0.125f, dst.data(), ld_dst);
      for (size_t i = 0; i < cols; ++i)
        for (size_t j = 0; j < ld_dst; ++j)
          ASSERT_EQ(dst[i * ld_dst + j], j < rows ? src[j * ld_src + i] * 0.125f : -7.0f) << rows << "x" << cols << " at " << i << "," << j;
    }
}

// GELU against 0.5 · x · (1 + erf(x / √2)) in double: absolute error within 2e-7 · max(1, |x|)
// over the whole range (deep negative x included, where 1 + erf cancels), exact signs and
// zeros; LayerNorm rows against double loops.
TEST_F(IsaLevels, VectorGeluAndLayerNormMatchDouble) {
  for (Isa level : levels()) {
    set_isa_cap(level);
    std::vector<float> xs;
    for (float v = -30.0f; v < 30.0f; v += 0.00731f) xs.push_back(v);
    for (float v : {0.0f, -0.0f, 1e-30f, -1e-30f, 1e4f, -1e4f}) xs.push_back(v);
    std::vector<float> g = xs;
    vmath::gelu(g.data(), g.size());
    for (size_t i = 0; i < xs.size(); ++i) {
      const double x = xs[i], want = 0.5 * x * std::erfc(-x / std::sqrt(2.0));
      ASSERT_NEAR(g[i], want, 2e-7 * std::max(1.0, std::fabs(x))) << isa_name(level) << " gelu(" << xs[i] << ")";
      if (xs[i] < -12.0f) ASSERT_LE(g[i], 0.0f) << "gelu(" << xs[i] << ") must not change sign";
    }
    for (size_t n : {1, 7, 16, 33, 1024}) {
      auto x = random_normal(n, unsigned(n), 3.0f);
      for (auto& v : x) v += 5.0f;  // an offset the mean must remove
      const auto w = random_normal(n, unsigned(n + 1)), b = random_normal(n, unsigned(n + 2));
      std::vector<float> got = x;
      vmath::layer_norm_row(got.data(), n, w.data(), b.data(), 1e-5f);
      double mean = 0, var = 0;
      for (float v : x) mean += v;
      mean /= double(n);
      for (float v : x) var += (v - mean) * (v - mean);
      const double inv = 1.0 / std::sqrt(var / double(n) + 1e-5);
      for (size_t i = 0; i < n; ++i)
        ASSERT_NEAR(got[i], (x[i] - mean) * inv * w[i] + b[i], 2e-6 * std::max(1.0f, std::fabs(got[i])))
            << isa_name(level) << " layer_norm n=" << n << " at " << i;
    }
  }
}

// Encoder attention: packed sequences of different lengths (one token, one query block,
// several), every ISA level, against the double-precision reference; each sequence's rows
// the same whether it is packed with others or alone.
TEST_F(IsaLevels, EncoderAttentionPackedMatchesReference) {
  const size_t nh = 3, d = 20, H = nh * d;
  const std::vector<size_t> lens = {1, 9, 70, 2, 33};
  std::vector<size_t> starts{0};
  for (size_t n : lens) starts.push_back(starts.back() + n);
  const size_t rows = starts.back();
  const auto qkv = random_normal(rows * 3 * H, 5, 2.0f);
  std::vector<float> want(rows * H);
  ref::encoder_attention(qkv.data(), starts, nh, d, want.data());
  for (Isa level : levels()) {
    set_isa_cap(level);
    std::vector<float> got(rows * H, -7.0f);
    fast::encoder_attention(qkv.data(), starts, nh, d, got.data());
    expect_close(got, want, 1e-5f, std::string("encoder attention ") + isa_name(level));
    // The third sequence alone.
    std::vector<float> alone(lens[2] * H);
    fast::encoder_attention(qkv.data() + starts[2] * 3 * H, {0, lens[2]}, nh, d, alone.data());
    for (size_t i = 0; i < alone.size(); ++i)
      ASSERT_EQ(alone[i], got[starts[2] * H + i]) << "a sequence's attention depends on its batch mates";
  }
  // One token attends to itself only: its output is its value.
  for (size_t i = 0; i < H; ++i) ASSERT_NEAR(want[i], qkv[2 * H + i], 1e-6f);
}

TEST(CpuOps, EncoderResidualLayerNormAndGeluMatchReference) {
  const size_t T = 9, H = 100;
  const auto x0 = random_normal(T * H, 1), y = random_normal(T * H, 2), bias = random_normal(H, 3),
             w = random_normal(H, 4), b = random_normal(H, 5);
  auto a = x0, c = x0;
  ref::residual_layer_norm(a.data(), y.data(), bias.data(), T, H, w.data(), b.data(), 1e-5f);
  fast::residual_layer_norm(c.data(), y.data(), bias.data(), T, H, w.data(), b.data(), 1e-5f);
  expect_close(c, a, 2e-6f, "residual_layer_norm");
  auto g1 = random_normal(10000, 6, 3.0f), g2 = g1;
  ref::gelu(g1.data(), g1.size());
  fast::gelu(g2.data(), g2.size());
  expect_close(g2, g1, 2e-7f, "gelu");
}

// Attention's products with strided operands (as heads in the KV cache) against double loops.
TEST(AttentionProducts, StridedOperandsMatchPlainLoops) {
  if (hardware_isa() < Isa::Avx512) GTEST_SKIP() << "no AVX-512 on this machine";
  for (auto dims : {std::tuple<size_t, size_t, size_t>{1, 1, 1}, {7, 13, 64}, {64, 700, 64}, {5, 128, 1100}, {33, 65, 17}}) {
    // Plain variables, not a structured binding: clang 14 cannot capture those in lambdas.
    const size_t M = std::get<0>(dims), N = std::get<1>(dims), K = std::get<2>(dims);
    const size_t lda = K + 3, ldb = K + 5, ldc = N + 2;
    const auto a = random_normal(M * lda, 21), b = random_normal(N * ldb, 22);
    // Every c[m, n] against `want(m, n)` in double; the columns past N untouched.
    std::vector<float> c(M * ldc);
    const auto check = [&](const char* what, auto&& want) {
      for (size_t m = 0; m < M; ++m)
        for (size_t n = 0; n < ldc; ++n) {
          if (n >= N) {
            ASSERT_EQ(c[m * ldc + n], -7.0f) << what << ": wrote past the row";
            continue;
          }
          ASSERT_NEAR(c[m * ldc + n], want(m, n), 1e-5 * (1 + std::sqrt(double(K)))) << what << " " << M << "x" << N << "x" << K;
        }
    };
    std::fill(c.begin(), c.end(), -7.0f);
    kernels::gemm_nt_avx512(a.data(), lda, M, b.data(), ldb, N, K, 0.125f, c.data(), ldc);
    check("nt", [&](size_t m, size_t n) {
      double s = 0;
      for (size_t k = 0; k < K; ++k) s += double(a[m * lda + k]) * double(b[n * ldb + k]);
      return 0.125 * s;
    });
    // a[M, K] · b2[K, N] (K rows of N columns, ldb2 apart).
    const size_t ldb2 = N + 9;
    const auto b2 = random_normal(K * ldb2, 23);
    std::fill(c.begin(), c.end(), -7.0f);
    kernels::gemm_nn_avx512(a.data(), lda, M, b2.data(), ldb2, K, N, c.data(), ldc);
    check("nn", [&](size_t m, size_t n) {
      double s = 0;
      for (size_t k = 0; k < K; ++k) s += double(a[m * lda + k]) * double(b2[k * ldb2 + n]);
      return s;
    });
  }
}

TEST(CpuFeatures, CapNeverExceedsTheHardware) {
  set_isa_cap(Isa::Avx512Vnni);
  EXPECT_LE(isa(), hardware_isa());
  set_isa_cap(Isa::Portable);
  EXPECT_EQ(isa(), Isa::Portable);
  set_isa_cap(Isa::Avx512Vnni);
  EXPECT_FALSE(describe_isa().empty());
}

}  // namespace
}  // namespace pivotmt::cpu
