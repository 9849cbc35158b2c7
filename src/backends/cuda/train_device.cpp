// TrainDevice on an NVIDIA GPU (host side; the kernels are in train.cu): F32 activations
// and GEMMs (cuBLAS, compute 32F), one stream and cuBLAS handle; in F16 mode the base's and
// the output layer's products on the F16 tensor cores and attention's in TF32
// (train_attention.h); the frozen base
// in its storage format (NF4 codes with their F32 absmax, F16, or F32), converted one matrix
// at a time into a scratch buffer just before its GEMM.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "backends/backend.h"
#include "backends/cuda/blas_stream.h"
#include "backends/cuda/cublas_loader.h"
#include "backends/cuda/cuda_util.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/train_attention.h"
#include "core/error.h"
#include "train/dropout_mask.h"
#include "train/train_device.h"

namespace pivotmt::cuda {
namespace {

class CudaFrozen final : public train::DeviceFrozen {
 public:
  BaseWeights storage = BaseWeights::F32;
  Tensor values;  // F32 [out·in] or F16 bits [out·in] (as I32 pairs' storage), or NF4 codes
  Tensor absmax;  // NF4: [blocks] F32
  size_t numel = 0;
};

class CudaTrainDevice final : public train::TrainDevice {
 public:
  // device_info first: it validates the index with a clear error naming it.
  CudaTrainDevice(int device, train::BaseCompute compute)
      : device_{DeviceKind::CUDA, device}, info_(device_info(device)), bs_(device), compute_(compute) {
    codes_ = buffer(16);
    upload(nf4::codes().data(), 16 * sizeof(float), codes_.data());
  }
  ~CudaTrainDevice() override {
    // Copies in flight finish before their memory goes; the events and the copy stream go.
    if (copy_stream_) {
      cudaSetDevice(device_.index);
      cudaStreamSynchronize(copy_stream_);
      for (cudaEvent_t e : copied_) cudaEventDestroy(e);
      cudaEventDestroy(queued_);
      cudaStreamDestroy(copy_stream_);
    }
  }
  CudaTrainDevice(const CudaTrainDevice&) = delete;
  CudaTrainDevice& operator=(const CudaTrainDevice&) = delete;
  Device device() const override { return device_; }
  std::string describe() const override {
    return fmt::format("cuda:{} ({}, {} training)", device_.index, info_.name,
                       compute_ == train::BaseCompute::F16 ? "F16 base GEMMs, F32" : "F32");
  }

  void upload(const void* host, size_t bytes, void* dst) override {
    select();
    // Waited for: `host` may be pageable memory the caller frees or reuses at once.
    check(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, stream_), "copy to the device");
    synchronize();
  }
  void download(const void* src, size_t bytes, void* host) override {
    select();
    check(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, stream_), "copy to the host");
    synchronize();
  }
  bool offloads() const override { return true; }
  std::shared_ptr<float> pinned_floats(size_t n) override {
    select();
    void* p = nullptr;
    const std::string what = fmt::format("cudaHostAlloc of {:.1f} MB of pinned host memory", double(n) * 4 / 1e6);
    check(cudaHostAlloc(&p, std::max<size_t>(n, 1) * sizeof(float), cudaHostAllocDefault), what.c_str());
    // Freed once the copies queued so far are done (they may still read or write it).
    return std::shared_ptr<float>(static_cast<float*>(p), [this](float* q) {
      cudaSetDevice(device_.index);
      if (copy_stream_) cudaStreamSynchronize(copy_stream_);
      cudaFreeHost(q);
    });
  }
  // A copy stream beside the compute stream: the copy waits for the compute queued before
  // it (an event), and ticket t's event marks the copy done for wait_copy. Events are
  // reused round robin: waiting for a reused one waits for a later copy, which the copy
  // stream's order puts after the one asked for.
  uint64_t copy_behind(const void* src, void* dst, size_t bytes, bool to_host) override {
    select();
    if (!copy_stream_) {
      check(cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking), "create the copy stream");
      check(cudaEventCreateWithFlags(&queued_, cudaEventDisableTiming), "cudaEventCreate");
      for (cudaEvent_t& e : copied_) check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreate");
    }
    check(cudaEventRecord(queued_, stream_), "cudaEventRecord");
    check(cudaStreamWaitEvent(copy_stream_, queued_, 0), "cudaStreamWaitEvent");
    check(cudaMemcpyAsync(dst, src, bytes, to_host ? cudaMemcpyDeviceToHost : cudaMemcpyHostToDevice, copy_stream_),
          to_host ? "offload to pinned host memory" : "copy back from pinned host memory");
    const uint64_t ticket = ++copies_;
    check(cudaEventRecord(copied_[ticket % copied_.size()], copy_stream_), "cudaEventRecord");
    return ticket;
  }
  void wait_copy(uint64_t ticket) override {
    select();
    if (ticket == 0 || ticket > copies_) throw Error(fmt::format("cuda training: no copy {} to wait for", ticket));
    check(cudaStreamWaitEvent(stream_, copied_[ticket % copied_.size()], 0), "cudaStreamWaitEvent");
  }

  void zero(float* p, size_t n) override {
    select();
    check(cudaMemsetAsync(p, 0, n * sizeof(float), stream_), "cudaMemsetAsync");
  }
  void copy(const float* src, size_t n, float* dst) override {
    select();
    check(cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, stream_), "copy on the device");
  }

  std::unique_ptr<train::DeviceFrozen> frozen(const FrozenMatrix& m) override {
    auto f = std::make_unique<CudaFrozen>();
    f->out = m.out;
    f->in = m.in;
    f->storage = m.storage;
    f->numel = m.out * m.in;
    switch (m.storage) {
      case BaseWeights::F32:
        f->values = buffer(f->numel);
        upload(m.f32.data(), f->numel * sizeof(float), f->values.data());
        f->bytes = f->numel * sizeof(float);
        break;
      case BaseWeights::F16:
        f->values = Tensor(device_, DType::F16, 1, f->numel);
        upload(m.f16.data(), f->numel * sizeof(uint16_t), f->values.data());
        f->bytes = f->numel * sizeof(uint16_t);
        break;
      case BaseWeights::NF4:
        f->values = Tensor(device_, DType::U8, 1, m.q.packed.size());
        upload(m.q.packed.data(), m.q.packed.size(), f->values.data());
        f->absmax = buffer(m.q.absmax.size());
        upload(m.q.absmax.data(), m.q.absmax.size() * sizeof(float), f->absmax.data());
        f->bytes = m.q.packed.size() + m.q.absmax.size() * sizeof(float);
        break;
    }
    return f;
  }
  const float* weight_f32(const train::DeviceFrozen& w, train::WeightScratch& scratch) override {
    select();
    const auto& f = static_cast<const CudaFrozen&>(w);
    if (f.storage == BaseWeights::F32) return f.values.as<float>();
    Tensor& buf = scratch.buffer;
    if (scratch.has(w, false)) return buf.as<float>();
    if (buf.empty() || buf.numel() < f.numel) buf = buffer(f.numel);
    if (f.storage == BaseWeights::F16)
      kernels::train_f16_to_f32(f.values.as<uint16_t>(), f.numel, buf.as<float>(), stream_);
    else
      kernels::train_nf4_dequantize(f.values.as<uint8_t>(), f.absmax.as<float>(), codes_.as<float>(), f.numel,
                                    buf.as<float>(), stream_);
    scratch.hold(w, false);
    return buf.as<float>();
  }
  void embed_rows(const train::DeviceFrozen& table, const int32_t* ids, size_t T, float* out) override {
    const auto& f = static_cast<const CudaFrozen&>(table);
    if (f.storage != BaseWeights::F32) throw Error("cuda training: embedding rows of a table not kept in F32");
    upload_ints(ids, T);
    kernels::train_embed_rows(f.values.as<float>(), ints_.as<int32_t>(), int(T), int(f.in), out, stream_);
  }

  void base_gemm(bool trans_w, size_t M, size_t N, size_t K, float alpha, const float* A, size_t lda,
                 const train::DeviceFrozen& W, float beta, float* C, size_t ldc, train::WeightScratch& scratch) override {
    if (compute_ == train::BaseCompute::F32) return TrainDevice::base_gemm(trans_w, M, N, K, alpha, A, lda, W, beta, C, ldc, scratch);
    select();
    const auto& f = static_cast<const CudaFrozen&>(W);
    // W as F16: its own values (F16 storage), or converted into the scratch (as F16 halves
    // of the F32 scratch's storage: half the bytes a whole F32 matrix needs).
    const uint16_t* w16 = nullptr;
    if (f.storage == BaseWeights::F16) {
      w16 = f.values.as<uint16_t>();
    } else {
      Tensor& buf = scratch.buffer;
      if (!scratch.has(W, true)) {
        if (buf.empty() || buf.numel() * 2 < f.numel) buf = buffer((f.numel + 1) / 2);
        if (f.storage == BaseWeights::NF4)
          kernels::train_nf4_to_f16(f.values.as<uint8_t>(), f.absmax.as<float>(), codes_.as<float>(), f.numel,
                                    buf.as<uint16_t>(), stream_);
        else
          kernels::train_f32_to_f16(f.values.as<float>(), int(f.out), int(f.in), int(f.in), buf.as<uint16_t>(), stream_);
        scratch.hold(W, true);
      }
      w16 = buf.as<uint16_t>();
    }
    // A [M, K] rounded to F16, contiguous, after scaling by a power of two that brings its
    // largest magnitude to [2^13, 2^14): F16 then keeps 28 binary orders below it at full
    // precision. Unscaled, a long window's gradients (~1e-6 to 1e-8: the loss is a mean
    // over thousands of tokens) would be F16 subnormals or zeros, and outliers past 65504
    // infinities — what PyTorch's GradScaler guards against with its loss scale. The
    // product is then multiplied by alpha / scale (exact: powers of two). The scale is found
    // and applied on the device (max |A|, then one thread's arithmetic; the GEMM reads alpha
    // and beta from device memory): no wait for the host between products.
    if (partials_.empty()) partials_ = buffer(2 * kPartialBlocks);
    if (scalars_.empty()) scalars_ = buffer(4);
    const int blocks = kernels::train_max_abs(A, int(M), int(K), int(lda), partials_.as<float>(), kPartialBlocks, stream_);
    kernels::train_f16_scalars(partials_.as<float>(), blocks, alpha, beta, scalars_.as<float>(), stream_);
    if (a16_.empty() || a16_.numel() * 2 < M * K) a16_ = buffer((M * K + 1) / 2);
    kernels::train_f32_to_f16(A, int(M), int(K), int(lda), a16_.as<uint16_t>(), stream_, scalars_.as<float>());
    kernels::train_gemm_f16(blas_, false, trans_w, int(M), int(N), int(K), scalars_.as<float>() + 1, a16_.data(), int(K),
                            w16, int(f.in), C, int(ldc));
  }
  void gemm(bool trans_a, bool trans_b, size_t M, size_t N, size_t K, float alpha, const float* A, size_t lda,
            const float* B, size_t ldb, float beta, float* C, size_t ldc) override {
    select();
    kernels::train_gemm(blas_, trans_a, trans_b, int(M), int(N), int(K), alpha, A, int(lda), B, int(ldb), beta, C,
                        int(ldc));
  }
  void rmsnorm_forward(const float* x, const float* w, size_t T, size_t H, float eps, float* y, float* rinv) override {
    select();
    kernels::train_rmsnorm_forward(x, w, int(T), int(H), eps, y, rinv, stream_);
  }
  void rmsnorm_backward(const float* x, const float* w, const float* rinv, const float* dy, size_t T, size_t H,
                        float* dx) override {
    select();
    kernels::train_rmsnorm_backward(x, w, rinv, dy, int(T), int(H), dx, stream_);
  }
  void set_rope(const train::RopeTables& t) override {
    rope_half_ = t.half;
    rope_rows_ = t.half ? t.cos.size() / t.half : 0;
    if (rope_cos_.empty() || rope_cos_.numel() < t.cos.size()) {
      rope_cos_ = buffer(t.cos.size());
      rope_sin_ = buffer(t.sin.size());
    }
    upload(t.cos.data(), t.cos.size() * sizeof(float), rope_cos_.data());
    upload(t.sin.data(), t.sin.size() * sizeof(float), rope_sin_.data());
  }
  void rope_apply(float* x, size_t T, size_t stride, size_t heads, size_t d, bool inverse) override {
    select();
    if (T > rope_rows_ || d / 2 != rope_half_)
      throw Error(fmt::format("cuda training rope: {} rows of {} dims, tables for {} rows of {}", T, d, rope_rows_,
                              2 * rope_half_));
    kernels::train_rope(x, int(T), int(stride), int(heads), int(d), rope_cos_.as<float>(), rope_sin_.as<float>(), inverse,
                        stream_);
  }
  // F16 mode: attention's products on the tensor cores in TF32 (train_attention.h); F32
  // mode: train.cu's F32 kernels, the CPU's numerics (and the tensor-core path's twin).
  void attention_forward(const float* q, const float* k, const float* v, size_t T, size_t nh, size_t nkv, size_t d,
                         size_t window, float* out, float* lse) override {
    select();
    if (compute_ == train::BaseCompute::F16) return attention_.forward(q, k, v, T, nh, nkv, d, window, out, lse);
    kernels::train_attention_forward(q, k, v, int(T), int(nh), int(nkv), int(d), int(window), out, lse, stream_);
  }
  void attention_backward(const float* q, const float* k, const float* v, const float* out, const float* dout,
                          const float* lse, size_t T, size_t nh, size_t nkv, size_t d, size_t window, float* dq, float* dk,
                          float* dv) override {
    select();
    if (D_.empty() || D_.numel() < nh * T) D_ = buffer(nh * T);
    if (compute_ == train::BaseCompute::F16)
      return attention_.backward(q, k, v, out, dout, lse, T, nh, nkv, d, window, D_.as<float>(), dq, dk, dv);
    kernels::train_attention_backward(q, k, v, out, dout, lse, int(T), int(nh), int(nkv), int(d), int(window),
                                      D_.as<float>(), dq, dk, dv, stream_);
  }
  void set_attention_block_rows(size_t rows) override { attention_.set_block_rows(rows); }
  void set_attention_fused(bool fused) override { attention_.set_fused(fused); }
  void silu_mul_forward(const float* g, const float* u, size_t n, float* out) override {
    select();
    kernels::train_silu_mul_forward(g, u, n, out, stream_);
  }
  void silu_mul_backward(const float* g, const float* u, const float* dout, size_t n, float* dg, float* du) override {
    select();
    kernels::train_silu_mul_backward(g, u, dout, n, dg, du, stream_);
  }
  void add(const float* a, const float* b, size_t n, float* out) override {
    select();
    kernels::train_add(a, b, n, out, stream_);
  }
  void dropout(const float* x, size_t n, uint64_t seed, float p, float* out) override {
    select();
    kernels::train_dropout(x, n, seed, train::drop_threshold(p), 1.0f / (1.0f - p), out, stream_);
  }
  void add_dropped(const float* dxd, size_t n, uint64_t seed, float p, float* dx) override {
    select();
    const bool drop = p > 0;
    kernels::train_add_dropped(dxd, n, seed, train::drop_threshold(p), drop ? 1.0f / (1.0f - p) : 1.0f, drop, dx,
                               stream_);
  }
  double cross_entropy(float* logits, const int32_t* labels, size_t rows, size_t V, float scale) override {
    select();
    upload_ints(labels, rows);
    if (row_loss_.empty() || row_loss_.numel() < 2 * rows) row_loss_ = buffer(2 * rows);  // doubles
    kernels::train_cross_entropy(logits, ints_.as<int32_t>(), int(rows), int(V), scale,
                                 reinterpret_cast<double*>(row_loss_.data()), stream_);
    std::vector<double> loss(rows);
    download(row_loss_.data(), rows * sizeof(double), loss.data());
    double total = 0;  // in row order, as the CPU sums
    for (double l : loss) total += l;
    return total;
  }
  double sum_squares(const float* x, size_t n) override {
    select();
    if (partials_.empty()) partials_ = buffer(2 * kPartialBlocks);
    auto* partial = reinterpret_cast<double*>(partials_.data());
    const int blocks = kernels::train_sum_squares(x, n, partial, kPartialBlocks, stream_);
    std::vector<double> sums(static_cast<size_t>(blocks));
    download(partial, sums.size() * sizeof(double), sums.data());
    double total = 0;  // in block order: the same total every run
    for (double v : sums) total += v;
    return total;
  }
  void scale(float* x, size_t n, float s) override {
    select();
    kernels::train_scale(x, n, s, stream_);
  }
  void adamw(float* p, const float* g, float* m, float* v, size_t n, const train::AdamWScalars& s) override {
    select();
    kernels::train_adamw(p, g, m, v, n, s, stream_);
  }
  void synchronize() override {
    select();
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

 private:
  void select() const { check(cudaSetDevice(device_.index), "cudaSetDevice"); }
  void upload_ints(const int32_t* v, size_t n) {
    if (ints_.empty() || ints_.numel() < n) ints_ = Tensor(device_, DType::I32, 1, std::max<size_t>(2 * n, 64));
    upload(v, n * sizeof(int32_t), ints_.data());
  }
  Device device_;
  CudaDeviceInfo info_;
  BlasStream bs_;
  cudaStream_t stream_ = bs_.stream();
  cublasHandle_t blas_ = bs_.blas();
  TrainAttention attention_{device_, stream_, blas_};
  Tensor codes_;                 // NF4's 16 code values
  Tensor rope_cos_, rope_sin_;   // [T, d/2] of the sequence in progress
  size_t rope_half_ = 0, rope_rows_ = 0;
  Tensor D_;                     // attention backward's dO·O per (head, row)
  Tensor ints_;                  // token ids or labels
  Tensor row_loss_;              // cross-entropy's per-row losses (doubles)
  // sum_squares' (doubles) and max_abs' (floats) per-block partials: enough blocks to fill a
  // GPU's SMs, few enough for the host to add them (finetune_plan.cpp counts 2 · 264 floats).
  static constexpr int kPartialBlocks = 264;
  Tensor partials_;
  train::BaseCompute compute_;
  Tensor a16_;                   // base_gemm's activations in F16
  Tensor scalars_;               // base_gemm's F16 scale, alpha / scale and beta (device)
  cudaStream_t copy_stream_ = nullptr;  // copy_behind's (created at the first copy)
  cudaEvent_t queued_ = nullptr;        // the compute queued before a copy
  std::array<cudaEvent_t, 8> copied_{};  // copy t done: copied_[t % 8]
  uint64_t copies_ = 0;
};

}  // namespace

std::unique_ptr<train::TrainDevice> make_train_device(int device, train::BaseCompute compute) {
  return std::make_unique<CudaTrainDevice>(device, compute);
}

}  // namespace pivotmt::cuda
