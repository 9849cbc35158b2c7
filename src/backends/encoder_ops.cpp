#include "backends/encoder_ops.h"

#include <fmt/format.h>

#include "core/error.h"

namespace pivotmt {

void EncoderOps::check_tensor(const Tensor& t, const char* op, const char* what) const {
  if (t.device() != device() || t.dtype() != DType::F32 || !t.contiguous())
    throw Error(fmt::format("encoder {}: {} is {} (expected contiguous F32 on {})", op, what, t.describe(), describe()));
}

Tensor EncoderOps::upload(std::span<const float> values, size_t rows, size_t cols) {
  if (values.size() != rows * cols)
    throw Error(fmt::format("encoder upload: {} values for [{}, {}]", values.size(), rows, cols));
  Tensor t = empty(rows, cols);
  if (!values.empty()) do_upload(t, values);
  return t;
}

std::vector<float> EncoderOps::download(const Tensor& t) {
  check_tensor(t, "download", "the tensor");
  return do_download(t);
}

const float* EncoderOps::read(const Tensor& t, std::vector<float>& scratch) {
  scratch = download(t);
  return scratch.data();
}

void EncoderOps::linear(const Tensor& x, const EncoderLinear& w, const Tensor& y) {
  check_tensor(x, "linear", "x");
  check_tensor(y, "linear", "y");
  if (x.cols() != w.in || y.cols() != w.out || y.rows() != x.rows())
    throw Error(fmt::format("encoder linear: x {} · W [{}, {}]ᵀ into y {}", x.describe(), w.out, w.in, y.describe()));
  if (x.rows() > 0) do_linear(x, w, y);
}

void EncoderOps::layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps) {
  check_tensor(x, "layer_norm", "x");
  check_tensor(w, "layer_norm", "weight");
  check_tensor(b, "layer_norm", "bias");
  if (w.numel() != x.cols() || b.numel() != x.cols())
    throw Error(fmt::format("encoder layer_norm: x {} with weight {} and bias {}", x.describe(), w.describe(), b.describe()));
  if (x.rows() > 0) do_layer_norm(x, w, b, eps);
}

void EncoderOps::residual_layer_norm(const Tensor& x, const Tensor& y, const Tensor& bias, const Tensor& w,
                                     const Tensor& b, float eps) {
  check_tensor(x, "residual_layer_norm", "x");
  check_tensor(y, "residual_layer_norm", "y");
  check_tensor(bias, "residual_layer_norm", "y's bias");
  check_tensor(w, "residual_layer_norm", "weight");
  check_tensor(b, "residual_layer_norm", "bias");
  if (y.rows() != x.rows() || y.cols() != x.cols() || bias.numel() != x.cols() || w.numel() != x.cols() ||
      b.numel() != x.cols())
    throw Error(fmt::format("encoder residual_layer_norm: x {}, y {}, y's bias {}, weight {}, bias {}", x.describe(),
                            y.describe(), bias.describe(), w.describe(), b.describe()));
  if (x.rows() > 0) do_residual_layer_norm(x, y, bias, w, b, eps);
}

void EncoderOps::gelu(const Tensor& x) {
  check_tensor(x, "gelu", "x");
  if (x.numel() > 0) do_gelu(x);
}

void EncoderOps::attention(const Tensor& qkv, std::span<const size_t> starts, size_t heads, size_t d, const Tensor& out) {
  check_tensor(qkv, "attention", "qkv");
  check_tensor(out, "attention", "out");
  if (qkv.cols() != 3 * heads * d || out.cols() != heads * d || out.rows() != qkv.rows())
    throw Error(fmt::format("encoder attention: qkv {} and out {} for {} heads of {}", qkv.describe(), out.describe(),
                            heads, d));
  if (starts.empty() || starts.front() != 0 || starts.back() != qkv.rows())
    throw Error(fmt::format("encoder attention: sequence starts must run from 0 to the {} rows", qkv.rows()));
  for (size_t i = 1; i < starts.size(); ++i)
    if (starts[i] < starts[i - 1]) throw Error("encoder attention: sequence starts must ascend");
  if (qkv.rows() > 0) do_attention(qkv, starts, heads, d, out);
}

std::unique_ptr<EncoderOps> make_encoder_ops(const Device& device, OpsImpl impl) {
  if (device.kind == DeviceKind::CUDA) return cuda::make_encoder_ops(device.index);
  return make_cpu_encoder_ops(impl);
}

}  // namespace pivotmt
