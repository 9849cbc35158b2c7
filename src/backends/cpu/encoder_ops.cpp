// The encoder ops on the CPU: the plain loops of ops_ref.cpp or the fast kernels of
// ops_fast.cpp over host tensors; a linear's bias added row by row after the product (the
// order BertEncoder always had, so that its outputs are what they were).
#include <cstring>

#include <fmt/format.h>

#include "backends/cpu/ops.h"
#include "backends/cpu/thread_pool.h"
#include "backends/encoder_ops.h"
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
  std::unique_ptr<EncoderLinear> make_linear(std::vector<float> w, size_t out, size_t in,
                                             std::vector<float> bias) override {
    if (w.size() != out * in || (!bias.empty() && bias.size() != out))
      throw Error(fmt::format("encoder linear: {} weights and {} biases for [{}, {}]", w.size(), bias.size(), out, in));
    auto l = std::make_unique<CpuEncoderLinear>();
    l->out = l->w.out = out;
    l->in = l->w.in = in;
    l->w.dtype = DType::F32;
    l->w.f32 = std::move(w);
    l->bias = std::move(bias);
    return l;
  }

 protected:
  void do_upload(const Tensor& t, std::span<const float> values) override {
    std::memcpy(t.data(), values.data(), values.size_bytes());
  }
  const float* read(const Tensor& t, std::vector<float>&) override { return t.as<float>(); }
  std::vector<float> do_download(const Tensor& t) override {
    const float* p = t.as<float>();
    return std::vector<float>(p, p + t.numel());
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

 private:
  OpsImpl impl_;
};

}  // namespace

std::unique_ptr<EncoderOps> make_cpu_encoder_ops(OpsImpl impl) { return std::make_unique<CpuEncoderOps>(impl); }

}  // namespace pivotmt
