// The op interface of bidirectional encoders (BERT and XLM-R: sentence embeddings for
// retrieval, COMET's encoder), the encoders' side of the seam ops.h is for the Llama
// forward: BertEncoder is written once over it; backends/cpu/encoder_ops.cpp and
// backends/cuda/encoder_ops.cpp implement it.
//
// Everything is F32 — weights, activations, sums — on every device: COMET's segment scores
// must stay within 1e-4 of unbabel-comet's F32 ones. Activations are contiguous 2-D tensors
// of rows packed sequence after sequence (no padding); `starts` gives each sequence's first
// row. Shapes: T rows, H hidden, F intermediate, nh heads of d dims.
#pragma once
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backends/ops.h"
#include "backends/tensor.h"

namespace pivotmt {

// W [out, in] (Hugging Face's layout) and an optional bias [out], added after the product.
class EncoderLinear {
 public:
  virtual ~EncoderLinear() = default;
  size_t out = 0, in = 0;
};

class EncoderOps {
 public:
  virtual ~EncoderOps() = default;
  virtual Device device() const = 0;
  virtual std::string describe() const = 0;

  // Weights from host values (moved in: a device copies them out, the CPU keeps them).
  virtual std::unique_ptr<EncoderLinear> make_linear(std::vector<float> w, size_t out, size_t in,
                                                     std::vector<float> bias) = 0;
  Tensor upload(std::span<const float> values, size_t rows, size_t cols);  // F32 [rows, cols]
  std::vector<float> download(const Tensor& t);                           // rows × cols, row-major
  // t's values where host code can read them: in place on the CPU, else copied into
  // `scratch` (valid until the next call with it).
  virtual const float* read(const Tensor& t, std::vector<float>& scratch);
  Tensor empty(size_t rows, size_t cols) const { return Tensor(device(), DType::F32, rows, cols); }

  void linear(const Tensor& x, const EncoderLinear& w, const Tensor& y);  // y [T, out] = x Wᵀ (+ bias)
  // Each row of x [T, H] in place: (x − mean) / sqrt(var + eps) · w + b (biased variance).
  void layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps);
  // x = LayerNorm(x + y + bias) per row: the post-norm residual of a projection y [T, H]
  // whose bias [1, H] is added here (the CPU's order of the sums).
  void residual_layer_norm(const Tensor& x, const Tensor& y, const Tensor& bias, const Tensor& w, const Tensor& b,
                           float eps);
  void gelu(const Tensor& x);  // x · Φ(x) in place, the exact (erf) GELU
  // qkv [T, 3 nh d] (queries, keys, values side by side) → out [T, nh d]: every row attends
  // to every row of its own sequence (rows [starts[i], starts[i + 1])), scale 1 / √d.
  void attention(const Tensor& qkv, std::span<const size_t> starts, size_t heads, size_t d, const Tensor& out);
  virtual void synchronize() {}

 protected:
  virtual void do_upload(const Tensor& t, std::span<const float> values) = 0;
  virtual std::vector<float> do_download(const Tensor& t) = 0;
  virtual void do_linear(const Tensor& x, const EncoderLinear& w, const Tensor& y) = 0;
  virtual void do_layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps) = 0;
  virtual void do_residual_layer_norm(const Tensor& x, const Tensor& y, const Tensor& bias, const Tensor& w,
                                      const Tensor& b, float eps) = 0;
  virtual void do_gelu(const Tensor& x) = 0;
  virtual void do_attention(const Tensor& qkv, std::span<const size_t> starts, size_t heads, size_t d,
                            const Tensor& out) = 0;

 private:
  void check_tensor(const Tensor& t, const char* op, const char* what) const;
};

// The encoder ops of a device: the CPU's (`impl`: the plain loops or the fast kernels) or
// a GPU's (throws UnsupportedError in a build without CUDA).
std::unique_ptr<EncoderOps> make_encoder_ops(const Device& device, OpsImpl impl = OpsImpl::Fast);
std::unique_ptr<EncoderOps> make_cpu_encoder_ops(OpsImpl impl);
namespace cuda {
std::unique_ptr<EncoderOps> make_encoder_ops(int device);
}

}  // namespace pivotmt
