#include "train/train_ops.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace pivotmt::train {

void gemm(Kernels k, bool trans_a, bool trans_b, size_t M, size_t N, size_t K, float alpha, const float* A,
          size_t lda, const float* B, size_t ldb, float beta, float* C, size_t ldc) {
  if (M == 0 || N == 0) return;
  if (k == Kernels::Fast) {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, int(M), int(N),
                int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
    return;
  }
  for (size_t i = 0; i < M; ++i)
    for (size_t j = 0; j < N; ++j) {
      double s = 0;
      for (size_t p = 0; p < K; ++p)
        s += double(trans_a ? A[p * lda + i] : A[i * lda + p]) * double(trans_b ? B[j * ldb + p] : B[p * ldb + j]);
      float& c = C[i * ldc + j];
      c = float(alpha * s) + (beta == 0 ? 0.0f : beta * c);
    }
}

void rmsnorm_forward(const float* x, const float* w, size_t T, size_t H, float eps, float* y, float* rinv) {
  for (size_t t = 0; t < T; ++t) {
    const float* xr = x + t * H;
    double ss = 0;
    for (size_t i = 0; i < H; ++i) ss += double(xr[i]) * xr[i];
    const float r = 1.0f / std::sqrt(float(ss / double(H)) + eps);
    rinv[t] = r;
    for (size_t i = 0; i < H; ++i) y[t * H + i] = w[i] * (xr[i] * r);
  }
}

// y_i = w_i x_i r with r = (mean(x²) + eps)^(-1/2):
// dx_j = r (w_j dy_j) - x_j r³ / H * Σ_i w_i dy_i x_i.
void rmsnorm_backward(const float* x, const float* w, const float* rinv, const float* dy, size_t T, size_t H, float* dx) {
  for (size_t t = 0; t < T; ++t) {
    const float *xr = x + t * H, *g = dy + t * H;
    const double r = rinv[t];
    double dot = 0;
    for (size_t i = 0; i < H; ++i) dot += double(w[i]) * g[i] * xr[i];
    const double c = r * r * r * dot / double(H);
    for (size_t i = 0; i < H; ++i) dx[t * H + i] += float(r * double(w[i]) * g[i] - double(xr[i]) * c);
  }
}

RopeTables rope_tables(const std::vector<float>& inv_freq, size_t T, size_t first_position) {
  RopeTables r;
  r.half = inv_freq.size();
  r.cos.resize(T * r.half);
  r.sin.resize(T * r.half);
  for (size_t t = 0; t < T; ++t)
    for (size_t i = 0; i < r.half; ++i) {
      const float f = float(first_position + t) * inv_freq[i];
      r.cos[t * r.half + i] = float(std::cos(double(f)));
      r.sin[t * r.half + i] = float(std::sin(double(f)));
    }
  return r;
}

void rope_apply(float* x, size_t T, size_t stride, size_t heads, size_t d, const RopeTables& t, bool inverse) {
  const size_t half = d / 2;
  for (size_t r = 0; r < T; ++r)
    for (size_t h = 0; h < heads; ++h) {
      float* v = x + r * stride + h * d;
      for (size_t i = 0; i < half; ++i) {
        const float c = t.cos[r * half + i], s = inverse ? -t.sin[r * half + i] : t.sin[r * half + i];
        const float a = v[i], b = v[i + half];
        v[i] = a * c - b * s;  // x1 cos - x2 sin
        v[i + half] = b * c + a * s;  // x2 cos + x1 sin
      }
    }
}

namespace {

bool visible(size_t i, size_t j, size_t window) { return j <= i && (window == 0 || i - j < window); }

// Per head: the scaled, masked scores S = scale Q Kᵀ [T, T] turned into probabilities
// exp(S - lse) (lse given, or computed and stored).
void head_probabilities(Kernels k, const float* q, const float* kk, size_t T, size_t q_ld, size_t k_ld, size_t d,
                        size_t window, float scale, float* P, float* lse, bool have_lse) {
  gemm(k, false, true, T, T, d, scale, q, q_ld, kk, k_ld, 0.0f, P, T);
  for (size_t i = 0; i < T; ++i) {
    float* row = P + i * T;
    if (!have_lse) {
      float m = -std::numeric_limits<float>::infinity();
      for (size_t j = 0; j <= i; ++j)
        if (visible(i, j, window)) m = std::max(m, row[j]);
      double s = 0;
      for (size_t j = 0; j <= i; ++j)
        if (visible(i, j, window)) s += std::exp(double(row[j] - m));
      lse[i] = m + float(std::log(s));
    }
    for (size_t j = 0; j < T; ++j) row[j] = visible(i, j, window) ? std::exp(row[j] - lse[i]) : 0.0f;
  }
}

}  // namespace

void attention_forward(Kernels k, const float* q, const float* kk, const float* v, size_t T, size_t nh, size_t nkv,
                       size_t d, size_t window, float* out, float* lse) {
  const size_t group = nh / nkv, q_ld = nh * d, kv_ld = nkv * d;
  const float scale = 1.0f / std::sqrt(float(d));
  std::vector<float> P(T * T);
  for (size_t h = 0; h < nh; ++h) {
    const size_t g = h / group;
    head_probabilities(k, q + h * d, kk + g * d, T, q_ld, kv_ld, d, window, scale, P.data(), lse + h * T, false);
    gemm(k, false, false, T, d, T, 1.0f, P.data(), T, v + g * d, kv_ld, 0.0f, out + h * d, q_ld);
  }
}

void attention_backward(Kernels k, const float* q, const float* kk, const float* v, const float* out,
                        const float* dout, const float* lse, size_t T, size_t nh, size_t nkv, size_t d, size_t window,
                        float* dq, float* dk, float* dv) {
  const size_t group = nh / nkv, q_ld = nh * d, kv_ld = nkv * d;
  const float scale = 1.0f / std::sqrt(float(d));
  std::vector<float> P(T * T), dP(T * T);
  std::vector<float> lse_h(T);
  for (size_t h = 0; h < nh; ++h) {
    const size_t g = h / group;
    std::copy(lse + h * T, lse + (h + 1) * T, lse_h.begin());
    head_probabilities(k, q + h * d, kk + g * d, T, q_ld, kv_ld, d, window, scale, P.data(), lse_h.data(), true);
    gemm(k, true, false, T, d, T, 1.0f, P.data(), T, dout + h * d, q_ld, 1.0f, dv + g * d, kv_ld);   // dV += Pᵀ dO
    gemm(k, false, true, T, T, d, 1.0f, dout + h * d, q_ld, v + g * d, kv_ld, 0.0f, dP.data(), T);  // dP = dO Vᵀ
    for (size_t i = 0; i < T; ++i) {  // dS = P ⊙ (dP - rowsum(dO ⊙ O))
      double D = 0;
      for (size_t c = 0; c < d; ++c) D += double(dout[i * q_ld + h * d + c]) * out[i * q_ld + h * d + c];
      for (size_t j = 0; j < T; ++j) dP[i * T + j] = P[i * T + j] * (dP[i * T + j] - float(D));
    }
    gemm(k, false, false, T, d, T, scale, dP.data(), T, kk + g * d, kv_ld, 1.0f, dq + h * d, q_ld);  // dQ += s dS K
    gemm(k, true, false, T, d, T, scale, dP.data(), T, q + h * d, q_ld, 1.0f, dk + g * d, kv_ld);    // dK += s dSᵀ Q
  }
}

namespace {
float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
}  // namespace

void silu_mul_forward(const float* g, const float* u, size_t n, float* out) {
  for (size_t i = 0; i < n; ++i) out[i] = g[i] * sigmoid(g[i]) * u[i];
}

void silu_mul_backward(const float* g, const float* u, const float* dout, size_t n, float* dg, float* du) {
  for (size_t i = 0; i < n; ++i) {
    const float s = sigmoid(g[i]);
    du[i] += dout[i] * g[i] * s;
    dg[i] += dout[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
  }
}

double cross_entropy(float* logits, const int32_t* labels, size_t rows, size_t V, float scale) {
  double total = 0;
  for (size_t r = 0; r < rows; ++r) {
    float* row = logits + r * V;
    if (labels[r] < 0) {
      std::fill(row, row + V, 0.0f);
      continue;
    }
    const float m = *std::max_element(row, row + V);
    double s = 0;
    for (size_t j = 0; j < V; ++j) s += std::exp(double(row[j] - m));
    const double lse = double(m) + std::log(s);
    total += lse - double(row[size_t(labels[r])]);
    for (size_t j = 0; j < V; ++j) row[j] = float(std::exp(double(row[j]) - lse)) * scale;
    row[size_t(labels[r])] -= scale;
  }
  return total;
}

}  // namespace pivotmt::train
