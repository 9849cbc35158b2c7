// Causal attention for training on the tensor cores (a GPU in --base-compute f16): the
// scores and their gradients as strided-batched cuBLAS GEMMs in TF32 (F32's range, 10-bit
// mantissas, F32 sums), a block of query rows at a time so that the probabilities of every
// head for that block — [heads, rows, keys] — are the only quadratic buffer.
//
// With head dims 64 and 128 (every model of the study) the forward and the backward are
// fused kernels instead (train_attention.cu: FlashAttention-2's tiles on mma.sync, no score
// matrix in memory, none of the buffers below); other head dims run the blocks below.
//
// Per block of rows [r0, r1) and the keys [k0, r1) any of them sees (k0 > 0 under a sliding
// window): S = scale Q Kᵀ, P = exp(S − lse) masked (the forward computes lse), O = P V;
// backward recomputes P, then dP = dO Vᵀ, dS = P ⊙ (dP − rowsum(dO ⊙ O)), dQ += scale dS K,
// dK += scale dSᵀ Q, dV += Pᵀ dO — train_ops.cpp's contract, which the F32 kernels of
// train.cu (the CPU's numerics) also keep. Every GEMM input is rounded to TF32 first
// (train_attention.cu says why). The query heads of a GQA group are one batched GEMM per
// member, batched over the key-value heads.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>

#include "backends/tensor.h"
#include "core/device.h"

namespace pivotmt::cuda {

class TrainAttention {
 public:
  TrainAttention(const Device& device, cudaStream_t stream, cublasHandle_t blas)
      : device_(device), stream_(stream), blas_(blas) {}
  // Query rows a block (at most; fewer for shorter sequences). The buffers then hold
  // 2 · heads · rows · T' floats (scores, their gradients; T' = T rounded up to 8) and
  // 2 · rows · heads · d (the block's rounded queries and output gradients) beside the keys
  // and values rounded (2 · T · kv heads · d); finetune_plan.cpp counts them.
  static constexpr size_t kBlockRows = 128;
  void set_block_rows(size_t rows) { block_rows_ = rows ? rows : 1; }
  // Off: the blocks below for every head dim (the fused kernels' twin and baseline).
  void set_fused(bool fused) { fused_ = fused; }

  void forward(const float* q, const float* k, const float* v, size_t T, size_t nh, size_t nkv, size_t d, size_t window,
               float* out, float* lse);
  // D: scratch [nh, T] (the rows' dO · O).
  void backward(const float* q, const float* k, const float* v, const float* out, const float* dout, const float* lse,
                size_t T, size_t nh, size_t nkv, size_t d, size_t window, float* D, float* dq, float* dk, float* dv);

 private:
  // One call's sizes (heads checked): GQA group, query and key-value row widths, rows a
  // block, 1/√d.
  struct Sizes {
    size_t group, qd, kvd, rows;
    float scale;
  };
  Sizes sizes(size_t T, size_t nh, size_t nkv, size_t d) const;
  // The keys' and values' TF32 roundings; the block size for T rows.
  void round_keys_values(const float* k, const float* v, size_t T, size_t kvd);
  size_t rows_for(size_t T) const { return T < block_rows_ ? T : block_rows_; }
  float* grow(Tensor& t, size_t n);
  // Row-major C_b [M, N] = alpha op(A_b) op(B_b) + beta C_b over `batch` items X_b = X + b sx.
  void batched(bool ta, bool tb, size_t M, size_t N, size_t K, float alpha, const float* A, size_t lda, size_t sa,
               const float* B, size_t ldb, size_t sb, float beta, float* C, size_t ldc, size_t sc, size_t batch);

  Device device_;
  cudaStream_t stream_;
  cublasHandle_t blas_;
  size_t block_rows_ = kBlockRows;
  bool fused_ = true;
  Tensor keys_, values_;        // [T, nkv d] TF32-rounded
  Tensor queries_, dout_;       // a block's [rows, nh d] TF32-rounded
  Tensor scores_, gradients_;   // a block's [nh, rows, keys]: S then P; dP then dS
};

}  // namespace pivotmt::cuda
