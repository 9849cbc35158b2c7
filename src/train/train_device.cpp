// TrainDevice on the CPU: train_ops.h's functions on host memory (what LoraLlama ran before
// the seam, call for call, so the CPU's results are unchanged).
#include "train/train_device.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "backends/cpu/thread_pool.h"
#include "core/error.h"
#include "train/dropout_mask.h"

namespace pivotmt::train {
namespace {

class CpuFrozen final : public DeviceFrozen {
 public:
  const FrozenMatrix* m = nullptr;
};

class CpuTrainDevice final : public TrainDevice {
 public:
  explicit CpuTrainDevice(Kernels k) : k_(k) {}
  Device device() const override { return Device{}; }
  std::string describe() const override {
    return k_ == Kernels::Fast ? "cpu (fast kernels)" : "cpu (reference kernels)";
  }
  void upload(const void* host, size_t bytes, void* dst) override { std::memcpy(dst, host, bytes); }
  void download(const void* src, size_t bytes, void* host) override { std::memcpy(host, src, bytes); }
  void zero(float* p, size_t n) override { std::fill(p, p + n, 0.0f); }
  void copy(const float* src, size_t n, float* dst) override { std::copy(src, src + n, dst); }

  std::unique_ptr<DeviceFrozen> frozen(const FrozenMatrix& m) override {
    auto f = std::make_unique<CpuFrozen>();
    f->m = &m;
    f->out = m.out;
    f->in = m.in;
    f->bytes = m.bytes();
    return f;
  }
  const float* weight_f32(const DeviceFrozen& w, WeightScratch& scratch) override {
    const FrozenMatrix& m = *static_cast<const CpuFrozen&>(w).m;
    if (m.storage == BaseWeights::F32) return m.f32.data();
    if (scratch.has(w, false)) return scratch.buffer.as<float>();
    if (scratch.buffer.empty() || scratch.buffer.numel() < m.out * m.in) scratch.buffer = buffer(m.out * m.in);
    m.rows_f32(0, m.out, scratch.buffer.as<float>());
    scratch.hold(w, false);
    return scratch.buffer.as<float>();
  }
  void embed_rows(const DeviceFrozen& table, const int32_t* ids, size_t T, float* out) override {
    const FrozenMatrix& m = *static_cast<const CpuFrozen&>(table).m;
    for (size_t t = 0; t < T; ++t) m.rows_f32(size_t(ids[t]), size_t(ids[t]) + 1, out + t * m.in);
  }

  void gemm(bool trans_a, bool trans_b, size_t M, size_t N, size_t K, float alpha, const float* A, size_t lda,
            const float* B, size_t ldb, float beta, float* C, size_t ldc) override {
    train::gemm(k_, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  void rmsnorm_forward(const float* x, const float* w, size_t T, size_t H, float eps, float* y, float* rinv) override {
    train::rmsnorm_forward(x, w, T, H, eps, y, rinv);
  }
  void rmsnorm_backward(const float* x, const float* w, const float* rinv, const float* dy, size_t T, size_t H,
                        float* dx) override {
    train::rmsnorm_backward(x, w, rinv, dy, T, H, dx);
  }
  void set_rope(const RopeTables& tables) override { rope_ = tables; }
  void rope_apply(float* x, size_t T, size_t stride, size_t heads, size_t d, bool inverse) override {
    train::rope_apply(x, T, stride, heads, d, rope_, inverse);
  }
  void attention_forward(const float* q, const float* k, const float* v, size_t T, size_t nh, size_t nkv, size_t d,
                         size_t window, float* out, float* lse) override {
    train::attention_forward(k_, q, k, v, T, nh, nkv, d, window, out, lse);
  }
  void attention_backward(const float* q, const float* k, const float* v, const float* out, const float* dout,
                          const float* lse, size_t T, size_t nh, size_t nkv, size_t d, size_t window, float* dq, float* dk,
                          float* dv) override {
    train::attention_backward(k_, q, k, v, out, dout, lse, T, nh, nkv, d, window, dq, dk, dv);
  }
  void silu_mul_forward(const float* g, const float* u, size_t n, float* out) override {
    train::silu_mul_forward(g, u, n, out);
  }
  void silu_mul_backward(const float* g, const float* u, const float* dout, size_t n, float* dg, float* du) override {
    train::silu_mul_backward(g, u, dout, n, dg, du);
  }
  void add(const float* a, const float* b, size_t n, float* out) override {
    cpu::parallel_for(n, [&](size_t i0, size_t i1) {
      for (size_t i = i0; i < i1; ++i) out[i] = a[i] + b[i];
    });
  }
  void dropout(const float* x, size_t n, uint64_t seed, float p, float* out) override {
    const uint32_t threshold = drop_threshold(p);
    const float s = 1.0f / (1.0f - p);
    cpu::parallel_for(n, [&](size_t i0, size_t i1) {
      for (size_t i = i0; i < i1; ++i) out[i] = keep(seed, i, threshold) ? x[i] * s : 0.0f;
    });
  }
  void add_dropped(const float* dxd, size_t n, uint64_t seed, float p, float* dx) override {
    const bool drop = p > 0;
    const uint32_t threshold = drop_threshold(p);
    const float s = drop ? 1.0f / (1.0f - p) : 1.0f;
    cpu::parallel_for(n, [&](size_t i0, size_t i1) {
      for (size_t i = i0; i < i1; ++i)
        if (!drop || keep(seed, i, threshold)) dx[i] += dxd[i] * s;
    });
  }
  double cross_entropy(float* logits, const int32_t* labels, size_t rows, size_t V, float scale) override {
    return train::cross_entropy(logits, labels, rows, V, scale);
  }
  double sum_squares(const float* x, size_t n) override {
    double s = 0;
    for (size_t i = 0; i < n; ++i) s += double(x[i]) * x[i];
    return s;
  }
  void scale(float* x, size_t n, float s) override {
    for (size_t i = 0; i < n; ++i) x[i] *= s;
  }
  void adamw(float* p, const float* g, float* m, float* v, size_t n, const AdamWScalars& s) override {
    adamw_update(p, g, m, v, n, s);
  }

 private:
  Kernels k_;
  RopeTables rope_;
};

}  // namespace

std::shared_ptr<float> TrainDevice::pinned_floats(size_t) {
  throw Error(fmt::format("{}: no host memory to offload to", describe()));
}
uint64_t TrainDevice::copy_behind(const void*, void*, size_t, bool) {
  throw Error(fmt::format("{}: no copies beside the compute", describe()));
}
void TrainDevice::wait_copy(uint64_t) { throw Error(fmt::format("{}: no copies beside the compute", describe())); }

BaseCompute parse_base_compute(const std::string& s) {
  if (s == "f16") return BaseCompute::F16;
  if (s == "f32") return BaseCompute::F32;
  throw Error(fmt::format("base compute '{}': expected f16 or f32", s));
}

std::unique_ptr<TrainDevice> make_train_device(const Device& device, Kernels kernels, BaseCompute compute) {
  if (device.kind == DeviceKind::CUDA) return cuda::make_train_device(device.index, compute);
  return std::make_unique<CpuTrainDevice>(kernels);
}

}  // namespace pivotmt::train
