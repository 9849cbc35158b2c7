#include "backends/cuda/train_attention.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "backends/cuda/cublas_loader.h"
#include "backends/cuda/cuda_util.h"
#include "backends/cuda/kernels.h"
#include "core/error.h"

namespace pivotmt::cuda {
namespace {

// The first key position any row of the block [r0, ...) sees.
size_t first_key(size_t r0, size_t window) { return window > 0 && r0 + 1 > window ? r0 + 1 - window : 0; }

// The scores' row stride for `keys` keys: 8 floats' multiples keep every row and head block
// 32-byte aligned, which cuBLAS's tensor-core kernels want of their operands.
size_t score_ld(size_t keys) { return (keys + 7) / 8 * 8; }

}  // namespace

float* TrainAttention::grow(Tensor& t, size_t n) {
  if (t.empty() || t.numel() < n) t = Tensor(device_, DType::F32, 1, n == 0 ? 1 : n);
  return t.as<float>();
}

void TrainAttention::batched(bool ta, bool tb, size_t M, size_t N, size_t K, float alpha, const float* A, size_t lda,
                             size_t sa, const float* B, size_t ldb, size_t sb, float beta, float* C, size_t ldc,
                             size_t sc, size_t batch) {
  if (M == 0 || N == 0 || batch == 0) return;
  // Row-major C = op(A) op(B) is column-major Cᵀ = op(B)ᵀ op(A)ᵀ (as kernels::train_gemm).
  check_cublas(cublas().gemm_strided_batched_ex(blas_, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                                int(N), int(M), int(K), &alpha, B, CUDA_R_32F, int(ldb),
                                                static_cast<long long>(sb), A, CUDA_R_32F, int(lda),
                                                static_cast<long long>(sa), &beta, C, CUDA_R_32F, int(ldc),
                                                static_cast<long long>(sc), int(batch), CUBLAS_COMPUTE_32F_FAST_TF32,
                                                CUBLAS_GEMM_DEFAULT),
               "cublasGemmStridedBatchedEx (training attention, TF32)");
}

TrainAttention::Sizes TrainAttention::sizes(size_t T, size_t nh, size_t nkv, size_t d) const {
  if (nkv == 0 || nh % nkv) throw Error(fmt::format("cuda training attention: {} heads over {} key-value heads", nh, nkv));
  return {nh / nkv, nh * d, nkv * d, rows_for(T), 1.0f / std::sqrt(float(d))};
}

void TrainAttention::round_keys_values(const float* k, const float* v, size_t T, size_t kvd) {
  kernels::train_tf32_round(k, int(T), int(kvd), int(kvd), grow(keys_, T * kvd), stream_);
  kernels::train_tf32_round(v, int(T), int(kvd), int(kvd), grow(values_, T * kvd), stream_);
}

void TrainAttention::forward(const float* q, const float* k, const float* v, size_t T, size_t nh, size_t nkv, size_t d,
                             size_t window, float* out, float* lse) {
  if (T == 0) return;
  const auto [group, qd, kvd, R, scale] = sizes(T, nh, nkv, d);
  // Head dims 64 and 128 (every model of the study): the fused kernel, no scores in memory.
  if (fused_ && kernels::train_attention_fused_supported(int(nh), int(nkv), int(d), q, k, v, out))
    return kernels::train_attention_fused_forward(q, k, v, int(T), int(nh), int(nkv), int(d), int(window), out, lse,
                                                  stream_);
  round_keys_values(k, v, T, kvd);
  float* Q = grow(queries_, R * qd);
  float* S = grow(scores_, nh * R * score_ld(T));
  const float *K = keys_.as<float>(), *Vr = values_.as<float>();
  for (size_t r0 = 0; r0 < T; r0 += R) {
    const size_t rows = std::min(R, T - r0), k0 = first_key(r0, window), keys = r0 + rows - k0;
    const size_t ld = score_ld(keys), s_head = rows * ld;  // one head's block of scores
    kernels::train_tf32_round(q + r0 * qd, int(rows), int(qd), int(qd), Q, stream_);
    // Head h = g · group + j: S_h [rows, keys] = scale Q_h K_gᵀ, one GEMM per group member j
    // batched over g (S's heads `group` blocks apart, Q's heads `group` columns apart).
    for (size_t j = 0; j < group; ++j)
      batched(false, true, rows, keys, d, scale, Q + j * d, qd, group * d, K + k0 * kvd, kvd, d, 0.0f, S + j * s_head, ld,
              group * s_head, nkv);
    kernels::train_attention_probabilities(S, int(nh), int(rows), int(keys), int(ld), int(r0), int(k0), int(window),
                                           int(T), nullptr, lse, stream_);
    for (size_t j = 0; j < group; ++j)  // O_h [rows, d] = P_h V_g
      batched(false, false, rows, d, keys, 1.0f, S + j * s_head, ld, group * s_head, Vr + k0 * kvd, kvd, d, 0.0f,
              out + r0 * qd + j * d, qd, group * d, nkv);
  }
}

void TrainAttention::backward(const float* q, const float* k, const float* v, const float* out, const float* dout,
                              const float* lse, size_t T, size_t nh, size_t nkv, size_t d, size_t window, float* D,
                              float* dq, float* dk, float* dv) {
  if (T == 0) return;
  const auto [group, qd, kvd, R, scale] = sizes(T, nh, nkv, d);
  kernels::train_attention_output_dot(dout, out, int(T), int(nh), int(d), D, stream_);
  // Head dims 64 and 128: the fused kernels, no scores in memory and no buffers here.
  if (fused_ && kernels::train_attention_fused_supported(int(nh), int(nkv), int(d), q, k, v, dout))
    return kernels::train_attention_fused_backward(q, k, v, dout, lse, D, int(T), int(nh), int(nkv), int(d),
                                                   int(window), dq, dk, dv, stream_);
  round_keys_values(k, v, T, kvd);
  float* Q = grow(queries_, R * qd);
  float* dO = grow(dout_, R * qd);
  float* S = grow(scores_, nh * R * score_ld(T));
  float* dS = grow(gradients_, nh * R * score_ld(T));
  const float *K = keys_.as<float>(), *Vr = values_.as<float>();
  for (size_t r0 = 0; r0 < T; r0 += R) {
    const size_t rows = std::min(R, T - r0), k0 = first_key(r0, window), keys = r0 + rows - k0;
    const size_t ld = score_ld(keys), s_head = rows * ld;  // one head's block of scores
    kernels::train_tf32_round(q + r0 * qd, int(rows), int(qd), int(qd), Q, stream_);
    kernels::train_tf32_round(dout + r0 * qd, int(rows), int(qd), int(qd), dO, stream_);
    for (size_t j = 0; j < group; ++j) {
      batched(false, true, rows, keys, d, scale, Q + j * d, qd, group * d, K + k0 * kvd, kvd, d, 0.0f, S + j * s_head,
              ld, group * s_head, nkv);  // S = scale Q Kᵀ
      batched(false, true, rows, keys, d, 1.0f, dO + j * d, qd, group * d, Vr + k0 * kvd, kvd, d, 0.0f,
              dS + j * s_head, ld, group * s_head, nkv);  // dP = dO Vᵀ
    }
    kernels::train_attention_probabilities(S, int(nh), int(rows), int(keys), int(ld), int(r0), int(k0), int(window),
                                           int(T), lse, nullptr, stream_);
    kernels::train_attention_score_gradients(S, dS, int(nh), int(rows), int(keys), int(ld), int(r0), int(T), D, stream_);
    for (size_t j = 0; j < group; ++j) {
      // dQ_h [rows, d] += scale dS_h K_g; dK_g [keys, d] += scale dS_hᵀ Q_h; dV_g += P_hᵀ dO_h.
      batched(false, false, rows, d, keys, scale, dS + j * s_head, ld, group * s_head, K + k0 * kvd, kvd, d, 1.0f,
              dq + r0 * qd + j * d, qd, group * d, nkv);
      batched(true, false, keys, d, rows, scale, dS + j * s_head, ld, group * s_head, Q + j * d, qd, group * d, 1.0f,
              dk + k0 * kvd, kvd, d, nkv);
      batched(true, false, keys, d, rows, 1.0f, S + j * s_head, ld, group * s_head, dO + j * d, qd, group * d, 1.0f,
              dv + k0 * kvd, kvd, d, nkv);
    }
  }
}

}  // namespace pivotmt::cuda
