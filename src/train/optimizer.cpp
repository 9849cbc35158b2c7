#include "train/optimizer.h"

#include <cmath>

#include "core/error.h"

namespace pivotmt::train {

AdamWState adamw_init(const LoraAdapter& params) {
  AdamWState s;
  s.m = params;
  for (auto& [k, p] : s.m.weights) {
    std::fill(p.A.begin(), p.A.end(), 0.0f);
    std::fill(p.B.begin(), p.B.end(), 0.0f);
  }
  s.v = s.m;
  return s;
}

AdamWScalars adamw_scalars(int64_t t, double lr, const AdamWConfig& c) {
  const double correction1 = 1.0 - std::pow(c.beta1, double(t));
  const double correction2 = std::sqrt(1.0 - std::pow(c.beta2, double(t)));
  AdamWScalars s;
  s.beta1 = float(c.beta1);
  s.one_minus_beta1 = 1.0f - s.beta1;
  s.beta2 = float(c.beta2);
  s.one_minus_beta2 = 1.0f - s.beta2;
  s.step_size = float(-lr * correction2 / correction1);
  s.eps_scaled = float(c.eps * correction2);
  s.decay = c.weight_decay > 0 ? float(1.0 - lr * c.weight_decay) : 1.0f;
  return s;
}

void adamw_update(float* p, const float* g, float* m, float* v, size_t n, const AdamWScalars& s) {
  // The build never contracts these into FMAs (no -ffp-contract=fast target with FMA), so
  // each operation rounds on its own — what the CUDA kernel writes with __fmul_rn/__fadd_rn.
  for (size_t i = 0; i < n; ++i) {
    m[i] = m[i] * s.beta1 + s.one_minus_beta1 * g[i];
    v[i] = v[i] * s.beta2 + s.one_minus_beta2 * (g[i] * g[i]);
    p[i] = p[i] + s.step_size * (m[i] / (std::sqrt(v[i]) + s.eps_scaled));
    if (s.decay != 1.0f) p[i] = p[i] * s.decay;
  }
}

void adamw_step(LoraAdapter& params, const LoraAdapter& grads, AdamWState& st, double lr, const AdamWConfig& c) {
  ++st.step;
  const AdamWScalars s = adamw_scalars(st.step, lr, c);
  for (auto& [key, p] : params.weights) {
    const auto& g = grads.weights.at(key);
    auto& m = st.m.weights.at(key);
    auto& v = st.v.weights.at(key);
    adamw_update(p.A.data(), g.A.data(), m.A.data(), v.A.data(), p.A.size(), s);
    adamw_update(p.B.data(), g.B.data(), m.B.data(), v.B.data(), p.B.size(), s);
  }
}

double cosine_lr(double base, int64_t step, int64_t warmup, int64_t total) {
  if (step < warmup) return base * double(step) / double(std::max<int64_t>(1, warmup));
  const double progress = double(step - warmup) / double(std::max<int64_t>(1, total - warmup));
  return base * std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
}

double global_norm(const LoraAdapter& grads) {
  double s = 0;
  for (const auto& [k, p] : grads.weights) {
    for (float x : p.A) s += double(x) * x;
    for (float x : p.B) s += double(x) * x;
  }
  return std::sqrt(s);
}

float clip_coefficient(double norm, double max_norm) {
  if (max_norm <= 0) return 1.0f;
  return float(std::min(1.0, max_norm / (norm + 1e-6)));
}

void clip_gradients(LoraAdapter& grads, double norm, double max_norm) {
  const float coef = clip_coefficient(norm, max_norm);
  if (coef >= 1.0f) return;
  for (auto& [k, p] : grads.weights) {
    for (float& x : p.A) x *= coef;
    for (float& x : p.B) x *= coef;
  }
}

}  // namespace pivotmt::train
