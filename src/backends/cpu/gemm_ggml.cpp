// GGUF's Q8_0 / Q4_0 / Q4_1 blocks and Q4_K / Q5_K / Q6_K super-blocks multiplied in
// place, as the file stores them, so a GGUF model runs at its file's size in memory
// (gemm.h). Written here rather than taken from a library: no Debian package multiplies
// ggml's block formats (llama.cpp's ggml is not packaged as a library we could link), and
// the loops are short.
//
// A weight row is dequantised a block at a time in registers (exactly gguf-py's values:
// d · q, d · q + m for Q4_1, (d · sc) · q − (dmin · m) for Q4_K / Q5_K, (d · sc) · q for
// Q6_K — each product and sum rounded on its own, as numpy computes them: this file is
// compiled with -ffp-contract=off, so no multiply and add are fused behind our back; the
// products are exact in F32 anyway, at most 11 + 7 + 6 significant bits) and
// multiplied with F32 activations, 8 (AVX2) or 16 (AVX-512) partial sums per (weight row,
// activation row) pair, added at the end. AVX2 and AVX-512 prefill dequantise into a
// buffer reused by every activation row; decode (1-4 rows, both ISAs) multiplies the
// dequantised values straight away (fused).
// GCC 12 warns inside its own AVX-512 intrinsics' headers (their "undefined" source
// operands), a known false positive; as in gemm_avx512.cpp.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "backends/cpu/gemm.h"
#include "core/dtype.h"
#include "core/error.h"
#include "quant/ggml_quants.h"

#define PIVOTMT_AVX2 __attribute__((target("avx2,fma,f16c")))
#define PIVOTMT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

namespace pivotmt::cpu::kernels {
namespace {

constexpr size_t kBlock = 32;     // Q8_0, Q4_0, Q4_1
constexpr size_t kSuper = 256;    // Q4_K, Q5_K, Q6_K
constexpr size_t kRows = 4;       // activation rows per pass over a dequantised weight row
constexpr size_t kManyRows = 8;  // from here (prefill) the AVX-512 path hands dequantised blocks to the F32 GEMM

// A matrix's block: values and bytes, from ggml's table (checked: GGML storage of a type the
// kernels multiply, rows whole blocks — the loader's rule, ggml_multiplied_in_place).
struct Geometry {
  size_t values = 0, bytes = 0;
};
Geometry geometry(const Matrix& w) {
  if (w.dtype != DType::GGML || !ggml_multiplied_in_place(w.ggml_type, w.in))
    throw Error(fmt::format("GGUF kernels: a {} [{}, {}] matrix is not whole blocks of a type they multiply",
                            w.dtype == DType::GGML ? ggml_type_name(w.ggml_type) : "non-GGUF", w.out, w.in));
  const auto& traits = ggml_traits(w.ggml_type);
  return {traits.block_size, traits.block_bytes};
}

inline bool super_blocks(GgmlType t) { return t == GgmlType::Q4_K || t == GgmlType::Q5_K || t == GgmlType::Q6_K; }

// An F16 scale with the F16C instruction (the portable f16_to_f32 is a call per block:
// 18% of a batch-1 step when the fused kernel used it).
__attribute__((target("f16c"))) inline float half_f16c(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

// ---- K super-blocks: 256 values, dequantised 32 (a sub-block) at a time with AVX2 (also
// inlined into the AVX-512 kernels: the bit twiddling is byte-wide, and the 8-lane
// conversions cost little next to the FMAs).

// 32 bytes (values 0..31) as 4 × 8 F32, unsigned or signed.
template <bool Signed>
PIVOTMT_AVX2 inline void bytes_to_f32(__m256i q, __m256 out[4]) {
  const __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
  const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
  for (int i = 0; i < 4; ++i)
    out[i] = _mm256_cvtepi32_ps(Signed ? _mm256_cvtepi8_epi32(parts[i]) : _mm256_cvtepu8_epi32(parts[i]));
}

// Sub-block s of super-block `b` (values 32 s .. 32 s + 31) as 32 byte-wide quants: Q6_K's
// q − 32 in [−32, 31] (signed), Q4_K's and Q5_K's q in [0, 31] (ggml_quants.cpp is the
// plain version: the layouts are described there).
template <GgmlType T>
PIVOTMT_AVX2 inline __m256i sub_block_quants(const uint8_t* b, int s) {
  const __m256i low = _mm256_set1_epi8(0x0F);
  if constexpr (T == GgmlType::Q6_K) {  // nibbles ql[64 h + 32 (u % 2) + j] >> 4 (u / 2), highs qh[32 h + j] >> 2 u
    const int h = s / 4, u = s % 4;
    const __m256i nibbles = _mm256_and_si256(
        _mm256_srl_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 64 * h + 32 * (u % 2))),
                         _mm_cvtsi32_si128(4 * (u / 2))),
        low);
    const __m256i highs = _mm256_and_si256(
        _mm256_srl_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 128 + 32 * h)), _mm_cvtsi32_si128(2 * u)),
        _mm256_set1_epi8(0x03));
    // (highs << 4) stays inside each byte (highs ≤ 3).
    return _mm256_sub_epi8(_mm256_or_si256(nibbles, _mm256_slli_epi16(highs, 4)), _mm256_set1_epi8(32));
  } else {  // nibbles of qs[32 (s / 2) ..], low then high; Q5_K: bit s of qh[j] is the fifth bit
    __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + (T == GgmlType::Q5_K ? 48 : 16) + 32 * (s / 2)));
    if (s % 2) q = _mm256_srli_epi16(q, 4);
    q = _mm256_and_si256(q, low);
    if constexpr (T == GgmlType::Q5_K) {
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 16));
      const __m256i bit = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(s)), _mm256_set1_epi8(1));
      q = _mm256_or_si256(q, _mm256_slli_epi16(bit, 4));
    }
    return q;
  }
}

// One super-block `b` into y[256], gguf-py's values bit for bit.
template <GgmlType T>
PIVOTMT_AVX2 void super_block_avx2(const uint8_t* b, float* y) {
  if constexpr (T == GgmlType::Q6_K) {
    const auto* scales = reinterpret_cast<const int8_t*>(b + 192);
    const float d = half_f16c(b + 208);
    for (int s = 0; s < 8; ++s) {
      __m256 v[4];
      bytes_to_f32<true>(sub_block_quants<T>(b, s), v);
      const __m256 ds0 = _mm256_set1_ps(d * float(scales[2 * s])), ds1 = _mm256_set1_ps(d * float(scales[2 * s + 1]));
      for (int i = 0; i < 4; ++i) _mm256_storeu_ps(y + 32 * s + 8 * i, _mm256_mul_ps(i < 2 ? ds0 : ds1, v[i]));
    }
  } else {
    const float d = half_f16c(b), dmin = half_f16c(b + 2);
    uint8_t sc[8], mn[8];
    ggml_k4_scales(b + 4, sc, mn);
    for (int s = 0; s < 8; ++s) {
      __m256 v[4];
      bytes_to_f32<false>(sub_block_quants<T>(b, s), v);
      const __m256 ds = _mm256_set1_ps(d * float(sc[s])), dm = _mm256_set1_ps(dmin * float(mn[s]));
      for (int i = 0; i < 4; ++i) _mm256_storeu_ps(y + 32 * s + 8 * i, _mm256_sub_ps(_mm256_mul_ps(ds, v[i]), dm));
    }
  }
}

PIVOTMT_AVX2 void super_block_dispatch(GgmlType t, const uint8_t* b, float* y) {
  switch (t) {
    case GgmlType::Q4_K: return super_block_avx2<GgmlType::Q4_K>(b, y);
    case GgmlType::Q5_K: return super_block_avx2<GgmlType::Q5_K>(b, y);
    default: return super_block_avx2<GgmlType::Q6_K>(b, y);
  }
}

// ---- blocks of 32

// The block's 32 quants as four vectors of 8 int32 (value order 0..31).
PIVOTMT_AVX2 inline void quants_avx2(GgmlType t, const uint8_t* b, __m256i q[4]) {
  if (t == GgmlType::Q8_0) {
    for (int i = 0; i < 4; ++i) q[i] = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 2 + 8 * i)));
    return;
  }
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + (t == GgmlType::Q4_1 ? 4 : 2)));
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m128i lo = _mm_and_si128(packed, mask), hi = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
  q[0] = _mm256_cvtepu8_epi32(lo);
  q[1] = _mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8));
  q[2] = _mm256_cvtepu8_epi32(hi);
  q[3] = _mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8));
  if (t == GgmlType::Q4_0)
    for (int i = 0; i < 4; ++i) q[i] = _mm256_sub_epi32(q[i], _mm256_set1_epi32(8));
}

PIVOTMT_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace

PIVOTMT_AVX2 void ggml_rows_avx2(const Matrix& w, size_t n0, size_t n1, float* out) {
  const Geometry g = geometry(w);
  const size_t K = w.in, blocks = K / g.values;
  const bool has_min = w.ggml_type == GgmlType::Q4_1;
  for (size_t n = n0; n < n1; ++n) {
    const uint8_t* row = w.row_ggml(n);
    float* dst = out + (n - n0) * K;
    if (super_blocks(w.ggml_type)) {
      for (size_t b = 0; b < blocks; ++b) super_block_dispatch(w.ggml_type, row + b * g.bytes, dst + b * kSuper);
      continue;
    }
    for (size_t b = 0; b < blocks; ++b) {
      const uint8_t* blk = row + b * g.bytes;
      __m256i q[4];
      quants_avx2(w.ggml_type, blk, q);
      const __m256 d = _mm256_set1_ps(half_f16c(blk)), mn = _mm256_set1_ps(has_min ? half_f16c(blk + 2) : 0.0f);
      for (int i = 0; i < 4; ++i) {
        __m256 v = _mm256_mul_ps(d, _mm256_cvtepi32_ps(q[i]));
        if (has_min) v = _mm256_add_ps(v, mn);
        _mm256_storeu_ps(dst + b * kBlock + 8 * i, v);
      }
    }
  }
}

namespace {

// Decode's fused kernel: kDecodeCols weight rows at a time, each block of each row
// dequantised in registers exactly as gguf-py does (d · q, Q4_1 d · q + m: two roundings)
// and multiplied straight into the M (≤ 4) activation rows' accumulators — the weights
// are read once, never stored, and the loops are unrolled so the 4 × M × 2 accumulators
// stay in registers (the dequantise-into-L1-then-multiply loop this replaced ran a 7B
// shape's batch-1 decode at 5.8 tok/s).
constexpr size_t kDecodeCols = 4;

template <GgmlType T>
PIVOTMT_AVX512 inline void block_values(const uint8_t* blk, __m512 v[2]) {
  __m512i q[2];
  if constexpr (T == GgmlType::Q8_0) {
    q[0] = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2)));
    q[1] = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 18)));
  } else {
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + (T == GgmlType::Q4_1 ? 4 : 2)));
    const __m128i mask = _mm_set1_epi8(0x0F);
    q[0] = _mm512_cvtepu8_epi32(_mm_and_si128(packed, mask));
    q[1] = _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(packed, 4), mask));
    if constexpr (T == GgmlType::Q4_0) {
      q[0] = _mm512_sub_epi32(q[0], _mm512_set1_epi32(8));
      q[1] = _mm512_sub_epi32(q[1], _mm512_set1_epi32(8));
    }
  }
  const __m512 d = _mm512_set1_ps(half_f16c(blk));
  for (int i = 0; i < 2; ++i) {
    v[i] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(q[i]));
    if constexpr (T == GgmlType::Q4_1) v[i] = _mm512_add_ps(v[i], _mm512_set1_ps(half_f16c(blk + 2)));
  }
}

// The same for K super-blocks: per super-block and weight row its sub-block scales (and
// minimums) as F32 — d · sc and dmin · m, Q6_K's d · sc per 16 values —, then each
// sub-block of 32 values dequantised in registers (16 lanes at a time: the quants made
// byte-wide as in super_block_avx2, widened, scaled) and multiplied straight into the
// M × C accumulators.
template <GgmlType T>
PIVOTMT_AVX2 inline void super_block_scales(const uint8_t* b, float ds[16], float dm[8]) {
  if constexpr (T == GgmlType::Q6_K) {
    const auto* scales = reinterpret_cast<const int8_t*>(b + 192);
    const float d = half_f16c(b + 208);
    for (int j = 0; j < 16; ++j) ds[j] = d * float(scales[j]);
  } else {
    const float d = half_f16c(b), dmin = half_f16c(b + 2);
    uint8_t sc[8], mn[8];
    ggml_k4_scales(b + 4, sc, mn);
    for (int j = 0; j < 8; ++j) {
      ds[j] = d * float(sc[j]);
      dm[j] = dmin * float(mn[j]);
    }
  }
}

// Sub-block s (values 32 s .. 32 s + 31) of super-block b as two vectors of 16.
template <GgmlType T>
PIVOTMT_AVX512 inline void sub_block_values(const uint8_t* b, int s, const float ds[16], const float dm[8], __m512 v[2]) {
  const __m256i q = sub_block_quants<T>(b, s);
  const __m128i halves[2] = {_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1)};
  for (int i = 0; i < 2; ++i) {
    if constexpr (T == GgmlType::Q6_K) {
      v[i] = _mm512_mul_ps(_mm512_set1_ps(ds[2 * s + i]), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(halves[i])));
    } else {
      v[i] = _mm512_sub_ps(_mm512_mul_ps(_mm512_set1_ps(ds[s]), _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(halves[i]))),
                           _mm512_set1_ps(dm[s]));
    }
  }
}

// A type's block, known at compile time: K super-block or block of 32, bytes, values.
template <GgmlType T>
struct Layout {
  static constexpr bool super = T == GgmlType::Q4_K || T == GgmlType::Q5_K || T == GgmlType::Q6_K;
  static constexpr size_t bytes = T == GgmlType::Q8_0   ? 34
                                  : T == GgmlType::Q4_0 ? 18
                                  : T == GgmlType::Q4_1 ? 20
                                  : T == GgmlType::Q4_K ? 144
                                  : T == GgmlType::Q5_K ? 176
                                                        : 210;
  static constexpr size_t values = super ? kSuper : kBlock;
};

// Super-block b of C weight rows begins: the cache lines two super-blocks on prefetched,
// each row's sub-block scales and minimums computed.
template <GgmlType T, int C>
PIVOTMT_AVX2 inline void super_block_start(const uint8_t* const rows[C], size_t b, float ds[][16], float dm[][8]) {
  constexpr size_t bb = Layout<T>::bytes;
#pragma GCC unroll 4
  for (int c = 0; c < C; ++c) {
    for (size_t line = 0; line < bb; line += 64)
      _mm_prefetch(reinterpret_cast<const char*>(rows[c] + (b + 2) * bb + line), _MM_HINT_T0);
    super_block_scales<T>(rows[c] + b * bb, ds[c], dm[c]);
  }
}

// Blocks of 32 one by one; K super-blocks a sub-block of 32 at a time, their scales
// computed once per super-block and weight row.
template <GgmlType T, int M, int C>
PIVOTMT_AVX512 void ggml_decode_rows(const float* x, const Matrix& w, float* y, size_t ldy, size_t n) {
  constexpr bool kK = Layout<T>::super;
  constexpr size_t bb = Layout<T>::bytes, values = Layout<T>::values;
  const size_t K = w.in, blocks = K / values;
  const uint8_t* rows[C];
#pragma GCC unroll 4
  for (int c = 0; c < C; ++c) rows[c] = w.row_ggml(n + size_t(c));
  __m512 acc[M][C];
#pragma GCC unroll 16
  for (int r = 0; r < M; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  float ds[C][16], dm[C][8];  // K: the super-block's sub-block scales and minimums
  for (size_t b = 0; b < blocks; ++b) {
    if constexpr (kK) super_block_start<T, C>(rows, b, ds, dm);
    for (int s = 0; s < int(values / kBlock); ++s) {
      __m512 xv[M][2];
#pragma GCC unroll 4
      for (int r = 0; r < M; ++r) {
        xv[r][0] = _mm512_loadu_ps(x + size_t(r) * K + b * values + kBlock * size_t(s));
        xv[r][1] = _mm512_loadu_ps(x + size_t(r) * K + b * values + kBlock * size_t(s) + 16);
      }
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) {
        __m512 v[2];
        if constexpr (kK) {
          sub_block_values<T>(rows[c] + b * bb, s, ds[c], dm[c], v);
        } else {
          _mm_prefetch(reinterpret_cast<const char*>(rows[c] + (b + 8) * bb), _MM_HINT_T0);
          block_values<T>(rows[c] + b * bb, v);
        }
#pragma GCC unroll 4
        for (int r = 0; r < M; ++r) {
          acc[r][c] = _mm512_fmadd_ps(v[0], xv[r][0], acc[r][c]);
          acc[r][c] = _mm512_fmadd_ps(v[1], xv[r][1], acc[r][c]);
        }
      }
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < M; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) y[size_t(r) * ldy + n + size_t(c)] = _mm512_reduce_add_ps(acc[r][c]);
}

template <GgmlType T, int M>
PIVOTMT_AVX512 void ggml_decode_range(const float* x, const Matrix& w, float* y, size_t ldy, size_t n0, size_t n1) {
  size_t n = n0;
  for (; n + kDecodeCols <= n1; n += kDecodeCols) ggml_decode_rows<T, M, kDecodeCols>(x, w, y, ldy, n);
  for (; n < n1; ++n) ggml_decode_rows<T, M, 1>(x, w, y, ldy, n);
}

// The AVX2 twin of ggml_decode_rows: 8 lanes, a sub-block of 32 values as 4 vectors, each
// multiplied into the M × C accumulators as it is made (AVX2 has 16 vector registers:
// C = 2 columns keeps the accumulators, values and an activation vector in them).
template <GgmlType T>
PIVOTMT_AVX2 inline void values_avx2(const uint8_t* b, int s, const float ds[16], const float dm[8], __m256 v[4]) {
  if constexpr (T == GgmlType::Q4_K || T == GgmlType::Q5_K) {
    bytes_to_f32<false>(sub_block_quants<T>(b, s), v);
    for (int i = 0; i < 4; ++i) v[i] = _mm256_sub_ps(_mm256_mul_ps(_mm256_set1_ps(ds[s]), v[i]), _mm256_set1_ps(dm[s]));
  } else if constexpr (T == GgmlType::Q6_K) {
    bytes_to_f32<true>(sub_block_quants<T>(b, s), v);
    for (int i = 0; i < 4; ++i) v[i] = _mm256_mul_ps(_mm256_set1_ps(ds[2 * s + i / 2]), v[i]);
  } else {
    __m256i q[4];
    quants_avx2(T, b, q);
    const __m256 d = _mm256_set1_ps(half_f16c(b));
    for (int i = 0; i < 4; ++i) {
      v[i] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(q[i]));
      if constexpr (T == GgmlType::Q4_1) v[i] = _mm256_add_ps(v[i], _mm256_set1_ps(half_f16c(b + 2)));
    }
  }
}

template <GgmlType T, int M, int C>
PIVOTMT_AVX2 void ggml_decode_rows_avx2(const float* x, const Matrix& w, float* y, size_t ldy, size_t n) {
  constexpr bool kK = Layout<T>::super;
  constexpr size_t bb = Layout<T>::bytes, values = Layout<T>::values;
  const size_t K = w.in, blocks = K / values;
  const uint8_t* rows[C];
  for (int c = 0; c < C; ++c) rows[c] = w.row_ggml(n + size_t(c));
  __m256 acc[M][C];
#pragma GCC unroll 8
  for (int r = 0; r < M; ++r)
#pragma GCC unroll 2
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  float ds[C][16], dm[C][8];
  for (size_t b = 0; b < blocks; ++b) {
    if constexpr (kK) super_block_start<T, C>(rows, b, ds, dm);
    for (int s = 0; s < int(values / kBlock); ++s) {
      __m256 v[C][4];
#pragma GCC unroll 2
      for (int c = 0; c < C; ++c) {
        if constexpr (!kK) _mm_prefetch(reinterpret_cast<const char*>(rows[c] + (b + 8) * bb), _MM_HINT_T0);
        values_avx2<T>(rows[c] + b * bb, s, ds[c], dm[c], v[c]);
      }
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i)
#pragma GCC unroll 4
        for (int r = 0; r < M; ++r) {
          const __m256 xv = _mm256_loadu_ps(x + size_t(r) * K + b * values + kBlock * size_t(s) + 8 * size_t(i));
#pragma GCC unroll 2
          for (int c = 0; c < C; ++c) acc[r][c] = _mm256_fmadd_ps(v[c][i], xv, acc[r][c]);
        }
    }
  }
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < C; ++c) y[size_t(r) * ldy + n + size_t(c)] = hsum(acc[r][c]);
}

template <GgmlType T, int M>
PIVOTMT_AVX2 void ggml_decode_range_avx2(const float* x, const Matrix& w, float* y, size_t ldy, size_t n0, size_t n1) {
  size_t n = n0;
  for (; n + 2 <= n1; n += 2) ggml_decode_rows_avx2<T, M, 2>(x, w, y, ldy, n);
  for (; n < n1; ++n) ggml_decode_rows_avx2<T, M, 1>(x, w, y, ldy, n);
}

// Decode of M rows by the weights' type, with either ISA's kernels (Kernels::range<T, M>).
struct Avx512Decode {
  template <GgmlType T, int M>
  static void range(const float* x, const Matrix& w, float* y, size_t ldy, size_t n0, size_t n1) {
    ggml_decode_range<T, M>(x, w, y, ldy, n0, n1);
  }
};
struct Avx2Decode {
  template <GgmlType T, int M>
  static void range(const float* x, const Matrix& w, float* y, size_t ldy, size_t n0, size_t n1) {
    ggml_decode_range_avx2<T, M>(x, w, y, ldy, n0, n1);
  }
};
template <class Kernels, int M>
void decode_by_type(const float* x, const Matrix& w, float* y, size_t ldy, size_t n0, size_t n1) {
  switch (w.ggml_type) {
    case GgmlType::Q8_0: return Kernels::template range<GgmlType::Q8_0, M>(x, w, y, ldy, n0, n1);
    case GgmlType::Q4_0: return Kernels::template range<GgmlType::Q4_0, M>(x, w, y, ldy, n0, n1);
    case GgmlType::Q4_1: return Kernels::template range<GgmlType::Q4_1, M>(x, w, y, ldy, n0, n1);
    case GgmlType::Q4_K: return Kernels::template range<GgmlType::Q4_K, M>(x, w, y, ldy, n0, n1);
    case GgmlType::Q5_K: return Kernels::template range<GgmlType::Q5_K, M>(x, w, y, ldy, n0, n1);
    default: return Kernels::template range<GgmlType::Q6_K, M>(x, w, y, ldy, n0, n1);
  }
}
// 1-4 rows: false for more (the callers' prefill paths).
template <class Kernels>
bool decode(const float* x, size_t M, const Matrix& w, float* y, size_t ldy, size_t n0, size_t n1) {
  switch (M) {
    case 1: decode_by_type<Kernels, 1>(x, w, y, ldy, n0, n1); return true;
    case 2: decode_by_type<Kernels, 2>(x, w, y, ldy, n0, n1); return true;
    case 3: decode_by_type<Kernels, 3>(x, w, y, ldy, n0, n1); return true;
    case 4: decode_by_type<Kernels, 4>(x, w, y, ldy, n0, n1); return true;
    default: return false;
  }
}

// One super-block into y[256] with the decode kernel's 16-lane sub-blocks.
template <GgmlType T>
PIVOTMT_AVX512 void super_block_avx512(const uint8_t* b, float* y) {
  float ds[16], dm[8];
  super_block_scales<T>(b, ds, dm);
  for (int s = 0; s < 8; ++s) {
    __m512 v[2];
    sub_block_values<T>(b, s, ds, dm, v);
    _mm512_storeu_ps(y + 32 * s, v[0]);
    _mm512_storeu_ps(y + 32 * s + 16, v[1]);
  }
}

}  // namespace

// Weight rows [n0, n1) dequantised into out ([n1 - n0, in] F32), 16 values per step.
PIVOTMT_AVX512 void ggml_rows_avx512(const Matrix& w, size_t n0, size_t n1, float* out) {
  const Geometry g = geometry(w);
  const size_t K = w.in, blocks = K / g.values;
  const GgmlType t = w.ggml_type;
  const bool has_min = t == GgmlType::Q4_1;
  for (size_t n = n0; n < n1; ++n) {
    const uint8_t* row = w.row_ggml(n);
    float* dst = out + (n - n0) * K;
    if (super_blocks(t)) {
      for (size_t b = 0; b < blocks; ++b) {
        switch (t) {
          case GgmlType::Q4_K: super_block_avx512<GgmlType::Q4_K>(row + b * g.bytes, dst + b * kSuper); break;
          case GgmlType::Q5_K: super_block_avx512<GgmlType::Q5_K>(row + b * g.bytes, dst + b * kSuper); break;
          default: super_block_avx512<GgmlType::Q6_K>(row + b * g.bytes, dst + b * kSuper); break;
        }
      }
      continue;
    }
    for (size_t b = 0; b < blocks; ++b) {
      const uint8_t* blk = row + b * g.bytes;
      __m512i q[2];
      if (t == GgmlType::Q8_0) {
        q[0] = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2)));
        q[1] = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 18)));
      } else {
        const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + (has_min ? 4 : 2)));
        const __m128i mask = _mm_set1_epi8(0x0F);
        q[0] = _mm512_cvtepu8_epi32(_mm_and_si128(packed, mask));
        q[1] = _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(packed, 4), mask));
        if (t == GgmlType::Q4_0)
          for (auto& qi : q) qi = _mm512_sub_epi32(qi, _mm512_set1_epi32(8));
      }
      const __m512 d = _mm512_set1_ps(half_f16c(blk)), mn = _mm512_set1_ps(has_min ? half_f16c(blk + 2) : 0.0f);
      for (int i = 0; i < 2; ++i) {
        __m512 v = _mm512_mul_ps(d, _mm512_cvtepi32_ps(q[i]));
        if (has_min) v = _mm512_add_ps(v, mn);
        _mm512_storeu_ps(dst + b * kBlock + 16 * i, v);
      }
    }
  }
}

// AVX2: decode (1-4 rows) fused as on AVX-512, 8 lanes; more rows (prefill): each weight
// row dequantised once into a buffer that stays in L1 (a 7B model's longest row, 14336
// values, is 56 KiB: L2 at worst), then multiplied with every activation row, kRows at a
// time — so prefill pays the dequantisation once per weight row, not once per activation row.
PIVOTMT_AVX2 void gemm_ggml_avx2(const float* x, size_t M, const Matrix& w, float* y, size_t ldy, size_t n0, size_t n1) {
  const size_t K = w.in;
  geometry(w);  // checks the matrix
  if (decode<Avx2Decode>(x, M, w, y, ldy, n0, n1)) return;
  static thread_local std::vector<float> buffer;
  buffer.resize(K);
  float* wf = buffer.data();
  for (size_t n = n0; n < n1; ++n) {
    ggml_rows_avx2(w, n, n + 1, wf);
    for (size_t m0 = 0; m0 < M; m0 += kRows) {
      const size_t rows = std::min(kRows, M - m0);
      __m256 acc[kRows];
      for (auto& a : acc) a = _mm256_setzero_ps();
      for (size_t k = 0; k < K; k += 8) {
        const __m256 wv = _mm256_loadu_ps(wf + k);
        for (size_t r = 0; r < rows; ++r) acc[r] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + (m0 + r) * K + k), acc[r]);
      }
      for (size_t r = 0; r < rows; ++r) y[(m0 + r) * ldy + n] = hsum(acc[r]);
    }
  }
}

PIVOTMT_AVX512 void gemm_ggml_avx512(const float* x, size_t M, const Matrix& w, float* y, size_t ldy, size_t n0,
                                     size_t n1) {
  const size_t K = w.in;
  geometry(w);  // checks the matrix
  if (M >= kManyRows) {
    // Prefill: 64 weight rows at a time dequantised into an F32 block (256 KiB for a 7B
    // model's rows: L2), multiplied by the register-tiled F32 GEMM — the dequantisation
    // is paid once per weight row for all M activation rows.
    constexpr size_t kChunk = 64;
    static thread_local std::vector<float> block;
    block.resize(kChunk * K);
    Matrix f;
    f.dtype = DType::F32;
    f.in = K;
    f.borrowed = block.data();
    for (size_t nb = n0; nb < n1; nb += kChunk) {
      const size_t rows = std::min(kChunk, n1 - nb);
      ggml_rows_avx512(w, nb, nb + rows, block.data());
      f.out = rows;
      gemm_f32_avx512(x, M, f, y + nb, ldy, 0, rows);
    }
    return;
  }
  // Decode (a few rows): fused, see ggml_decode_rows; 5-7 rows as runs of up to 4.
  if (decode<Avx512Decode>(x, M, w, y, ldy, n0, n1)) return;
  for (size_t m0 = 0; m0 < M; m0 += 4) {
    const size_t rows = std::min<size_t>(4, M - m0);
    gemm_ggml_avx512(x + m0 * K, rows, w, y + m0 * ldy, ldy, n0, n1);
  }
}

}  // namespace pivotmt::cpu::kernels

#pragma GCC diagnostic pop
