#include "train/train_ops.h"

#include <cblas.h>

#include "backends/cpu/ops.h"
#include "backends/cpu/thread_pool.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace pivotmt::train {

namespace {

// One SGEMM on the calling thread (OpenBLAS runs single-threaded: the CPU kernels' own
// pool splits the work, so no OpenBLAS worker spins while our threads do elementwise work).
void sgemm(bool trans_a, bool trans_b, size_t M, size_t N, size_t K, float alpha, const float* A, size_t lda,
           const float* B, size_t ldb, float beta, float* C, size_t ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, int(M), int(N),
              int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

void use_own_threads() {
  static const bool once = [] {
    cpu::blas_use_caller_thread_only();
    return true;
  }();
  (void)once;
}

// The same GEMM on one thread: inside a parallel region (the pool does not nest).
void gemm_serial(Kernels k, bool trans_a, bool trans_b, size_t M, size_t N, size_t K, float alpha, const float* A,
                 size_t lda, const float* B, size_t ldb, float beta, float* C, size_t ldc);

}  // namespace

void gemm(Kernels k, bool trans_a, bool trans_b, size_t M, size_t N, size_t K, float alpha, const float* A,
          size_t lda, const float* B, size_t ldb, float beta, float* C, size_t ldc) {
  if (M == 0 || N == 0) return;
  if (k == Kernels::Fast) {
    use_own_threads();
    if (2.0 * double(M) * double(N) * double(K) < 4e6 || cpu::num_threads() == 1)
      return sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    // Split the larger output dimension in blocks of 64 across the pool's threads.
    constexpr size_t kUnit = 64;
    if (N >= M) {
      cpu::parallel_for((N + kUnit - 1) / kUnit, [&](size_t u0, size_t u1) {
        const size_t n0 = u0 * kUnit, n1 = std::min(N, u1 * kUnit);
        sgemm(trans_a, trans_b, M, n1 - n0, K, alpha, A, lda, trans_b ? B + n0 * ldb : B + n0, ldb, beta, C + n0, ldc);
      });
    } else {
      cpu::parallel_for((M + kUnit - 1) / kUnit, [&](size_t u0, size_t u1) {
        const size_t m0 = u0 * kUnit, m1 = std::min(M, u1 * kUnit);
        sgemm(trans_a, trans_b, m1 - m0, N, K, alpha, trans_a ? A + m0 : A + m0 * lda, lda, B, ldb, beta, C + m0 * ldc, ldc);
      });
    }
    return;
  }
  gemm_serial(k, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

namespace {
void gemm_serial(Kernels k, bool trans_a, bool trans_b, size_t M, size_t N, size_t K, float alpha, const float* A,
                 size_t lda, const float* B, size_t ldb, float beta, float* C, size_t ldc) {
  if (k == Kernels::Fast) return sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  for (size_t i = 0; i < M; ++i)
    for (size_t j = 0; j < N; ++j) {
      double s = 0;
      for (size_t p = 0; p < K; ++p)
        s += double(trans_a ? A[p * lda + i] : A[i * lda + p]) * double(trans_b ? B[j * ldb + p] : B[p * ldb + j]);
      float& c = C[i * ldc + j];
      c = float(alpha * s) + (beta == 0 ? 0.0f : beta * c);
    }
}
}  // namespace

void rmsnorm_forward(const float* x, const float* w, size_t T, size_t H, float eps, float* y, float* rinv) {
  cpu::parallel_for(T, [&](size_t t0, size_t t1) {
  for (size_t t = t0; t < t1; ++t) {
    const float* xr = x + t * H;
    double ss = 0;
    for (size_t i = 0; i < H; ++i) ss += double(xr[i]) * xr[i];
    const float r = 1.0f / std::sqrt(float(ss / double(H)) + eps);
    rinv[t] = r;
    for (size_t i = 0; i < H; ++i) y[t * H + i] = w[i] * (xr[i] * r);
  }
  });
}

// y_i = w_i x_i r with r = (mean(x²) + eps)^(-1/2):
// dx_j = r (w_j dy_j) - x_j r³ / H * Σ_i w_i dy_i x_i.
void rmsnorm_backward(const float* x, const float* w, const float* rinv, const float* dy, size_t T, size_t H, float* dx) {
  cpu::parallel_for(T, [&](size_t t0, size_t t1) {
  for (size_t t = t0; t < t1; ++t) {
    const float *xr = x + t * H, *g = dy + t * H;
    const double r = rinv[t];
    double dot = 0;
    for (size_t i = 0; i < H; ++i) dot += double(w[i]) * g[i] * xr[i];
    const double c = r * r * r * dot / double(H);
    for (size_t i = 0; i < H; ++i) dx[t * H + i] += float(r * double(w[i]) * g[i] - double(xr[i]) * c);
  }
  });
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
  cpu::parallel_for(T, [&](size_t r0, size_t r1) {
  for (size_t r = r0; r < r1; ++r)
    for (size_t h = 0; h < heads; ++h) {
      float* v = x + r * stride + h * d;
      for (size_t i = 0; i < half; ++i) {
        const float c = t.cos[r * half + i], s = inverse ? -t.sin[r * half + i] : t.sin[r * half + i];
        const float a = v[i], b = v[i + half];
        v[i] = a * c - b * s;  // x1 cos - x2 sin
        v[i + half] = b * c + a * s;  // x2 cos + x1 sin
      }
    }
  });
}

namespace {

bool visible(size_t i, size_t j, size_t window) { return j <= i && (window == 0 || i - j < window); }

// Per head: the scaled, masked scores S = scale Q Kᵀ [T, T] turned into probabilities
// exp(S - lse) (lse given, or computed and stored).
void head_probabilities(Kernels k, const float* q, const float* kk, size_t T, size_t q_ld, size_t k_ld, size_t d,
                        size_t window, float scale, float* P, float* lse, bool have_lse) {
  gemm_serial(k, false, true, T, T, d, scale, q, q_ld, kk, k_ld, 0.0f, P, T);
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
  // Heads in parallel (each writes its own output columns), one probability matrix each.
  cpu::parallel_for(nh, [&](size_t h0, size_t h1) {
    std::vector<float> P(T * T);
    for (size_t h = h0; h < h1; ++h) {
      const size_t g = h / group;
      head_probabilities(k, q + h * d, kk + g * d, T, q_ld, kv_ld, d, window, scale, P.data(), lse + h * T, false);
      gemm_serial(k, false, false, T, d, T, 1.0f, P.data(), T, v + g * d, kv_ld, 0.0f, out + h * d, q_ld);
    }
  });
}

void attention_backward(Kernels k, const float* q, const float* kk, const float* v, const float* out,
                        const float* dout, const float* lse, size_t T, size_t nh, size_t nkv, size_t d, size_t window,
                        float* dq, float* dk, float* dv) {
  const size_t group = nh / nkv, q_ld = nh * d, kv_ld = nkv * d;
  const float scale = 1.0f / std::sqrt(float(d));
  // Key-value groups in parallel: the heads of a group add into the same dK, dV columns.
  cpu::parallel_for(nkv, [&](size_t g0, size_t g1) {
  std::vector<float> P(T * T), dP(T * T);
  std::vector<float> lse_h(T);
  for (size_t h = g0 * group; h < g1 * group; ++h) {
    const size_t g = h / group;
    std::copy(lse + h * T, lse + (h + 1) * T, lse_h.begin());
    head_probabilities(k, q + h * d, kk + g * d, T, q_ld, kv_ld, d, window, scale, P.data(), lse_h.data(), true);
    gemm_serial(k, true, false, T, d, T, 1.0f, P.data(), T, dout + h * d, q_ld, 1.0f, dv + g * d, kv_ld);   // dV += Pᵀ dO
    gemm_serial(k, false, true, T, T, d, 1.0f, dout + h * d, q_ld, v + g * d, kv_ld, 0.0f, dP.data(), T);  // dP = dO Vᵀ
    for (size_t i = 0; i < T; ++i) {  // dS = P ⊙ (dP - rowsum(dO ⊙ O))
      double D = 0;
      for (size_t c = 0; c < d; ++c) D += double(dout[i * q_ld + h * d + c]) * out[i * q_ld + h * d + c];
      for (size_t j = 0; j < T; ++j) dP[i * T + j] = P[i * T + j] * (dP[i * T + j] - float(D));
    }
    gemm_serial(k, false, false, T, d, T, scale, dP.data(), T, kk + g * d, kv_ld, 1.0f, dq + h * d, q_ld);  // dQ += s dS K
    gemm_serial(k, true, false, T, d, T, scale, dP.data(), T, q + h * d, q_ld, 1.0f, dk + g * d, kv_ld);    // dK += s dSᵀ Q
  }
  });
}

namespace {
float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
}  // namespace

void silu_mul_forward(const float* g, const float* u, size_t n, float* out) {
  cpu::parallel_for(n, [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; ++i) out[i] = g[i] * sigmoid(g[i]) * u[i];
  });
}

void silu_mul_backward(const float* g, const float* u, const float* dout, size_t n, float* dg, float* du) {
  cpu::parallel_for(n, [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; ++i) {
      const float s = sigmoid(g[i]);
      du[i] += dout[i] * g[i] * s;
      dg[i] += dout[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
    }
  });
}

double cross_entropy(float* logits, const int32_t* labels, size_t rows, size_t V, float scale) {
  // Rows in parallel; each row's loss kept apart and summed in row order, so the total
  // does not depend on the thread count.
  std::vector<double> row_loss(rows, 0.0);
  cpu::parallel_for(rows, [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r) {
      float* row = logits + r * V;
      if (labels[r] < 0) {
        std::fill(row, row + V, 0.0f);
        continue;
      }
      const float m = *std::max_element(row, row + V);
      const float label_logit = row[size_t(labels[r])];
      double s = 0;
      for (size_t j = 0; j < V; ++j) {  // F32 exponentials (kept: the softmax), summed in double
        row[j] = std::exp(row[j] - m);
        s += row[j];
      }
      row_loss[r] = double(m) + std::log(s) - double(label_logit);
      const float g = float(double(scale) / s);
      for (size_t j = 0; j < V; ++j) row[j] *= g;
      row[size_t(labels[r])] -= scale;
    }
  });
  double total = 0;
  for (double l : row_loss) total += l;
  return total;
}

}  // namespace pivotmt::train
