// The CPU operations of training (forward with what backward needs, and backward) for
// the Llama family, F32. Each has a plain reference (loops, obviously correct) and a fast
// path (OpenBLAS SGEMM for every matrix product); tests/test_train_ops.cpp checks the fast
// against the reference and both against finite differences.
//
// Shapes: T rows (tokens of one sequence), row-major; q [T, nh*d], k and v [T, nkv*d].
// Backward functions ADD into their input gradients (dx +=), so contributions from several
// paths (residuals, fused projections) accumulate without temporaries.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace pivotmt::train {

enum class Kernels { Reference, Fast };

// C[M, N] = alpha * op(A) op(B) + beta * C, op(X) = X or Xᵀ (row-major, leading dims).
void gemm(Kernels k, bool trans_a, bool trans_b, size_t M, size_t N, size_t K, float alpha, const float* A,
          size_t lda, const float* B, size_t ldb, float beta, float* C, size_t ldc);

// y = w * x / sqrt(mean(x²) + eps) per row of [T, H] (Hugging Face's LlamaRMSNorm in F32);
// rinv[T] keeps 1 / sqrt(mean + eps) for backward.
void rmsnorm_forward(const float* x, const float* w, size_t T, size_t H, float eps, float* y, float* rinv);
void rmsnorm_backward(const float* x, const float* w, const float* rinv, const float* dy, size_t T, size_t H, float* dx);

// cos / sin [T, d/2] at the positions (freq = position * inv_freq in F32, as transformers).
struct RopeTables {
  size_t half = 0;
  std::vector<float> cos, sin;
};
RopeTables rope_tables(const std::vector<float>& inv_freq, size_t T, size_t first_position = 0);
// Rotate-half RoPE in place on `heads` heads of each row (rows `stride` floats apart);
// inverse = true applies the transposed rotation (the backward of the forward).
void rope_apply(float* x, size_t T, size_t stride, size_t heads, size_t d, const RopeTables& t, bool inverse);

// Causal attention of one sequence: out [T, nh*d]; lse [nh, T] the log-sum-exp of each
// query's scaled scores (backward recomputes the probabilities from it). window > 0: a
// query at i sees keys j with i - j < window (Mistral).
void attention_forward(Kernels k, const float* q, const float* kk, const float* v, size_t T, size_t nh, size_t nkv,
                       size_t d, size_t window, float* out, float* lse);
void attention_backward(Kernels k, const float* q, const float* kk, const float* v, const float* out,
                        const float* dout, const float* lse, size_t T, size_t nh, size_t nkv, size_t d, size_t window,
                        float* dq, float* dk, float* dv);

// out = silu(g) * u, [T, F] each; backward adds into dg, du.
void silu_mul_forward(const float* g, const float* u, size_t n, float* out);
void silu_mul_backward(const float* g, const float* u, const float* dout, size_t n, float* dg, float* du);

// Cross-entropy of logits rows [rows, V] against labels (-100: ignored). Returns the summed
// loss (F32 logits, the sum in double); replaces the logits by d(scale * loss)/d(logits).
double cross_entropy(float* logits, const int32_t* labels, size_t rows, size_t V, float scale);

}  // namespace pivotmt::train
