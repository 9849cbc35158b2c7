// The training ops' backward against central finite differences of their forward (in
// double-checked F32, small shapes), and the fast kernels against the reference loops:
// RMSNorm, RoPE, causal attention with GQA and a sliding window, SiLU·mul, cross-entropy.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>

#include "train/train_ops.h"

namespace pivotmt {
namespace {

using train::Kernels;

std::vector<float> random_vector(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = u(g);
  return v;
}

// Checks dL/dx from `backward` against (L(x + h) - L(x - h)) / 2h for L = Σ w ⊙ f(x), w fixed.
void check_gradient(std::vector<float> x, const std::function<std::vector<float>(const std::vector<float>&)>& f,
                    const std::function<std::vector<float>(const std::vector<float>&, const std::vector<float>&)>& backward,
                    const std::string& what, double tol = 2e-3) {
  const auto y = f(x);
  const auto w = random_vector(y.size(), 77);
  const auto analytic = backward(x, w);
  ASSERT_EQ(analytic.size(), x.size());
  auto L = [&](const std::vector<float>& xs) {
    const auto ys = f(xs);
    double s = 0;
    for (size_t i = 0; i < ys.size(); ++i) s += double(w[i]) * ys[i];
    return s;
  };
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const float h = 1e-2f * std::max(1.0f, std::fabs(x[i]));
    auto xp = x, xm = x;
    xp[i] += h;
    xm[i] -= h;
    const double numeric = (L(xp) - L(xm)) / (double(xp[i]) - double(xm[i]));
    worst = std::max(worst, std::fabs(numeric - analytic[i]) / std::max(1.0, std::fabs(numeric)));
  }
  EXPECT_LT(worst, tol) << what;
}

TEST(TrainOps, RmsnormBackwardIsTheGradient) {
  const size_t T = 3, H = 16;
  const auto w = random_vector(H, 1);
  check_gradient(
      random_vector(T * H, 2),
      [&](const std::vector<float>& x) {
        std::vector<float> y(T * H), r(T);
        train::rmsnorm_forward(x.data(), w.data(), T, H, 1e-5f, y.data(), r.data());
        return y;
      },
      [&](const std::vector<float>& x, const std::vector<float>& dy) {
        std::vector<float> y(T * H), r(T), dx(T * H, 0.0f);
        train::rmsnorm_forward(x.data(), w.data(), T, H, 1e-5f, y.data(), r.data());
        train::rmsnorm_backward(x.data(), w.data(), r.data(), dy.data(), T, H, dx.data());
        return dx;
      },
      "rmsnorm");
}

TEST(TrainOps, RopeInverseIsTheTransposedRotation) {
  const size_t T = 5, heads = 2, d = 8;
  const std::vector<float> inv_freq = {1.0f, 0.1f, 0.01f, 0.001f};
  const auto tables = train::rope_tables(inv_freq, T, 3);
  check_gradient(
      random_vector(T * heads * d, 3),
      [&](std::vector<float> x) {
        train::rope_apply(x.data(), T, heads * d, heads, d, tables, false);
        return x;
      },
      [&](const std::vector<float>&, std::vector<float> dy) {
        train::rope_apply(dy.data(), T, heads * d, heads, d, tables, true);
        return dy;
      },
      "rope");
  // Forward then inverse is the identity.
  auto x = random_vector(T * heads * d, 4);
  auto y = x;
  train::rope_apply(y.data(), T, heads * d, heads, d, tables, false);
  train::rope_apply(y.data(), T, heads * d, heads, d, tables, true);
  for (size_t i = 0; i < x.size(); ++i) EXPECT_NEAR(y[i], x[i], 1e-6);
}

struct AttnCase {
  size_t T, nh, nkv, d, window;
};

class AttentionGrad : public ::testing::TestWithParam<std::tuple<AttnCase, Kernels>> {};

TEST_P(AttentionGrad, QKVGradientsMatchFiniteDifferences) {
  const AttnCase c = std::get<0>(GetParam());
  const Kernels k = std::get<1>(GetParam());
  const size_t qn = c.T * c.nh * c.d, kn = c.T * c.nkv * c.d;
  // x = q | k | v concatenated.
  auto split = [&](const std::vector<float>& x) {
    return std::array<std::vector<float>, 3>{std::vector<float>(x.begin(), x.begin() + long(qn)),
                                             std::vector<float>(x.begin() + long(qn), x.begin() + long(qn + kn)),
                                             std::vector<float>(x.begin() + long(qn + kn), x.end())};
  };
  auto forward = [&](const std::vector<float>& x) {
    const auto p = split(x);
    std::vector<float> out(qn), lse(c.nh * c.T);
    train::attention_forward(k, p[0].data(), p[1].data(), p[2].data(), c.T, c.nh, c.nkv, c.d, c.window, out.data(), lse.data());
    return out;
  };
  check_gradient(
      random_vector(qn + 2 * kn, 5, 1.5f), forward,
      [&](const std::vector<float>& x, const std::vector<float>& dout) {
        const auto p = split(x);
        std::vector<float> out(qn), lse(c.nh * c.T), dq(qn, 0.0f), dk(kn, 0.0f), dv(kn, 0.0f);
        train::attention_forward(k, p[0].data(), p[1].data(), p[2].data(), c.T, c.nh, c.nkv, c.d, c.window, out.data(), lse.data());
        train::attention_backward(k, p[0].data(), p[1].data(), p[2].data(), out.data(), dout.data(), lse.data(), c.T, c.nh,
                                  c.nkv, c.d, c.window, dq.data(), dk.data(), dv.data());
        std::vector<float> g = dq;
        g.insert(g.end(), dk.begin(), dk.end());
        g.insert(g.end(), dv.begin(), dv.end());
        return g;
      },
      "attention");
}

INSTANTIATE_TEST_SUITE_P(Shapes, AttentionGrad,
                         ::testing::Combine(::testing::Values(AttnCase{6, 2, 2, 4, 0}, AttnCase{7, 4, 2, 4, 0},
                                                              AttnCase{9, 4, 1, 4, 3}),
                                            ::testing::Values(Kernels::Reference, Kernels::Fast)));

TEST(TrainOps, AttentionWindowHidesOldKeysAndFastMatchesReference) {
  const size_t T = 12, nh = 4, nkv = 2, d = 8, window = 4;
  const auto q = random_vector(T * nh * d, 6), k = random_vector(T * nkv * d, 7), v = random_vector(T * nkv * d, 8);
  std::vector<float> a(T * nh * d), b(T * nh * d), la(nh * T), lb(nh * T);
  train::attention_forward(Kernels::Reference, q.data(), k.data(), v.data(), T, nh, nkv, d, window, a.data(), la.data());
  train::attention_forward(Kernels::Fast, q.data(), k.data(), v.data(), T, nh, nkv, d, window, b.data(), lb.data());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5);
  // Changing a key older than the window changes nothing for the last query.
  auto k2 = k;
  for (size_t c = 0; c < nkv * d; ++c) k2[c] += 5.0f;  // position 0
  std::vector<float> a2(T * nh * d), l2(nh * T);
  train::attention_forward(Kernels::Reference, q.data(), k2.data(), v.data(), T, nh, nkv, d, window, a2.data(), l2.data());
  for (size_t c = 0; c < nh * d; ++c) EXPECT_EQ(a2[(T - 1) * nh * d + c], a[(T - 1) * nh * d + c]);
}

TEST(TrainOps, SiluMulBackwardIsTheGradient) {
  const size_t n = 20;
  check_gradient(
      random_vector(2 * n, 9, 3.0f),
      [&](const std::vector<float>& x) {
        std::vector<float> y(n);
        train::silu_mul_forward(x.data(), x.data() + n, n, y.data());
        return y;
      },
      [&](const std::vector<float>& x, const std::vector<float>& dy) {
        std::vector<float> g(2 * n, 0.0f);
        train::silu_mul_backward(x.data(), x.data() + n, dy.data(), n, g.data(), g.data() + n);
        return g;
      },
      "silu_mul");
}

TEST(TrainOps, CrossEntropyGradientAndIgnoredRows) {
  const size_t rows = 4, V = 11;
  const std::vector<int32_t> labels = {3, -100, 10, 0};
  auto loss_of = [&](std::vector<float> x) { return train::cross_entropy(x.data(), labels.data(), rows, V, 1.0f); };
  auto x = random_vector(rows * V, 10, 4.0f);
  auto g = x;
  const double loss = train::cross_entropy(g.data(), labels.data(), rows, V, 1.0f);
  EXPECT_NEAR(loss, loss_of(x), 0);
  for (size_t j = 0; j < V; ++j) EXPECT_EQ(g[1 * V + j], 0.0f);  // ignored row
  for (size_t i = 0; i < x.size(); ++i) {
    auto xp = x, xm = x;
    xp[i] += 1e-2f;
    xm[i] -= 1e-2f;
    EXPECT_NEAR((loss_of(xp) - loss_of(xm)) / 2e-2, g[i], 2e-3) << i;
  }
  // The loss of row 0 by hand: logsumexp - logit[label].
  double s = 0, m = -1e30;
  for (size_t j = 0; j < V; ++j) m = std::max(m, double(x[j]));
  for (size_t j = 0; j < V; ++j) s += std::exp(x[j] - m);
  const std::vector<int32_t> one = {3};
  auto row = std::vector<float>(x.begin(), x.begin() + long(V));
  EXPECT_NEAR(train::cross_entropy(row.data(), one.data(), 1, V, 1.0f), m + std::log(s) - x[3], 1e-6);
}

TEST(TrainOps, GemmFastMatchesReferenceForEveryTransposition) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      const size_t M = 5, N = 7, K = 9;
      const auto A = random_vector(M * K, 11), B = random_vector(K * N, 12);
      auto c1 = random_vector(M * N, 13), c2 = c1;
      train::gemm(Kernels::Reference, ta, tb, M, N, K, 0.5f, A.data(), ta ? M : K, B.data(), tb ? K : N, 1.0f, c1.data(), N);
      train::gemm(Kernels::Fast, ta, tb, M, N, K, 0.5f, A.data(), ta ? M : K, B.data(), tb ? K : N, 1.0f, c2.data(), N);
      for (size_t i = 0; i < c1.size(); ++i) EXPECT_NEAR(c1[i], c2[i], 1e-5) << ta << tb;
    }
}

}  // namespace
}  // namespace pivotmt
