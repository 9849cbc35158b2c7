// Fast CPU kernels against the reference ops on odd sizes and random data (never zeros).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <thread>
#include <random>

#include "backends/cpu/ops.h"
#include "test_util.h"
#include "backends/cpu/thread_pool.h"

namespace pivotmt::cpu {
namespace {

using test::random_normal;

void expect_close(const std::vector<float>& a, const std::vector<float>& b, float tol, const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], tol * std::max(1.0f, std::fabs(b[i]))) << what << " at " << i;
}

// The linear on every path (F32/F16/I8 weights, every ISA level): test_cpu_kernels.cpp.

TEST(CpuOps, NormRopeSiluMatchReference) {
  const size_t T = 7, H = 769;
  const auto x = random_normal(T * H, 1), w = random_normal(H, 2);
  std::vector<float> a(T * H), b(T * H);
  ref::rmsnorm(x.data(), w.data(), T, H, 1e-5f, a.data());
  fast::rmsnorm(x.data(), w.data(), T, H, 1e-5f, b.data());
  expect_close(b, a, 1e-5f, "rmsnorm");
  Rope r;
  for (size_t i = 0; i < 32; ++i) r.inv_freq.push_back(std::pow(10000.0f, -float(2 * i) / 64.0f));
  // Rows of 4 heads, the first 3 rotated (the fourth stands for the V part of a QKV row).
  auto q1 = random_normal(T * 4 * 64, 3), q2 = q1;
  const auto before = q1;
  const std::vector<int64_t> pos = {0, 1, 2, 100, 1000, 4095, 7};
  ref::rope(q1.data(), T, 4 * 64, 3, 64, pos.data(), r);
  fast::rope(q2.data(), T, 4 * 64, 3, 64, pos.data(), r);
  expect_close(q2, q1, 1e-5f, "rope");
  for (size_t t = 0; t < T; ++t)
    for (size_t i = 3 * 64; i < 4 * 64; ++i) ASSERT_EQ(q2[t * 256 + i], before[t * 256 + i]) << "rope wrote past its heads";
  for (size_t i = 0; i < 64; ++i) ASSERT_EQ(q1[i], before[i]) << "position 0 is the identity";
  const size_t F = 333;
  const auto gate_up = random_normal(T * 2 * F, 4);
  std::vector<float> g1(T * F), g2(T * F);
  ref::silu_mul(gate_up.data(), T, F, g1.data());
  fast::silu_mul(gate_up.data(), T, F, g2.data());
  expect_close(g2, g1, 1e-6f, "silu_mul");
  const float g = gate_up[2 * F + 5], u = gate_up[2 * F + F + 5];  // row 1, column 5
  EXPECT_NEAR(g1[F + 5], g / (1 + std::exp(-g)) * u, 1e-6f);
}

TEST(CpuOps, AttentionGqaWindowAndPrefillPaths) {
  for (size_t T : {size_t(1), size_t(5), size_t(40)})  // 40: the SGEMM prefill path
    for (size_t window : {size_t(0), size_t(3), size_t(17)}) {
      const size_t L = T + 11, nh = 6, nkv = 2, d = 16;
      const auto q = random_normal(T * nh * d, 7), k = random_normal(L * nkv * d, 8), v = random_normal(L * nkv * d, 9);
      std::vector<float> a(T * nh * d), b(T * nh * d);
      ref::attention(q.data(), nh * d, k.data(), v.data(), T, L, nh, nkv, d, window, a.data());
      fast::attention(q.data(), nh * d, k.data(), v.data(), T, L, nh, nkv, d, window, b.data());
      expect_close(b, a, 1e-5f, "attention T=" + std::to_string(T) + " window=" + std::to_string(window));
      // The same queries as rows of a fused QKV output (stride (nh + 2 nkv) d).
      const size_t stride = (nh + 2 * nkv) * d;
      std::vector<float> qkv(T * stride, 1e30f), c(T * nh * d);
      for (size_t t = 0; t < T; ++t) std::copy(&q[t * nh * d], &q[(t + 1) * nh * d], &qkv[t * stride]);
      fast::attention(qkv.data(), stride, k.data(), v.data(), T, L, nh, nkv, d, window, c.data());
      expect_close(c, b, 1e-6f, "strided attention T=" + std::to_string(T));
    }
}

// A window wider than the sequence changes nothing; a window of 1 attends to itself only.
TEST(CpuOps, WindowSemantics) {
  const size_t T = 6, L = 6, nh = 2, nkv = 1, d = 8;
  const auto q = random_normal(T * nh * d, 1), k = random_normal(L * nkv * d, 2), v = random_normal(L * nkv * d, 3);
  std::vector<float> full(T * nh * d), wide(T * nh * d), one(T * nh * d);
  ref::attention(q.data(), nh * d, k.data(), v.data(), T, L, nh, nkv, d, 0, full.data());
  ref::attention(q.data(), nh * d, k.data(), v.data(), T, L, nh, nkv, d, 100, wide.data());
  ref::attention(q.data(), nh * d, k.data(), v.data(), T, L, nh, nkv, d, 1, one.data());
  EXPECT_EQ(full, wide);
  for (size_t t = 0; t < T; ++t)
    for (size_t h = 0; h < nh; ++h)
      for (size_t i = 0; i < d; ++i) EXPECT_NEAR(one[(t * nh + h) * d + i], v[t * d + i], 1e-6);
}

}  // namespace
}  // namespace pivotmt::cpu

namespace pivotmt::cpu {
namespace {

TEST(CpuOps, Int8WeightOnly) {
  const auto w = random_normal(769 * 65, 11, 0.1f);
  const Matrix q = quantize_int8(w.data(), 769, 65);
  std::vector<float> row(65);
  for (size_t o = 0; o < 769; ++o) {  // each weight within half a quantisation step
    q.row_to_f32(o, row.data());
    for (size_t i = 0; i < 65; ++i) ASSERT_LE(std::fabs(row[i] - w[o * 65 + i]), q.scale[o] * 0.5f + 1e-7f);
  }
  // Input widths that exercise every loop of the fast kernels: 32-wide steps, 8-wide steps, scalar tail.
  for (size_t in : {size_t(65), size_t(109)}) {
    const auto wi = random_normal(769 * in, 12, 0.1f);
    const Matrix qi = quantize_int8(wi.data(), 769, in);
    for (size_t T : {size_t(1), size_t(5), size_t(20)}) {
      const auto x = random_normal(T * in, unsigned(T));
      std::vector<float> want(T * 769), got(T * 769);
      ref::linear(x.data(), T, qi, want.data());
      fast::linear(x.data(), T, qi, got.data());
      expect_close(got, want, 1e-4f, "int8 linear in=" + std::to_string(in) + " T=" + std::to_string(T));
    }
  }
  EXPECT_EQ(q.bytes(), 769u * 65u + 769u * 4u);
}

// NF4 weights: the fast kernels (the AVX2 4-bit GEMV for few rows, converted blocks and
// SGEMM for many; widths that are and are not multiples of 8) against the reference loops.
TEST(CpuOps, Nf4LinearFastMatchesReference) {
  for (size_t in : {size_t(64), size_t(200), size_t(65)}) {
    const auto wi = random_normal(301 * in, 13, 0.1f);
    Matrix m;
    m.dtype = DType::NF4;
    m.out = 301;
    m.in = in;
    m.nf4 = nf4::quantize(wi, true);
    for (size_t T : {size_t(1), size_t(3), size_t(9), size_t(40)}) {
      const auto x = random_normal(T * in, unsigned(T + 100));
      std::vector<float> want(T * 301), got(T * 301);
      ref::linear(x.data(), T, m, want.data());
      fast::linear(x.data(), T, m, got.data());
      expect_close(got, want, 1e-4f, "nf4 linear in=" + std::to_string(in) + " T=" + std::to_string(T));
    }
  }
}

}  // namespace
}  // namespace pivotmt::cpu

namespace pivotmt::cpu {
namespace {
// The pool under a stream of jobs of every size, back to back (the decode pattern): each
// index runs exactly once per job, and no job sees another's body.
TEST(ThreadPool, EveryIndexOnceAcrossManyJobs) {
  std::vector<std::atomic<int>> hits(300);
  for (int job = 0; job < 20000; ++job) {
    if (job % 1000 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(3));  // workers fall asleep
    const size_t n = size_t(job % 300);
    parallel_for(n, [&](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i) hits[i].fetch_add(1, std::memory_order_relaxed);
    });
    for (size_t i = 0; i < hits.size(); ++i) {
      ASSERT_EQ(hits[i].load(), i < n ? 1 : 0) << "job " << job << " index " << i;
      hits[i].store(0);
    }
  }
}
}  // namespace
}  // namespace pivotmt::cpu
