// Elementwise transcendental loops of the CPU kernels (internal to the CPU backend):
// e^x for the softmax of attention and for SiLU, 16 lanes at a time with AVX-512 where the
// CPU has it (libm's expf, one call per element, was 17% of a long-prompt ablation's time),
// std::exp otherwise. The vector e^x is within 2 ulp of std::exp (tested), so results move
// only in the last bits and stay independent of batching (the same function per element).
#pragma once
#include <cstddef>

namespace pivotmt::cpu::vmath {

// The largest of x[0..n) (n > 0).
float max_of(const float* x, size_t n);

// x[i] = e^(x[i] - shift) for i < n; returns the sum of the new values.
float exp_shifted_sum(float* x, size_t n, float shift);

// out[i] = silu(gate[i]) · up[i] = gate[i] / (1 + e^-gate[i]) · up[i] for i < n.
void silu_mul(const float* gate, const float* up, size_t n, float* out);

// x[i] = 0.5 · x[i] · (1 + erf(x[i] / √2)) for i < n (exact GELU), in place. The vector
// form evaluates 0.5 · x · erfc(−x / √2) with the Chebyshev-fitted erfc of Numerical
// Recipes (relative error below 1.2e-7 on the whole line), so it stays accurate where
// 1 + erf cancels (large negative x).
void gelu(float* x, size_t n);

// One row of LayerNorm in place: (x − mean) / sqrt(var + eps) · w + b, var biased.
void layer_norm_row(float* x, size_t n, const float* w, const float* b, float eps);

// One row of RMSNorm: y[i] = w[i] · (x[i] / sqrt(mean(x²) + eps)).
void rms_norm_row(const float* x, size_t n, const float* w, float eps, float* y);

// x[i] += y[i] for i < n.
void add(float* x, const float* y, size_t n);

// Rotate-half RoPE of one head of 2·half values in place: (a, b) = (v[i], v[i + half]) to
// (a·c[i] − b·s[i], b·c[i] + a·s[i]).
void rope_head(float* v, size_t half, const float* c, const float* s);

// The portable loops above are built on (and tested against): std::exp per element.
float max_of_scalar(const float* x, size_t n);
float exp_shifted_sum_scalar(float* x, size_t n, float shift);
void silu_mul_scalar(const float* gate, const float* up, size_t n, float* out);
void gelu_scalar(float* x, size_t n);  // std::erf
void layer_norm_row_scalar(float* x, size_t n, const float* w, const float* b, float eps);
void rms_norm_row_scalar(const float* x, size_t n, const float* w, float eps, float* y);
void add_scalar(float* x, const float* y, size_t n);
void rope_head_scalar(float* v, size_t half, const float* c, const float* s);

}  // namespace pivotmt::cpu::vmath
