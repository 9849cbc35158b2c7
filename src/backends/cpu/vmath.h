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

// The portable loops above are built on (and tested against): std::exp per element.
float max_of_scalar(const float* x, size_t n);
float exp_shifted_sum_scalar(float* x, size_t n, float shift);
void silu_mul_scalar(const float* gate, const float* up, size_t n, float* out);

}  // namespace pivotmt::cpu::vmath
