// The encoder ops on the CPU: the plain loops of ops_ref.cpp or the fast kernels of
// ops_fast.cpp over host tensors; a linear's bias added row by row after the product (the
// order BertEncoder always had, so that its outputs are what they were).
#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "backends/cpu/ops.h"
#include "backends/cpu/thread_pool.h"
#include "backends/encoder_ops.h"
#include "core/dtype.h"
#include "core/error.h"

namespace pivotmt {
namespace {

class CpuEncoderLinear final : public EncoderLinear {
 public:
  cpu::Matrix w;
  std::vector<float> bias;  // [out] or empty
};

class CpuEncoderOps final : public EncoderOps {
 public:
  explicit CpuEncoderOps(OpsImpl impl) : impl_(impl) {}
  Device device() const override { return Device{}; }
  std::string describe() const override {
    return impl_ == OpsImpl::Fast ? "cpu (fast kernels)" : "cpu (reference kernels)";
  }
  std::unique_ptr<EncoderLinear> make_linear(std::vector<float> w, size_t out, size_t in, std::vector<float> bias,
                                             DType storage) override {
    if (w.size() != out * in || (!bias.empty() && bias.size() != out))
      throw Error(fmt::format("encoder linear: {} weights and {} biases for [{}, {}]", w.size(), bias.size(), out, in));
    auto l = std::make_unique<CpuEncoderLinear>();
    switch (storage) {
      case DType::F32:
        l->w.dtype = DType::F32;
        l->w.f32 = std::move(w);
        break;
      case DType::F16:
        l->w.dtype = DType::F16;
        l->w.f16.resize(w.size());
        convert_floats(DType::F32, w.data(), DType::F16, l->w.f16.data(), w.size());
        break;
      case DType::I8: l->w = cpu::quantize_int8(w.data(), out, in); break;
      default:
        throw UnsupportedError(fmt::format("encoder linear: weights as {} (supported: f32, f16, int8)", dtype_name(storage)));
    }
    l->out = l->w.out = out;
    l->in = l->w.in = in;
    l->bias = std::move(bias);
    l->bytes = l->w.bytes() + l->bias.size() * sizeof(float);
    return l;
  }
  Tensor host_view(float* p, size_t rows, size_t cols) const override {
    return Tensor(Device{}, DType::F32, rows, cols, cols, nullptr, p);
  }

 protected:
  void do_upload(const Tensor& t, std::span<const float> values) override {
    std::memcpy(t.data(), values.data(), values.size_bytes());
  }
  const float* read(const Tensor& t, std::vector<float>&) override { return t.as<float>(); }
  void do_download(const Tensor& t, void* out) override { std::memcpy(out, t.data(), t.numel() * dtype_size(t.dtype())); }
  void do_zero(const Tensor& t) override { std::memset(t.data(), 0, t.numel() * dtype_size(t.dtype())); }
  void do_pool_rows(const Tensor& x, std::span<const size_t> starts, std::span<const uint8_t> keep, double weight,
                    const Tensor& acc) override {
    const size_t H = x.cols();
    const float* rows = x.as<float>();
    auto* sums = static_cast<double*>(acc.data());
    cpu::parallel_for(starts.size() - 1, [&](size_t s0, size_t s1) {
      for (size_t s = s0; s < s1; ++s) {
        double* a = sums + s * H;
        for (size_t t = starts[s]; t < starts[s + 1]; ++t) {
          if (!keep[t]) continue;
          const float* row = rows + t * H;
          for (size_t i = 0; i < H; ++i) a[i] += weight * row[i];
        }
      }
    });
  }
  void do_linear(const Tensor& x, const EncoderLinear& w, const Tensor& y) override {
    const auto& l = static_cast<const CpuEncoderLinear&>(w);
    const size_t T = x.rows();
    if (impl_ == OpsImpl::Fast) cpu::fast::linear(x.as<float>(), T, l.w, y.as<float>());
    else cpu::ref::linear(x.as<float>(), T, l.w, y.as<float>());
    if (l.bias.empty()) return;
    float* out = y.as<float>();
    const size_t n = l.out;
    cpu::parallel_for(T, [&](size_t t0, size_t t1) {
      for (size_t t = t0; t < t1; ++t)
        for (size_t o = 0; o < n; ++o) out[t * n + o] += l.bias[o];
    });
  }
  void do_layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps) override {
    auto* f = impl_ == OpsImpl::Fast ? &cpu::fast::layer_norm : &cpu::ref::layer_norm;
    f(x.as<float>(), x.rows(), x.cols(), w.as<float>(), b.as<float>(), eps);
  }
  void do_residual_layer_norm(const Tensor& x, const Tensor& y, const Tensor& bias, const Tensor& w, const Tensor& b,
                              float eps) override {
    auto* f = impl_ == OpsImpl::Fast ? &cpu::fast::residual_layer_norm : &cpu::ref::residual_layer_norm;
    f(x.as<float>(), y.as<float>(), bias.as<float>(), x.rows(), x.cols(), w.as<float>(), b.as<float>(), eps);
  }
  void do_gelu(const Tensor& x) override {
    if (impl_ == OpsImpl::Fast) cpu::fast::gelu(x.as<float>(), x.numel());
    else cpu::ref::gelu(x.as<float>(), x.numel());
  }
  void do_attention(const Tensor& qkv, std::span<const size_t> starts, size_t heads, size_t d,
                    const Tensor& out) override {
    const std::vector<size_t> s(starts.begin(), starts.end());
    if (impl_ == OpsImpl::Fast) cpu::fast::encoder_attention(qkv.as<float>(), s, heads, d, out.as<float>());
    else cpu::ref::encoder_attention(qkv.as<float>(), s, heads, d, out.as<float>());
  }
  void do_add(const Tensor& x, const Tensor& y) override {
    float* a = x.as<float>();
    const float* b = y.as<float>();
    const size_t n = x.numel();
    cpu::parallel_for((n + 4095) / 4096, [&](size_t b0, size_t b1) {
      for (size_t i = b0 * 4096; i < std::min(n, b1 * 4096); ++i) a[i] += b[i];
    });
  }
  void do_relu(const Tensor& x) override {
    float* a = x.as<float>();
    const size_t n = x.numel();
    cpu::parallel_for((n + 4095) / 4096, [&](size_t b0, size_t b1) {
      for (size_t i = b0 * 4096; i < std::min(n, b1 * 4096); ++i) a[i] = std::max(a[i], 0.0f);
    });
  }
  void do_copy(const Tensor& src, size_t src_row, size_t src_col, const Tensor& dst, size_t dst_row, size_t dst_col,
               size_t rows, size_t cols) override {
    for (size_t r = 0; r < rows; ++r)
      std::memmove(dst.as<float>() + (dst_row + r) * dst.stride() + dst_col,
                   src.as<float>() + (src_row + r) * src.stride() + src_col, cols * sizeof(float));
  }
  void do_embed(const EncoderLinear& table, std::span<const int32_t> ids, float scale, const Tensor& positions,
                std::span<const int32_t> position_ids, const Tensor& out) override {
    const auto& t = static_cast<const CpuEncoderLinear&>(table);
    const size_t H = out.cols();
    for (size_t r = 0; r < ids.size(); ++r) {
      float* row = out.as<float>() + r * H;
      const float* pos = positions.as<float>() + size_t(position_ids[r]) * H;
      t.w.row_to_f32(size_t(ids[r]), row);
      for (size_t i = 0; i < H; ++i) row[i] = row[i] * scale + pos[i];
    }
  }
  void do_write_cache(const Tensor& kv_new, std::span<const CachedRows> spans, size_t layer) override {
    const size_t H = kv_new.cols() / 2;
    size_t row = 0;
    for (const auto& s : spans) {
      float* keys = s.kv->as<float>() + 2 * layer * s.capacity * H;
      float* values = keys + s.capacity * H;
      for (size_t i = 0; i < s.rows; ++i, ++row) {
        const float* src = kv_new.as<float>() + row * kv_new.stride();
        const size_t position = s.keys - s.rows + i;
        std::memcpy(keys + position * H, src, H * sizeof(float));
        std::memcpy(values + position * H, src + H, H * sizeof(float));
      }
    }
  }
  // A causal span is one job (its rows see the keys up to their own, as attention() counts
  // them); each row of a non-causal span is a job of one row seeing every key.
  void do_cached_attention(const Tensor& q, std::span<const CachedRows> spans, size_t layer, size_t heads, size_t d,
                           const Tensor& out) override {
    const size_t H = heads * d;
    std::vector<cpu::fast::AttentionJob> jobs;
    size_t row = 0;
    for (const auto& s : spans) {
      const float* keys = s.kv->as<float>() + 2 * layer * s.capacity * H;
      for (size_t i = 0; i < s.rows; i += s.causal ? s.rows : 1) {
        cpu::fast::AttentionJob job;
        job.q = q.as<float>() + (row + i) * q.stride();
        job.q_stride = q.stride();
        job.k = keys;
        job.v = keys + s.capacity * H;
        job.T = s.causal ? s.rows : 1;
        job.L = s.keys;
        job.out = out.as<float>() + (row + i) * H;
        job.out_stride = H;
        jobs.push_back(job);
      }
      row += s.rows;
    }
    if (impl_ == OpsImpl::Fast) {
      cpu::fast::attention_many(jobs, heads, heads, d, 0);
    } else {
      for (const auto& j : jobs) cpu::ref::attention(j.q, j.q_stride, j.k, j.v, j.T, j.L, heads, heads, d, 0, j.out);
    }
  }

 private:
  OpsImpl impl_;
};

}  // namespace

std::unique_ptr<EncoderOps> make_cpu_encoder_ops(OpsImpl impl) { return std::make_unique<CpuEncoderOps>(impl); }

}  // namespace pivotmt
