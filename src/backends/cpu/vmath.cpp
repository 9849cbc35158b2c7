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

void gelu_scalar(float* x, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.70710678118654752f));
}

void layer_norm_row_scalar(float* x, size_t n, const float* w, const float* b, float eps) {
  float mean = 0.0f, var = 0.0f;
  for (size_t i = 0; i < n; ++i) mean += x[i];
  mean /= float(n);
  for (size_t i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  const float inv = 1.0f / std::sqrt(var / float(n) + eps);
  for (size_t i = 0; i < n; ++i) x[i] = (x[i] - mean) * inv * w[i] + b[i];
}

void rms_norm_row_scalar(const float* x, size_t n, const float* w, float eps, float* y) {
  float ss = 0.0f;
  for (size_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const float inv = 1.0f / std::sqrt(ss / float(n) + eps);
  for (size_t i = 0; i < n; ++i) y[i] = w[i] * (x[i] * inv);
}

void add_scalar(float* x, const float* y, size_t n) {
  for (size_t i = 0; i < n; ++i) x[i] += y[i];
}

void rope_head_scalar(float* v, size_t half, const float* c, const float* s) {
  for (size_t i = 0; i < half; ++i) {
    const float a = v[i], b = v[i + half];
    v[i] = a * c[i] - b * s[i];
    v[i + half] = b * c[i] + a * s[i];
  }
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
// erfc(z) for z >= 0: t · e^(−z² + P(t)), t = 1 / (1 + z/2) (Numerical Recipes' erfcc; its
// fit's relative error is below 1.2e-7). z² is split into a rounded part and its exact
// remainder (one FMA) so that the exponent stays exact enough where e^(−z²) is tiny.
PIVOTMT_AVX512 inline __m512 erfc_nonnegative16(__m512 z) {
  const __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(z, _mm512_set1_ps(0.5f), _mm512_set1_ps(1.0f)));
  static constexpr float c[] = {-1.26551223f, 1.00002368f, 0.37409196f, 0.09678418f, -0.18628806f,
                                0.27886807f,  -1.13520398f, 1.48851587f, -0.82215223f, 0.17087277f};
  __m512 p = _mm512_set1_ps(c[9]);
  for (int i = 8; i >= 0; --i) p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(c[i]));
  const __m512 zz = _mm512_mul_ps(z, z);
  const __m512 zz_low = _mm512_fmsub_ps(z, z, zz);  // z·z − zz exactly
  return _mm512_mul_ps(t, exp16(_mm512_sub_ps(_mm512_sub_ps(p, zz), zz_low)));
}

PIVOTMT_AVX512 void gelu_avx512(float* x, size_t n) {
  const __m512 half = _mm512_set1_ps(0.5f), two = _mm512_set1_ps(2.0f);
  const __m512 inv_sqrt2 = _mm512_set1_ps(0.70710678118654752f);
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 live = i + 16 <= n ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(live, x + i);
    // 1 + erf(v/√2) = erfc(y), y = −v/√2: erfc(|y|) when y >= 0 (v <= 0), else 2 − erfc(|y|).
    const __m512 y = _mm512_mul_ps(v, inv_sqrt2);  // −y
    const __m512 e = erfc_nonnegative16(_mm512_abs_ps(y));
    const __mmask16 positive = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GT_OQ);
    const __m512 one_plus_erf = _mm512_mask_sub_ps(e, positive, two, e);
    _mm512_mask_storeu_ps(x + i, live, _mm512_mul_ps(_mm512_mul_ps(half, v), one_plus_erf));
  }
}

PIVOTMT_AVX512 void layer_norm_row_avx512(float* x, size_t n, const float* w, const float* b, float eps) {
  __m512 sum = _mm512_setzero_ps();
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 live = i + 16 <= n ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    sum = _mm512_add_ps(sum, _mm512_maskz_loadu_ps(live, x + i));
  }
  const float mean = _mm512_reduce_add_ps(sum) / float(n);
  const __m512 m = _mm512_set1_ps(mean);
  __m512 sq = _mm512_setzero_ps();
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 live = i + 16 <= n ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    const __m512 dev = _mm512_maskz_sub_ps(live, _mm512_maskz_loadu_ps(live, x + i), m);
    sq = _mm512_fmadd_ps(dev, dev, sq);
  }
  const __m512 inv = _mm512_set1_ps(1.0f / std::sqrt(_mm512_reduce_add_ps(sq) / float(n) + eps));
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 live = i + 16 <= n ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
    const __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(live, x + i), m), inv);
    _mm512_mask_storeu_ps(x + i, live,
                          _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(live, w + i), _mm512_maskz_loadu_ps(live, b + i)));
  }
}
PIVOTMT_AVX512 inline __mmask16 live_lanes(size_t i, size_t n) {
  return i + 16 <= n ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1);
}

PIVOTMT_AVX512 void rms_norm_row_avx512(const float* x, size_t n, const float* w, float eps, float* y) {
  // Four accumulators: the sum of squares is a chain of dependent FMAs otherwise.
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  size_t i = 0;
  for (; i + 64 <= n; i += 64)
    for (int j = 0; j < 4; ++j) {
      const __m512 v = _mm512_loadu_ps(x + i + 16 * j);
      acc[j] = _mm512_fmadd_ps(v, v, acc[j]);
    }
  for (; i < n; i += 16) {
    const __m512 v = _mm512_maskz_loadu_ps(live_lanes(i, n), x + i);
    acc[0] = _mm512_fmadd_ps(v, v, acc[0]);
  }
  const float ss = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
  const __m512 inv = _mm512_set1_ps(1.0f / std::sqrt(ss / float(n) + eps));
  for (i = 0; i < n; i += 16) {
    const __mmask16 live = live_lanes(i, n);
    const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(live, x + i), inv);
    _mm512_mask_storeu_ps(y + i, live, _mm512_mul_ps(_mm512_maskz_loadu_ps(live, w + i), v));
  }
}

PIVOTMT_AVX512 void add_avx512(float* x, const float* y, size_t n) {
  for (size_t i = 0; i < n; i += 16) {
    const __mmask16 live = live_lanes(i, n);
    _mm512_mask_storeu_ps(x + i, live, _mm512_add_ps(_mm512_maskz_loadu_ps(live, x + i), _mm512_maskz_loadu_ps(live, y + i)));
  }
}

PIVOTMT_AVX512 void rope_head_avx512(float* v, size_t half, const float* c, const float* s) {
  for (size_t i = 0; i < half; i += 16) {
    const __mmask16 live = live_lanes(i, half);
    const __m512 a = _mm512_maskz_loadu_ps(live, v + i), b = _mm512_maskz_loadu_ps(live, v + half + i);
    const __m512 cv = _mm512_maskz_loadu_ps(live, c + i), sv = _mm512_maskz_loadu_ps(live, s + i);
    // Rounded as the scalar loop: each product rounded, then the difference / sum.
    _mm512_mask_storeu_ps(v + i, live, _mm512_sub_ps(_mm512_mul_ps(a, cv), _mm512_mul_ps(b, sv)));
    _mm512_mask_storeu_ps(v + half + i, live, _mm512_add_ps(_mm512_mul_ps(b, cv), _mm512_mul_ps(a, sv)));
  }
}
}  // namespace
#endif

void rms_norm_row(const float* x, size_t n, const float* w, float eps, float* y) {
#if defined(__x86_64__)
  if (isa() >= Isa::Avx512) return rms_norm_row_avx512(x, n, w, eps, y);
#endif
  rms_norm_row_scalar(x, n, w, eps, y);
}

void add(float* x, const float* y, size_t n) {
#if defined(__x86_64__)
  if (isa() >= Isa::Avx512) return add_avx512(x, y, n);
#endif
  add_scalar(x, y, n);
}

void rope_head(float* v, size_t half, const float* c, const float* s) {
#if defined(__x86_64__)
  if (isa() >= Isa::Avx512) return rope_head_avx512(v, half, c, s);
#endif
  rope_head_scalar(v, half, c, s);
}

void gelu(float* x, size_t n) {
#if defined(__x86_64__)
  if (isa() >= Isa::Avx512) return gelu_avx512(x, n);
#endif
  gelu_scalar(x, n);
}

void layer_norm_row(float* x, size_t n, const float* w, const float* b, float eps) {
#if defined(__x86_64__)
  if (isa() >= Isa::Avx512) return layer_norm_row_avx512(x, n, w, b, eps);
#endif
  layer_norm_row_scalar(x, n, w, b, eps);
}

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
