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

namespace {
void update(std::vector<float>& p, const std::vector<float>& g, std::vector<float>& m, std::vector<float>& v, float b1,
            float b2, float step_size, float eps_scaled, float decay) {
  for (size_t i = 0; i < p.size(); ++i) {
    m[i] = m[i] * b1 + (1.0f - b1) * g[i];
    v[i] = v[i] * b2 + (1.0f - b2) * (g[i] * g[i]);
    p[i] = p[i] + step_size * (m[i] / (std::sqrt(v[i]) + eps_scaled));
    if (decay != 1.0f) p[i] = p[i] * decay;
  }
}
}  // namespace

void adamw_step(LoraAdapter& params, const LoraAdapter& grads, AdamWState& s, double lr, const AdamWConfig& c) {
  ++s.step;
  const double correction1 = 1.0 - std::pow(c.beta1, double(s.step));
  const double correction2 = std::sqrt(1.0 - std::pow(c.beta2, double(s.step)));
  const float step_size = float(-lr * correction2 / correction1);
  const float eps_scaled = float(c.eps * correction2);
  const float decay = c.weight_decay > 0 ? float(1.0 - lr * c.weight_decay) : 1.0f;
  for (auto& [key, p] : params.weights) {
    const auto& g = grads.weights.at(key);
    auto& m = s.m.weights.at(key);
    auto& v = s.v.weights.at(key);
    update(p.A, g.A, m.A, v.A, float(c.beta1), float(c.beta2), step_size, eps_scaled, decay);
    update(p.B, g.B, m.B, v.B, float(c.beta1), float(c.beta2), step_size, eps_scaled, decay);
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

void clip_gradients(LoraAdapter& grads, double norm, double max_norm) {
  if (max_norm <= 0) return;
  const float coef = float(std::min(1.0, max_norm / (norm + 1e-6)));
  if (coef >= 1.0f) return;
  for (auto& [k, p] : grads.weights) {
    for (float& x : p.A) x *= coef;
    for (float& x : p.B) x *= coef;
  }
}

}  // namespace pivotmt::train
