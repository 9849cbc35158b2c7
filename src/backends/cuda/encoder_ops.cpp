// The encoder ops on an NVIDIA GPU (host side; the kernels are in encoder.cu): F32 weights
// and activations (COMET's numerics), cuBLAS F32 GEMMs without TF32, one stream and cuBLAS
// handle. A pass's sequence boundaries travel as each row's [begin, end) of keys.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "backends/backend.h"
#include "backends/cuda/cublas_loader.h"
#include "backends/cuda/cuda_util.h"
#include "backends/cuda/kernels.h"
#include "backends/encoder_ops.h"

namespace pivotmt::cuda {
namespace {

class CudaEncoderLinear final : public EncoderLinear {
 public:
  Tensor w;     // [out, in] F32
  Tensor bias;  // [1, out] F32, or empty
};

class CudaEncoderOps final : public EncoderOps {
 public:
  explicit CudaEncoderOps(int device) : device_{DeviceKind::CUDA, device} {
    info_ = device_info(device);  // validates the index (clear error naming it)
    select();
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    check_cublas(cublas().create(&blas_), "cublasCreate");
    check_cublas(cublas().set_stream(blas_, stream_), "cublasSetStream");
    workspace_ = device_alloc(device, kWorkspaceBytes);
    check_cublas(cublas().set_workspace(blas_, workspace_.get(), kWorkspaceBytes), "cublasSetWorkspace");
  }
  ~CudaEncoderOps() override {
    cudaSetDevice(device_.index);
    cudaStreamSynchronize(stream_);
    if (blas_) cublas().destroy(blas_);
    cudaStreamDestroy(stream_);
  }
  Device device() const override { return device_; }
  std::string describe() const override {
    return fmt::format("cuda:{} ({}, F32 encoder)", device_.index, info_.name);
  }
  std::unique_ptr<EncoderLinear> make_linear(std::vector<float> w, size_t out, size_t in,
                                             std::vector<float> bias) override {
    if (w.size() != out * in || (!bias.empty() && bias.size() != out))
      throw Error(fmt::format("encoder linear: {} weights and {} biases for [{}, {}]", w.size(), bias.size(), out, in));
    auto l = std::make_unique<CudaEncoderLinear>();
    l->out = out;
    l->in = in;
    l->w = upload(w, out, in);
    if (!bias.empty()) l->bias = upload(bias, 1, out);
    return l;
  }
  void synchronize() override { check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"); }

 protected:
  void do_upload(const Tensor& t, std::span<const float> values) override {
    select();
    // On our stream, then waited for (pageable memory: the copy may return before its DMA).
    check(cudaMemcpyAsync(t.data(), values.data(), values.size_bytes(), cudaMemcpyHostToDevice, stream_),
          "copy to the device");
    synchronize();
  }
  std::vector<float> do_download(const Tensor& t) override {
    select();
    std::vector<float> v(t.numel());
    check(cudaMemcpyAsync(v.data(), t.data(), v.size() * 4, cudaMemcpyDeviceToHost, stream_), "copy to the host");
    synchronize();
    return v;
  }
  void do_linear(const Tensor& x, const EncoderLinear& w, const Tensor& y) override {
    select();
    const auto& l = static_cast<const CudaEncoderLinear&>(w);
    kernels::linear_f32(blas_, x.as<float>(), int(x.rows()), l.w.as<float>(), int(l.out), int(l.in), y.as<float>());
    if (!l.bias.empty()) kernels::encoder_add_bias(y.as<float>(), int(y.rows()), int(l.out), l.bias.as<float>(), stream_);
  }
  void do_layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps) override {
    select();
    kernels::encoder_layer_norm(x.as<float>(), nullptr, nullptr, int(x.rows()), int(x.cols()), w.as<float>(),
                                b.as<float>(), eps, stream_);
  }
  void do_residual_layer_norm(const Tensor& x, const Tensor& y, const Tensor& bias, const Tensor& w, const Tensor& b,
                              float eps) override {
    select();
    kernels::encoder_layer_norm(x.as<float>(), y.as<float>(), bias.as<float>(), int(x.rows()), int(x.cols()),
                                w.as<float>(), b.as<float>(), eps, stream_);
  }
  void do_gelu(const Tensor& x) override {
    select();
    kernels::encoder_gelu(x.as<float>(), x.numel(), stream_);
  }
  void do_attention(const Tensor& qkv, std::span<const size_t> starts, size_t heads, size_t d,
                    const Tensor& out) override {
    select();
    if (!kernels::encoder_attention_supported(int(d)))
      throw UnsupportedError(fmt::format("{}: encoder attention heads of {} dims (at most 256)", describe(), d));
    // Each row's keys: its sequence's rows. Uploaded once per batch (every layer of a
    // batch has the same sequences).
    const size_t T = qkv.rows();
    if (!std::equal(starts.begin(), starts.end(), bounds_starts_.begin(), bounds_starts_.end())) {
      std::vector<int32_t> bounds(2 * T);
      for (size_t s = 0; s + 1 < starts.size(); ++s)
        for (size_t t = starts[s]; t < starts[s + 1]; ++t) {
          bounds[t] = int32_t(starts[s]);
          bounds[T + t] = int32_t(starts[s + 1]);
        }
      if (bounds_.numel() < bounds.size()) bounds_ = Tensor(device_, DType::I32, 1, 2 * bounds.size());
      // Ordered after the previous batch's kernels that read the buffer; waited for (pageable).
      check(cudaMemcpyAsync(bounds_.data(), bounds.data(), bounds.size() * 4, cudaMemcpyHostToDevice, stream_),
            "copy the sequences' bounds");
      synchronize();
      bounds_starts_.assign(starts.begin(), starts.end());
    }
    kernels::encoder_attention(qkv.as<float>(), int(T), int(heads), int(d), bounds_.as<int32_t>(),
                               bounds_.as<int32_t>() + T, out.as<float>(), stream_);
  }

 private:
  void select() const { check(cudaSetDevice(device_.index), "cudaSetDevice"); }
  static constexpr size_t kWorkspaceBytes = size_t(32) << 20;
  Device device_;
  CudaDeviceInfo info_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  std::shared_ptr<void> workspace_;
  Tensor bounds_;  // [2 T] int32: each row's first key, then each row's end
  std::vector<size_t> bounds_starts_;  // the sequence starts bounds_ holds
};

}  // namespace

std::unique_ptr<EncoderOps> make_encoder_ops(int device) { return std::make_unique<CudaEncoderOps>(device); }

}  // namespace pivotmt::cuda
