// See vmath.h. e^x by the classic range reduction: x = n·ln2 + r with n = round(x·log2 e)
// and |r| <= ln2 / 2 (ln2 split in a short high part and a correction, so n·ln2 is exact
// enough), e^r by its degree-7 Taylor-like polynomial with Cephes' minimax coefficients,
// then 2^n applied by vscalefps (which also gives the right denormals, zero and infinity).
#include "backends/cpu/vmath.h"

#include <algorithm>
#include <cmath>

#if defined(__x86_64__)
// GCC 12's AVX-512 headers trip its own uninitialised-value warnings (false positives in
// the intrinsics' "undefined" source operands), as in gemm_avx512.cpp.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#endif

#include "backends/cpu/cpu_features.h"

namespace pivotmt::cpu::vmath {

float max_of_scalar(const float* x, size_t n) {
  float m = x[0];
  for (size_t i = 1; i < n; ++i) m = std::max(m, x[i]);
  return m;
}

float exp_shifted_sum_scalar(float* x, size_t n, float shift) {
  float sum = 0.0f;
  for (size_t i = 0; i < n; ++i) sum += (x[i] = std::exp(x[i] - shift));
  return sum;
}

void silu_mul_scalar(const float* gate, const float* up, size_t n, float* out) {
  for (size_t i = 0; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

#if defined(__x86_64__)
namespace {
#define PIVOTMT_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,fma")))

PIVOTMT_AVX512 inline __m512 exp16(__m512 x) {
  // Beyond these e^x is 0 (below the smallest denormal) or +inf; clamping keeps r finite
  // (e^-inf would give NaN through inf - inf) and scalef still rounds to 0 / inf.
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(89.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  const __m512 r2 = _mm512_mul_ps(r, r);
  p = _mm512_fmadd_ps(p, r2, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));  // 1 + r + r²·P(r)
  return _mm512_scalef_ps(p, n);
}

PIVOTMT_AVX512 float max_of_avx512(const float* x, size_t n) {
  __m512 m = _mm512_set1_ps(x[0]);
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 live = i + 16 <= n ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    m = _mm512_mask_max_ps(m, live, m, _mm512_maskz_loadu_ps(live, x + i));
  }
  return _mm512_reduce_max_ps(m);
}

PIVOTMT_AVX512 float exp_shifted_sum_avx512(float* x, size_t n, float shift) {
  const __m512 s = _mm512_set1_ps(shift);
  __m512 sum = _mm512_setzero_ps();
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 live = i + 16 <= n ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(live, x + i), s));
    _mm512_mask_storeu_ps(x + i, live, e);
    sum = _mm512_mask_add_ps(sum, live, sum, e);
  }
  return _mm512_reduce_add_ps(sum);
}

PIVOTMT_AVX512 void silu_mul_avx512(const float* gate, const float* up, size_t n, float* out) {
  const __m512 one = _mm512_set1_ps(1.0f);
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 live = i + 16 <= n ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    const __m512 g = _mm512_maskz_loadu_ps(live, gate + i);
    const __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), g));
    const __m512 silu = _mm512_div_ps(g, _mm512_add_ps(one, e));
    _mm512_mask_storeu_ps(out + i, live, _mm512_mul_ps(silu, _mm512_maskz_loadu_ps(live, up + i)));
  }
}
}  // namespace
#endif

float max_of(const float* x, size_t n) {
#if defined(__x86_64__)
  if (isa() >= Isa::Avx512) return max_of_avx512(x, n);
#endif
  return max_of_scalar(x, n);
}

float exp_shifted_sum(float* x, size_t n, float shift) {
#if defined(__x86_64__)
  if (isa() >= Isa::Avx512) return exp_shifted_sum_avx512(x, n, shift);
#endif
  return exp_shifted_sum_scalar(x, n, shift);
}

void silu_mul(const float* gate, const float* up, size_t n, float* out) {
#if defined(__x86_64__)
  if (isa() >= Isa::Avx512) return silu_mul_avx512(gate, up, n, out);
#endif
  silu_mul_scalar(gate, up, n, out);
}

}  // namespace pivotmt::cpu::vmath
