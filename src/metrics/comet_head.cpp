#include "metrics/comet_head.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>

#include <fmt/format.h>

#include "core/error.h"
#include "io/checkpoint.h"

namespace pivotmt::comet {

std::vector<float> sparsemax(const std::vector<float>& z) {
  if (z.empty()) throw Error("sparsemax: empty input");
  std::vector<float> sorted = z;
  std::sort(sorted.begin(), sorted.end(), std::greater<float>());
  // The support: the largest k with k · z_(k) > Σ_{j<=k} z_(j) − 1 (k = 1 always holds).
  float cumulative = 0.0f, tau = 0.0f;
  for (size_t k = 1; k <= sorted.size(); ++k) {
    cumulative += sorted[k - 1];
    if (float(k) * sorted[k - 1] > cumulative - 1.0f) tau = (cumulative - 1.0f) / float(k);
  }
  std::vector<float> p(z.size());
  for (size_t i = 0; i < z.size(); ++i) p[i] = std::max(z[i] - tau, 0.0f);
  return p;
}

namespace {
const TensorInfo& expect_shape(const Checkpoint& ckpt, const std::string& name, const std::vector<int64_t>& shape) {
  const TensorInfo* t = ckpt.find(name);
  if (!t) throw FormatError(fmt::format("{}: COMET checkpoint has no tensor '{}'", ckpt.dir(), name));
  if (t->shape != shape)
    throw FormatError(fmt::format("{}: tensor '{}' has shape {}, expected {}", ckpt.dir(), name, shape_to_string(t->shape),
                                  shape_to_string(shape)));
  return *t;
}
}  // namespace

Head::Head(const Checkpoint& ckpt, size_t hidden) : hidden_(hidden) {
  std::vector<float> scalars;
  for (size_t i = 0;; ++i) {
    const std::string name = fmt::format("layerwise_attention.scalar_parameters.{}", i);
    if (!ckpt.find(name)) break;
    expect_shape(ckpt, name, {1});
    scalars.push_back(ckpt.load_f32(name)[0]);
  }
  if (scalars.empty())
    throw FormatError(fmt::format("{}: no layerwise_attention.scalar_parameters (a COMET model with layer \"mix\" "
                                  "is expected)", ckpt.dir()));
  layer_weights_ = sparsemax(scalars);
  expect_shape(ckpt, "layerwise_attention.gamma", {1});
  gamma_ = ckpt.load_f32("layerwise_attention.gamma")[0];

  // estimator.ff: Linear, Tanh, Dropout, Linear, Tanh, Dropout, ..., Linear (indices 0, 3, 6, ...).
  size_t in = 6 * hidden;
  for (size_t i = 0;; i += 3) {
    const std::string w = fmt::format("estimator.ff.{}.weight", i), b = fmt::format("estimator.ff.{}.bias", i);
    const TensorInfo* info = ckpt.find(w);
    if (!info) break;
    if (info->shape.size() != 2 || info->shape[1] != int64_t(in))
      throw FormatError(fmt::format("{}: tensor '{}' has shape {}, expected [*, {}]", ckpt.dir(), w,
                                    shape_to_string(info->shape), in));
    Dense d;
    d.w.dtype = DType::F32;
    d.w.out = size_t(info->shape[0]);
    d.w.in = in;
    d.w.f32 = ckpt.load_f32(w);
    expect_shape(ckpt, b, {info->shape[0]});
    d.b = ckpt.load_f32(b);
    in = d.w.out;
    estimator_.push_back(std::move(d));
  }
  if (estimator_.empty()) throw FormatError(fmt::format("{}: no estimator.ff.0.weight", ckpt.dir()));
  if (in != 1)
    throw FormatError(fmt::format("{}: the estimator's last layer has {} outputs, a regression metric has 1", ckpt.dir(), in));
}

std::vector<float> Head::sentence_embedding(const float* all_hidden, size_t T, std::span<const int32_t> ids,
                                            int64_t pad_id) const {
  if (!ids.empty() && ids.size() != T) throw Error(fmt::format("COMET: {} ids for {} tokens", ids.size(), T));
  if (T == 0) throw Error("COMET: a sentence without tokens");
  const size_t H = hidden_;
  // The mix in COMET's order: each w_k · H_k rounded, summed layer by layer, times gamma.
  std::vector<float> mixed(T * H, 0.0f), piece(T * H);
  for (size_t k = 0; k < layers(); ++k) {
    const float* h = all_hidden + k * T * H;
    for (size_t i = 0; i < T * H; ++i) {
      piece[i] = layer_weights_[k] * h[i];
      mixed[i] = k == 0 ? piece[i] : mixed[i] + piece[i];
    }
  }
  std::vector<float> out(H, 0.0f);
  for (size_t t = 0; t < T; ++t) {
    if (!ids.empty() && ids[t] == pad_id) continue;  // masked out of the sum, not of T
    for (size_t i = 0; i < H; ++i) out[i] += gamma_ * mixed[t * H + i];
  }
  for (float& v : out) v /= float(T);
  return out;
}

std::vector<float> Head::score(const float* src, const float* mt, const float* ref, size_t n) const {
  const size_t H = hidden_;
  std::vector<float> x(n * 6 * H);
  for (size_t s = 0; s < n; ++s) {
    float* f = &x[s * 6 * H];
    const float *a = mt + s * H, *r = ref + s * H, *c = src + s * H;
    for (size_t i = 0; i < H; ++i) {
      f[i] = a[i];
      f[H + i] = r[i];
      f[2 * H + i] = a[i] * r[i];
      f[3 * H + i] = std::fabs(a[i] - r[i]);
      f[4 * H + i] = a[i] * c[i];
      f[5 * H + i] = std::fabs(a[i] - c[i]);
    }
  }
  for (size_t l = 0; l < estimator_.size(); ++l) {
    const Dense& d = estimator_[l];
    std::vector<float> y(n * d.w.out);
    cpu::fast::linear(x.data(), n, d.w, y.data());
    for (size_t s = 0; s < n; ++s)
      for (size_t o = 0; o < d.w.out; ++o) {
        float& v = y[s * d.w.out + o];
        v += d.b[o];
        if (l + 1 < estimator_.size()) v = std::tanh(v);
      }
    x = std::move(y);
  }
  return x;  // [n]
}

}  // namespace pivotmt::comet
