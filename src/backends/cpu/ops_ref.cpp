// Reference implementations: straightforward loops in F32 (double accumulation where
// it makes the reference more exact), the specification the fast kernels are tested against.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backends/cpu/gemm.h"
#include "backends/cpu/ops.h"

namespace pivotmt::cpu {

void Matrix::row_to_f32(size_t o, float* dst) const {
  switch (dtype) {
    case DType::F32: std::copy(row_f32(o), row_f32(o) + in, dst); return;
    case DType::F16: convert_floats(DType::F16, row_f16(o), DType::F32, dst, in); return;
    case DType::NF4: nf4::dequantize(nf4, o * in, (o + 1) * in, dst); return;
    case DType::GGML:
      if (!ggml_packed.bytes.empty()) return ggml_packed.row_to_f32(o, dst);
      ggml_dequantize(ggml_type, {reinterpret_cast<const std::byte*>(row_ggml(o)), ggml_row_bytes}, dst, in); return;
    default:
      for (size_t i = 0; i < in; ++i) dst[i] = scale[o] * float(row_i8(o)[i]);
  }
}

Matrix quantize_int8(const float* w, size_t out, size_t in, bool int8_activations) {
  Matrix m;
  m.dtype = DType::I8;
  m.out = out;
  m.in = in;
  m.int8_activations = int8_activations;
  m.i8.resize(out * in);
  m.scale.resize(out);
  const size_t blocks = (in + kQ8Block - 1) / kQ8Block;
  m.block_sums.assign(out * blocks, 0);
  for (size_t o = 0; o < out; ++o) {
    float absmax = 0.0f;
    for (size_t i = 0; i < in; ++i) absmax = std::max(absmax, std::fabs(w[o * in + i]));
    const float s = absmax > 0 ? absmax / 127.0f : 1.0f;
    m.scale[o] = s;
    for (size_t i = 0; i < in; ++i) {
      m.i8[o * in + i] = int8_t(std::lrint(std::clamp(w[o * in + i] / s, -127.0f, 127.0f)));
      m.block_sums[o * blocks + i / kQ8Block] += m.i8[o * in + i];
    }
  }
  return m;
}

namespace kernels {

void quantize_rows_q8(const float* x, size_t M, size_t K, Q8Rows& out) {
  out.rows = M;
  out.cols = K;
  out.stride = (K + 63) & ~size_t(63);
  out.blocks = (K + kQ8Block - 1) / kQ8Block;
  out.q.assign(M * out.stride, 128);
  out.scale.resize(M * out.blocks);
  for (size_t m = 0; m < M; ++m)
    for (size_t b = 0; b < out.blocks; ++b) {
      const size_t k0 = b * kQ8Block, k1 = std::min(K, k0 + kQ8Block);
      float absmax = 0.0f;
      for (size_t k = k0; k < k1; ++k) absmax = std::max(absmax, std::fabs(x[m * K + k]));
      const float scale = absmax > 0 ? absmax / 127.0f : 1.0f, inv = 1.0f / scale;
      out.scale[m * out.blocks + b] = scale;
      for (size_t k = k0; k < k1; ++k)
        out.q[m * out.stride + k] = uint8_t(128 + std::lrint(std::clamp(x[m * K + k] * inv, -127.0f, 127.0f)));
    }
}

void gemm_q8_ref(const Q8Rows& x, const Matrix& w, float* y, size_t ldy, size_t n0, size_t n1) {
  for (size_t m = 0; m < x.rows; ++m)
    for (size_t n = n0; n < n1; ++n) {
      double acc = 0.0;
      for (size_t b = 0; b < x.blocks; ++b) {
        int64_t dot = 0;  // exact, as the int32 lanes of the fast kernel
        for (size_t k = b * kQ8Block; k < std::min(w.in, (b + 1) * kQ8Block); ++k)
          dot += (int64_t(x.q[m * x.stride + k]) - 128) * w.row_i8(n)[k];
        acc += double(x.scale[m * x.blocks + b]) * double(dot);
      }
      y[m * ldy + n] = float(acc * double(w.scale[n]));
    }
}

}  // namespace kernels

}  // namespace pivotmt::cpu

namespace pivotmt::cpu::ref {

void linear(const float* x, size_t T, const Matrix& w, float* y, size_t ldy) {
  if (ldy == 0) ldy = w.out;
  if (w.dtype == DType::I8 && w.int8_activations) {
    kernels::Q8Rows q;
    kernels::quantize_rows_q8(x, T, w.in, q);
    return kernels::gemm_q8_ref(q, w, y, ldy, 0, w.out);
  }
  if (w.dtype == DType::GGML && w.int8_activations) {
    kernels::GgmlQ8Blocks q;
    kernels::quantize_rows_ggml_q8(x, T, w.in, q);
    return kernels::gemm_ggml_q8_ref(q, w, y, ldy, 0, w.out);
  }
  std::vector<float> row(w.in);
  for (size_t o = 0; o < w.out; ++o) {
    w.row_to_f32(o, row.data());
    for (size_t t = 0; t < T; ++t) {
      double acc = 0.0;
      for (size_t i = 0; i < w.in; ++i) acc += double(x[t * w.in + i]) * double(row[i]);
      y[t * ldy + o] = float(acc);
    }
  }
}

void rmsnorm(const float* x, const float* w, size_t T, size_t H, float eps, float* y) {
  for (size_t t = 0; t < T; ++t) {
    double ss = 0.0;
    for (size_t h = 0; h < H; ++h) ss += double(x[t * H + h]) * double(x[t * H + h]);
    const float inv = 1.0f / std::sqrt(float(ss / double(H)) + eps);
    for (size_t h = 0; h < H; ++h) y[t * H + h] = w[h] * (x[t * H + h] * inv);
  }
}

void rope(float* x, size_t T, size_t stride, size_t heads, size_t d, const int64_t* positions, const Rope& r) {
  const size_t half = d / 2;
  for (size_t t = 0; t < T; ++t)
    for (size_t h = 0; h < heads; ++h) {
      float* v = x + t * stride + h * d;
      for (size_t i = 0; i < half; ++i) {
        const float angle = float(positions[t]) * r.inv_freq[i];
        const float c = std::cos(angle), s = std::sin(angle);
        const float a = v[i], b = v[i + half];
        v[i] = a * c - b * s;         // x1 * cos + (-x2) * sin
        v[i + half] = b * c + a * s;  // x2 * cos + x1 * sin
      }
    }
}

void silu_mul(const float* gate_up, size_t T, size_t F, float* out) {
  for (size_t t = 0; t < T; ++t)
    for (size_t i = 0; i < F; ++i) {
      const float g = gate_up[t * 2 * F + i], u = gate_up[t * 2 * F + F + i];
      out[t * F + i] = g / (1.0f + std::exp(-g)) * u;
    }
}

void attention(const float* q, size_t q_stride, const float* k, const float* v, size_t T, size_t L, size_t n_heads,
               size_t n_kv, size_t d, size_t window, float* out, KvStrides kv_strides) {
  const size_t group = n_heads / n_kv;
  const KvStrides at = kv_strides.resolved(n_kv, d);
  const float scale = 1.0f / std::sqrt(float(d));
  std::vector<double> scores(L);
  for (size_t t = 0; t < T; ++t) {
    const size_t pos = L - T + t;  // this query's position in the cache
    const size_t first = window > 0 && pos + 1 > window ? pos + 1 - window : 0;
    for (size_t h = 0; h < n_heads; ++h) {
      const size_t kv = h / group;
      const float* qv = q + t * q_stride + h * d;
      double max_score = -INFINITY;
      for (size_t j = first; j <= pos; ++j) {
        double s = 0.0;
        for (size_t i = 0; i < d; ++i) s += double(qv[i]) * double(k[j * at.pos + kv * at.head + i]);
        scores[j] = s * scale;
        max_score = std::max(max_score, scores[j]);
      }
      double sum = 0.0;
      for (size_t j = first; j <= pos; ++j) sum += (scores[j] = std::exp(scores[j] - max_score));
      float* o = out + (t * n_heads + h) * d;
      for (size_t i = 0; i < d; ++i) {
        double acc = 0.0;
        for (size_t j = first; j <= pos; ++j) acc += scores[j] / sum * double(v[j * at.pos + kv * at.head + i]);
        o[i] = float(acc);
      }
    }
  }
}

void layer_norm(float* x, size_t T, size_t H, const float* w, const float* b, float eps) {
  for (size_t t = 0; t < T; ++t) {
    float* r = x + t * H;
    double mean = 0, var = 0;
    for (size_t i = 0; i < H; ++i) mean += r[i];
    mean /= double(H);
    for (size_t i = 0; i < H; ++i) var += (r[i] - mean) * (r[i] - mean);
    var /= double(H);
    const float inv = float(1.0 / std::sqrt(var + double(eps)));
    for (size_t i = 0; i < H; ++i) r[i] = float(r[i] - mean) * inv * w[i] + b[i];
  }
}

void residual_layer_norm(float* x, const float* y, const float* bias, size_t T, size_t H, const float* w,
                         const float* b, float eps) {
  for (size_t t = 0; t < T; ++t)
    for (size_t i = 0; i < H; ++i) x[t * H + i] += y[t * H + i] + bias[i];
  layer_norm(x, T, H, w, b, eps);
}

void gelu(float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] = float(0.5 * x[i] * (1.0 + std::erf(double(x[i]) / std::sqrt(2.0))));
}

void encoder_attention(const float* qkv, const std::vector<size_t>& starts, size_t n_heads, size_t d, float* out) {
  const size_t H = n_heads * d, stride = 3 * H;
  const double scale = 1.0 / std::sqrt(double(d));
  std::vector<double> scores;
  for (size_t s = 0; s + 1 < starts.size(); ++s) {
    const size_t r0 = starts[s], T = starts[s + 1] - r0;
    scores.resize(T);
    for (size_t h = 0; h < n_heads; ++h)
      for (size_t t = 0; t < T; ++t) {
        const float* q = qkv + (r0 + t) * stride + h * d;
        double mx = -INFINITY;
        for (size_t j = 0; j < T; ++j) {
          const float* k = qkv + (r0 + j) * stride + H + h * d;
          double dot = 0;
          for (size_t i = 0; i < d; ++i) dot += double(q[i]) * k[i];
          scores[j] = dot * scale;
          mx = std::max(mx, scores[j]);
        }
        double sum = 0;
        for (size_t j = 0; j < T; ++j) sum += (scores[j] = std::exp(scores[j] - mx));
        for (size_t i = 0; i < d; ++i) {
          double acc = 0;
          for (size_t j = 0; j < T; ++j) acc += scores[j] * qkv[(r0 + j) * stride + 2 * H + h * d + i];
          out[(r0 + t) * H + h * d + i] = float(acc / sum);
        }
      }
  }
}

}  // namespace pivotmt::cpu::ref
