// The device seam of training: LoraLlama is written once over TrainDevice, whose CPU
// implementation runs train_ops.h's functions (the reference loops or the fast kernels)
// and whose CUDA implementation (backends/cuda/train_device.cpp, train.cu) runs the same
// contracts as kernels and cuBLAS F32 GEMMs. Buffers are device memory (host memory on the
// CPU); pointers below point into the device's memory unless they say "host".
//
// Shapes and accumulation rules are train_ops.h's: T rows of one sequence, backward
// functions add into their input gradients.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "backends/ops.h"
#include "backends/tensor.h"
#include "core/device.h"
#include "train/frozen_matrix.h"
#include "train/optimizer.h"
#include "train/train_ops.h"

namespace pivotmt::train {

// A frozen base matrix on the device, in its storage format (never a full F32 or F16 copy
// beside it: NF4 stays NF4 until a GEMM needs it).
class DeviceFrozen {
 public:
  virtual ~DeviceFrozen() = default;
  size_t out = 0, in = 0;
  size_t bytes = 0;  // device memory it takes
};

// Where a frozen matrix is converted for its products (dequantised to F32, or to F16 for a
// GPU's F16 products), remembering what it holds: consecutive products by one matrix (the
// MLP's row blocks) convert it once. Only weight_f32 and base_gemm write into it.
struct WeightScratch {
  Tensor buffer;
  const DeviceFrozen* holds = nullptr;  // the matrix converted into buffer, if any
  bool holds_f16 = false;               // ... as F16 (else F32)
  bool has(const DeviceFrozen& w, bool f16) const { return holds == &w && holds_f16 == f16; }
  void hold(const DeviceFrozen& w, bool f16) {
    holds = &w;
    holds_f16 = f16;
  }
};

class TrainDevice {
 public:
  virtual ~TrainDevice() = default;
  virtual Device device() const = 0;
  virtual std::string describe() const = 0;
  Tensor buffer(size_t n) const { return Tensor(device(), DType::F32, 1, n == 0 ? 1 : n); }

  virtual void upload(const void* host, size_t bytes, void* dst) = 0;
  virtual void download(const void* src, size_t bytes, void* host) = 0;
  virtual void zero(float* p, size_t n) = 0;
  virtual void copy(const float* src, size_t n, float* dst) = 0;

  // The matrix on the device (the CPU refers to `m`, which must outlive the result).
  virtual std::unique_ptr<DeviceFrozen> frozen(const FrozenMatrix& m) = 0;
  // W [out, in] as F32: its own values (F32 storage) or converted / dequantised into
  // `scratch` (grown as needed; not again while it holds W), one matrix at a time.
  virtual const float* weight_f32(const DeviceFrozen& w, WeightScratch& scratch) = 0;
  // out [T, in] = rows ids (host) of an F32 table.
  virtual void embed_rows(const DeviceFrozen& table, const int32_t* ids, size_t T, float* out) = 0;
  // C [M, N] = alpha · A · op(W) + beta · C with W a frozen base matrix [out, in] (op(W) = Wᵀ
  // when trans_w: y = x Wᵀ; else W: dx = dy W). This implementation converts W to F32 and
  // multiplies in F32 (the CPU; a GPU in F32 mode); a GPU in F16 mode rounds A and W to F16
  // and accumulates in F32 on the tensor cores, as bitsandbytes + PEFT compute QLoRA.
  virtual void base_gemm(bool trans_w, size_t M, size_t N, size_t K, float alpha, const float* A, size_t lda,
                         const DeviceFrozen& W, float beta, float* C, size_t ldc, WeightScratch& scratch) {
    gemm(false, trans_w, M, N, K, alpha, A, lda, weight_f32(W, scratch), W.in, beta, C, ldc);
  }

  virtual void gemm(bool trans_a, bool trans_b, size_t M, size_t N, size_t K, float alpha, const float* A, size_t lda,
                    const float* B, size_t ldb, float beta, float* C, size_t ldc) = 0;
  virtual void rmsnorm_forward(const float* x, const float* w, size_t T, size_t H, float eps, float* y, float* rinv) = 0;
  virtual void rmsnorm_backward(const float* x, const float* w, const float* rinv, const float* dy, size_t T, size_t H,
                                float* dx) = 0;
  // The tables rope_apply uses until the next call (a sequence's positions).
  virtual void set_rope(const RopeTables& tables) = 0;
  virtual void rope_apply(float* x, size_t T, size_t stride, size_t heads, size_t d, bool inverse) = 0;
  virtual void attention_forward(const float* q, const float* k, const float* v, size_t T, size_t nh, size_t nkv,
                                 size_t d, size_t window, float* out, float* lse) = 0;
  virtual void attention_backward(const float* q, const float* k, const float* v, const float* out, const float* dout,
                                  const float* lse, size_t T, size_t nh, size_t nkv, size_t d, size_t window, float* dq,
                                  float* dk, float* dv) = 0;
  virtual void silu_mul_forward(const float* g, const float* u, size_t n, float* out) = 0;
  virtual void silu_mul_backward(const float* g, const float* u, const float* dout, size_t n, float* dg, float* du) = 0;
  virtual void add(const float* a, const float* b, size_t n, float* out) = 0;  // out = a + b
  // out = x / (1 − p) where dropout_mask.h's mask of `seed` keeps, else 0.
  virtual void dropout(const float* x, size_t n, uint64_t seed, float p, float* out) = 0;
  // dx += dxd, or with dropout (p > 0) dx += dxd / (1 − p) where the mask keeps.
  virtual void add_dropped(const float* dxd, size_t n, uint64_t seed, float p, float* dx) = 0;
  // train::cross_entropy over device logits [rows, V] and host labels: the summed loss;
  // the logits replaced by d(scale · loss)/d(logits).
  virtual double cross_entropy(float* logits, const int32_t* labels, size_t rows, size_t V, float scale) = 0;

  // The optimiser, where the adapter lives (no copy of parameters or gradients through the
  // host per step). Σ x² in double (a global gradient norm's part), returned to the host:
  virtual double sum_squares(const float* x, size_t n) = 0;
  virtual void scale(float* x, size_t n, float s) = 0;  // x *= s (gradient clipping)
  // optimizer.h's adamw_update over n elements of parameters, gradients and moments.
  virtual void adamw(float* p, const float* g, float* m, float* v, size_t n, const AdamWScalars& s) = 0;
  virtual void synchronize() {}

  // Offloading to host memory beside the compute (a GPU: pinned memory, copies over PCIe
  // on a second stream while kernels run). The CPU has nothing to offload to: offloads()
  // is false and the rest refuses.
  virtual bool offloads() const { return false; }
  // n floats of host memory the copies below reach at full speed (pinned).
  virtual std::shared_ptr<float> pinned_floats(size_t n);
  // Copies `bytes` from src to dst — device memory to pinned host memory (to_host) or back —
  // once the work queued so far is done, beside the work queued after. Returns a ticket.
  virtual uint64_t copy_behind(const void* src, void* dst, size_t bytes, bool to_host);
  // The work queued from now on waits for the copy `ticket` (and every copy before it).
  virtual void wait_copy(uint64_t ticket);
  // Query rows a block of a GPU's tensor-core attention (cuda/train_attention.h) — the tests
  // use a few to run several blocks on short sequences; no effect elsewhere.
  virtual void set_attention_block_rows(size_t) {}
  // Whether that attention may use its fused kernels (head dims 64 and 128; on by default):
  // off, every head dim runs the blocks of GEMMs — the fused kernels' twin in the tests and
  // their baseline in bench_train.
  virtual void set_attention_fused(bool) {}
};

// How a GPU multiplies by the frozen base: F16 inputs with F32 accumulation (the tensor
// cores; QLoRA's usual numerics) or F32 throughout (the CPU's numerics, ~15x slower).
enum class BaseCompute { F16, F32 };
BaseCompute parse_base_compute(const std::string& s);  // "f16" | "f32"

// The CPU's (`kernels`: the reference loops or the fast kernels) or a GPU's training ops.
std::unique_ptr<TrainDevice> make_train_device(const Device& device, Kernels kernels = Kernels::Fast,
                                               BaseCompute compute = BaseCompute::F16);

}  // namespace pivotmt::train

namespace pivotmt::cuda {
std::unique_ptr<train::TrainDevice> make_train_device(int device, train::BaseCompute compute);
}
