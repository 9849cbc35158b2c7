// `--weights gguf-q8`: a GGUF file's Q8_0 / Q4_0 / Q4_1 weights times activations
// quantised to Q8_0 blocks, as llama.cpp's CPU backend computes them (gemm.h). Written here
// rather than taken from a library: llama.cpp's ggml is not packaged as a library we could
// link, and the int8 products need a weight layout of their own (below).
//
// Layout (GgmlPacked in gemm.h): the weight rows are repacked once at load, 16 rows per
// group, so that one 64-byte load holds 4 consecutive values of all 16 rows and a VNNI
// dot-product instruction (u8 × s8, 4 products into each of 16 int32 lanes) advances all
// 16 rows by 4 values against 4 broadcast activation bytes: the lanes are the output rows,
// so no horizontal sums, and a group's blocks lie one after another in memory (a GEMV
// streams them). Per group and block of 32 values, a record of
//   Q4_0 / Q4_1: 4 chunks of 64 bytes, chunk c = rows 0..15 × the file's 4 bytes
//                qs[4c..4c+3] (low nibbles: values 4c..4c+3, high nibbles 16+4c..16+4c+3);
//   Q8_0:        8 chunks of 64 bytes, chunk c = rows 0..15 × (q[4c..4c+3] + 128) as u8;
// then the 16 rows' F16 scales d, and for Q4_1 their F16 minimums m. Rows past the
// matrix's last (the last group's padding) are zero. The record is the file's own bytes
// rearranged, the same size (Q4_0 288 = 16 × 18 bytes).
//
// Arithmetic (the reference, gemm_ggml_q8_ref, is the specification): per block, the
// exact int32 Σ (q − z) · qx (z = 8 for Q4_0, 128 for the stored Q8_0 bytes, 0 for Q4_1),
// times d_w · d_x; Q4_1 adds m_w · s_x (Q8_1's F16 d · Σ qx). The zero point costs nothing in the
// kernels: the int32 lanes start at −z · Σ qx (one broadcast per block and row).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "backends/cpu/gemm.h"
#include "backends/cpu/thread_pool.h"
#include "core/dtype.h"
#include "core/error.h"

#define PIVOTMT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
#define PIVOTMT_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")))
#define PIVOTMT_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace pivotmt::cpu {
namespace {

constexpr size_t kBlock = 32;
constexpr size_t kGroup = GgmlPacked::kGroupRows;
constexpr size_t kAhead = 8;  // records prefetched ahead (see vnni_tile)

inline float half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

inline int32_t load_i32(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

}  // namespace

GgmlPacked GgmlPacked::pack(GgmlType type, size_t rows, size_t cols, const std::function<const uint8_t*(size_t)>& row) {
  if (type != GgmlType::Q8_0 && type != GgmlType::Q4_0 && type != GgmlType::Q4_1)
    throw UnsupportedError(fmt::format("GGUF int8 kernels: {} weights are not multiplied as blocks", ggml_type_name(type)));
  if (cols % kBlock) throw Error(fmt::format("GGUF int8 kernels: rows of {} values are not blocks of 32", cols));
  GgmlPacked p;
  p.type = type;
  p.rows = rows;
  p.cols = cols;
  p.blocks = cols / kBlock;
  p.groups = (rows + kGroup - 1) / kGroup;
  const size_t rec = record_bytes(type), qb = quant_bytes(type), src_block = ggml_traits(type).block_bytes;
  p.bytes.assign(p.groups * p.blocks * rec, 0);
  for (size_t n = 0; n < rows; ++n) {
    const uint8_t* src = row(n);
    const size_t g = n / kGroup, lane = n % kGroup;
    for (size_t b = 0; b < p.blocks; ++b) {
      const uint8_t* blk = src + b * src_block;
      uint8_t* dst = p.bytes.data() + (g * p.blocks + b) * rec;
      if (type == GgmlType::Q8_0) {
        for (size_t c = 0; c < 8; ++c)
          for (size_t j = 0; j < 4; ++j) dst[64 * c + 4 * lane + j] = uint8_t(int(int8_t(blk[2 + 4 * c + j])) + 128);
      } else {
        const uint8_t* qs = blk + (type == GgmlType::Q4_1 ? 4 : 2);
        for (size_t c = 0; c < 4; ++c) std::memcpy(dst + 64 * c + 4 * lane, qs + 4 * c, 4);
      }
      std::memcpy(dst + qb + 2 * lane, blk, 2);                                                   // d
      if (type == GgmlType::Q4_1) std::memcpy(dst + qb + 2 * kGroup + 2 * lane, blk + 2, 2);  // m
    }
  }
  return p;
}

const uint8_t* GgmlPacked::record(size_t n, size_t b) const {
  return bytes.data() + ((n / kGroup) * blocks + b) * record_bytes(type);
}

int GgmlPacked::quant(size_t n, size_t k) const {
  const uint8_t* rec = record(n, k / kBlock);
  const size_t lane = n % kGroup, v = k % kBlock;
  if (type == GgmlType::Q8_0) return rec[64 * (v / 4) + 4 * lane + v % 4];
  const uint8_t byte = rec[64 * ((v % 16) / 4) + 4 * lane + v % 4];
  return v < 16 ? byte & 0x0F : byte >> 4;
}

float GgmlPacked::scale(size_t n, size_t b) const { return half(record(n, b) + quant_bytes(type) + 2 * (n % kGroup)); }
float GgmlPacked::minimum(size_t n, size_t b) const {
  return type == GgmlType::Q4_1 ? half(record(n, b) + quant_bytes(type) + 2 * kGroup + 2 * (n % kGroup)) : 0.0f;
}

// gguf-py's dequantised values (d · (q − z), Q4_1 d · q + m: two roundings, as
// ggml_quants.cpp; this file is compiled with -ffp-contract=off).
void GgmlPacked::row_to_f32(size_t n, float* dst) const {
  const int z = zero_point(type);
  for (size_t b = 0; b < blocks; ++b) {
    const float d = scale(n, b), m = minimum(n, b);
    for (size_t v = 0; v < kBlock; ++v) {
      const float q = float(quant(n, b * kBlock + v) - z);
      if (type == GgmlType::Q4_1) {
        const float dq = d * q;
        dst[b * kBlock + v] = dq + m;
      } else {
        dst[b * kBlock + v] = d * q;
      }
    }
  }
}

namespace kernels {

// ---- activations

namespace {
void size_blocks(size_t M, size_t K, GgmlQ8Blocks& out) {
  if (K % kBlock) throw Error(fmt::format("GGUF int8 kernels: activation rows of {} values are not blocks of 32", K));
  out.rows = M;
  out.cols = K;
  out.blocks = K / kBlock;
  out.q.resize(M * K);
  out.d.resize(M * out.blocks);
  out.sum.resize(M * out.blocks);
  out.ds.resize(M * out.blocks);
}
}  // namespace

// ggml-cpu's quantize_row_q8_0 / q8_1 as llama.cpp runs them on x86 (AVX2 and AVX-512
// builds; not quantize_row_q8_0_ref, whose 1 / d and halves-away-from-zero rounding give
// other bytes now and then): d = amax / 127 stored as F16, q = x · (127 / amax) rounded
// to nearest even; Q8_1's d · Σ q (Q4_1's partner) stored as F16 too.
void quantize_rows_ggml_q8(const float* x, size_t M, size_t K, GgmlQ8Blocks& out) {
  size_blocks(M, K, out);
  for (size_t m = 0; m < M; ++m)
    for (size_t b = 0; b < out.blocks; ++b) {
      const float* v = x + m * K + b * kBlock;
      float amax = 0.0f;
      for (size_t i = 0; i < kBlock; ++i) amax = std::max(amax, std::fabs(v[i]));
      const float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
      int32_t sum = 0;
      for (size_t i = 0; i < kBlock; ++i) {
        const int q = int(std::nearbyint(v[i] * id));  // the default rounding mode: to nearest even
        out.q[m * K + b * kBlock + i] = int8_t(q);
        sum += q;
      }
      const size_t at = m * out.blocks + b;
      out.d[at] = f16_to_f32(f32_to_f16(d));
      out.sum[at] = sum;
      out.ds[at] = f16_to_f32(f32_to_f16(d * float(sum)));
    }
}

namespace {
PIVOTMT_AVX512 void quantize_ggml_q8_avx512(const float* x, size_t m0, size_t m1, GgmlQ8Blocks& out) {
  const size_t K = out.cols;
  for (size_t m = m0; m < m1; ++m)
    for (size_t b = 0; b < out.blocks; ++b) {
      const float* v = x + m * K + b * kBlock;
      const __m512 v0 = _mm512_loadu_ps(v), v1 = _mm512_loadu_ps(v + 16);
      const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
      // The reference's scalar steps, so both give the same bytes.
      const float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
      const __m512 vid = _mm512_set1_ps(id);
      __m512i q[2];
      for (int h = 0; h < 2; ++h) {
        q[h] = _mm512_cvtps_epi32(_mm512_mul_ps(h ? v1 : v0, vid));  // MXCSR's default: to nearest even
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out.q.data() + m * K + b * kBlock + 16 * h), _mm512_cvtsepi32_epi8(q[h]));
      }
      const size_t at = m * out.blocks + b;
      const int32_t sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q[0], q[1]));
      out.d[at] = _cvtsh_ss(_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT));
      out.sum[at] = sum;
      out.ds[at] = _cvtsh_ss(_cvtss_sh(d * float(sum), _MM_FROUND_TO_NEAREST_INT));
    }
}
}  // namespace

void quantize_rows_ggml_q8_fast(const float* x, size_t M, size_t K, GgmlQ8Blocks& out) {
  size_blocks(M, K, out);
  parallel_for(M, [&](size_t m0, size_t m1) { quantize_ggml_q8_avx512(x, m0, m1, out); });
}

// ---- products

void gemm_ggml_q8_ref(const GgmlQ8Blocks& x, const Matrix& w, float* y, size_t ldy, size_t n0, size_t n1) {
  const GgmlPacked& p = w.ggml_packed;
  const int z = GgmlPacked::zero_point(p.type);
  for (size_t n = n0; n < n1; ++n)
    for (size_t m = 0; m < x.rows; ++m) {
      double acc = 0.0;
      for (size_t b = 0; b < p.blocks; ++b) {
        int32_t isum = 0;
        for (size_t v = 0; v < kBlock; ++v) {
          const size_t k = b * kBlock + v;
          isum += (p.quant(n, k) - z) * int32_t(x.q[m * x.cols + k]);
        }
        const size_t at = m * x.blocks + b;
        acc += double(p.scale(n, b) * x.d[at]) * double(isum) + double(p.minimum(n, b)) * double(x.ds[at]);
      }
      y[m * ldy + n] = float(acc);
    }
}

namespace {

// Rows m0 .. m0 + R of x against one group (16 weight rows from n, `live` of them real),
// all blocks: R int32 pairs of chains (two, so a row's 8 dot products per block are two
// dependency chains of 4) and R F32 accumulators, the group's unpacked block in 8 registers.
template <GgmlType T, int R>
PIVOTMT_VNNI void vnni_tile(const GgmlQ8Blocks& x, size_t m0, const GgmlPacked& p, size_t group, float* y,
                            size_t ldy, size_t n, size_t live) {
  constexpr size_t rec = GgmlPacked::record_bytes(T), qb = GgmlPacked::quant_bytes(T);
  constexpr int z = GgmlPacked::zero_point(T);
  const size_t K = x.cols, blocks = p.blocks;
  const uint8_t* base = p.bytes.data() + group * blocks * rec;
  const __m512i low = _mm512_set1_epi8(0x0F);
  __m512 acc[R];
  #pragma GCC unroll 8
  for (auto& a : acc) a = _mm512_setzero_ps();
  for (size_t b = 0; b < blocks; ++b) {
    const uint8_t* r = base + b * rec;
    // The record kAhead blocks on, every cache line of it (the hardware prefetcher alone
    // left batch-1 decode at ~2/3 of the memory bandwidth).
#pragma GCC unroll 9
    for (size_t line = 0; line < rec; line += 64) _mm_prefetch(reinterpret_cast<const char*>(r + kAhead * rec + line), _MM_HINT_T0);
    __m512i wq[8];  // wq[c]: values 4c .. 4c + 3 of the 16 rows
    if constexpr (T == GgmlType::Q8_0) {
      #pragma GCC unroll 8
      for (int c = 0; c < 8; ++c) wq[c] = _mm512_loadu_si512(r + 64 * c);
    } else {
      #pragma GCC unroll 8
      for (int c = 0; c < 4; ++c) {
        const __m512i v = _mm512_loadu_si512(r + 64 * c);
        wq[c] = _mm512_and_si512(v, low);
        wq[c + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
      }
    }
    const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r + qb)));
    __m512 mw;
    if constexpr (T == GgmlType::Q4_1) mw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r + qb + 32)));
    #pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const size_t at = (m0 + i) * x.blocks + b;
      const int8_t* xq = x.q.data() + (m0 + i) * K + b * kBlock;
      __m512i s0 = z ? _mm512_set1_epi32(-z * x.sum[at]) : _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
      #pragma GCC unroll 8
      for (int c = 0; c < 8; c += 2) {
        s0 = _mm512_dpbusd_epi32(s0, wq[c], _mm512_set1_epi32(load_i32(xq + 4 * c)));
        s1 = _mm512_dpbusd_epi32(s1, wq[c + 1], _mm512_set1_epi32(load_i32(xq + 4 * c + 4)));
      }
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), _mm512_mul_ps(dw, _mm512_set1_ps(x.d[at])),
                               acc[i]);
      if constexpr (T == GgmlType::Q4_1) acc[i] = _mm512_fmadd_ps(mw, _mm512_set1_ps(x.ds[at]), acc[i]);
    }
  }
  const __mmask16 keep = live >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << live) - 1);
  #pragma GCC unroll 8
  for (int i = 0; i < R; ++i) _mm512_mask_storeu_ps(y + (m0 + i) * ldy + n, keep, acc[i]);
}

template <GgmlType T>
PIVOTMT_VNNI void vnni_range(const GgmlQ8Blocks& x, const GgmlPacked& p, float* y, size_t ldy, size_t n0, size_t n1) {
  constexpr int kR = 4;
  for (size_t n = n0; n < n1; n += kGroup) {
    const size_t g = n / kGroup, live = std::min(kGroup, n1 - n);
    size_t m = 0;
    for (; m + kR <= x.rows; m += kR) vnni_tile<T, kR>(x, m, p, g, y, ldy, n, live);
    switch (x.rows - m) {
      case 3: vnni_tile<T, 3>(x, m, p, g, y, ldy, n, live); break;
      case 2: vnni_tile<T, 2>(x, m, p, g, y, ldy, n, live); break;
      case 1: vnni_tile<T, 1>(x, m, p, g, y, ldy, n, live); break;
      default: break;
    }
  }
}

// AVX2: the same layout a half group (8 rows, one 32-byte half of each chunk) at a time;
// VNNI's u8 · s8 four-product sum as maddubs (pairs into int16) and madd with ones (pairs
// of those into int32). Q4's products (≤ 15 · 127 · 2) cannot saturate int16; Q8_0's
// stored bytes (q + 128) could, so its quants are turned back into signed bytes and
// multiplied as |q| · (x with q's sign), Σ q · qx directly, without the zero point.
template <GgmlType T, int R>
PIVOTMT_AVX2 void avx2_tile(const GgmlQ8Blocks& x, size_t m0, const GgmlPacked& p, size_t group, size_t half_index,
                            float* y, size_t ldy, size_t n, size_t live) {
  constexpr size_t rec = GgmlPacked::record_bytes(T), qb = GgmlPacked::quant_bytes(T);
  const size_t K = x.cols, blocks = p.blocks;
  const uint8_t* base = p.bytes.data() + group * blocks * rec + 32 * half_index;
  const __m256i low = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1), flip = _mm256_set1_epi8(char(0x80));
  __m256 acc[R];
  #pragma GCC unroll 8
  for (auto& a : acc) a = _mm256_setzero_ps();
  for (size_t b = 0; b < blocks; ++b) {
    const uint8_t* r = base + b * rec;
    __m256i wq[8];
    if constexpr (T == GgmlType::Q8_0) {
      #pragma GCC unroll 8
      for (int c = 0; c < 8; ++c) wq[c] = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(r + 64 * c)), flip);
    } else {
      #pragma GCC unroll 8
      for (int c = 0; c < 4; ++c) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r + 64 * c));
        wq[c] = _mm256_and_si256(v, low);
        wq[c + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), low);
      }
    }
    // The half's 8 scales (16 bytes from the 16-row scale array).
    const uint8_t* scales = base - 32 * half_index + b * rec + qb + 16 * half_index;
    const __m256 dw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales)));
    __m256 mw;
    if constexpr (T == GgmlType::Q4_1) mw = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales + 32)));
    #pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
      const size_t at = (m0 + i) * x.blocks + b;
      const int8_t* xq = x.q.data() + (m0 + i) * K + b * kBlock;
      __m256i s = T == GgmlType::Q4_0 ? _mm256_set1_epi32(-8 * x.sum[at]) : _mm256_setzero_si256();
      #pragma GCC unroll 8
      for (int c = 0; c < 8; ++c) {
        const __m256i xv = _mm256_set1_epi32(load_i32(xq + 4 * c));
        __m256i pairs;
        if constexpr (T == GgmlType::Q8_0) pairs = _mm256_maddubs_epi16(_mm256_abs_epi8(wq[c]), _mm256_sign_epi8(xv, wq[c]));
        else pairs = _mm256_maddubs_epi16(wq[c], xv);
        s = _mm256_add_epi32(s, _mm256_madd_epi16(pairs, ones));
      }
      acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw, _mm256_set1_ps(x.d[at])), acc[i]);
      if constexpr (T == GgmlType::Q4_1) acc[i] = _mm256_fmadd_ps(mw, _mm256_set1_ps(x.ds[at]), acc[i]);
    }
  }
  alignas(32) float out[8];
  #pragma GCC unroll 8
  for (int i = 0; i < R; ++i) {
    _mm256_store_ps(out, acc[i]);
    for (size_t j = 0; j < std::min<size_t>(8, live); ++j) y[(m0 + i) * ldy + n + j] = out[j];
  }
}

template <GgmlType T>
PIVOTMT_AVX2 void avx2_range(const GgmlQ8Blocks& x, const GgmlPacked& p, float* y, size_t ldy, size_t n0, size_t n1) {
  constexpr int kR = 2;
  for (size_t n = n0; n < n1; n += 8) {
    const size_t g = n / kGroup, h = (n % kGroup) / 8, live = std::min<size_t>(8, n1 - n);
    size_t m = 0;
    for (; m + kR <= x.rows; m += kR) avx2_tile<T, kR>(x, m, p, g, h, y, ldy, n, live);
    if (m < x.rows) avx2_tile<T, 1>(x, m, p, g, h, y, ldy, n, live);
  }
}

void check(const GgmlQ8Blocks& x, const Matrix& w, size_t n0, size_t n1, size_t step) {
  const GgmlPacked& p = w.ggml_packed;
  if (p.cols != x.cols || p.rows != w.out || n0 % step || (n1 % step && n1 != w.out) || n1 > w.out)
    throw Error(fmt::format("GGUF int8 kernels: [{}, {}] activations against [{}, {}] packed weights, rows {}..{}",
                            x.rows, x.cols, p.rows, p.cols, n0, n1));
}

}  // namespace

void gemm_ggml_q8_vnni(const GgmlQ8Blocks& x, const Matrix& w, float* y, size_t ldy, size_t n0, size_t n1) {
  check(x, w, n0, n1, kGroup);
  switch (w.ggml_packed.type) {
    case GgmlType::Q8_0: return vnni_range<GgmlType::Q8_0>(x, w.ggml_packed, y, ldy, n0, n1);
    case GgmlType::Q4_0: return vnni_range<GgmlType::Q4_0>(x, w.ggml_packed, y, ldy, n0, n1);
    default: return vnni_range<GgmlType::Q4_1>(x, w.ggml_packed, y, ldy, n0, n1);
  }
}

void gemm_ggml_q8_avx2(const GgmlQ8Blocks& x, const Matrix& w, float* y, size_t ldy, size_t n0, size_t n1) {
  check(x, w, n0, n1, 8);
  switch (w.ggml_packed.type) {
    case GgmlType::Q8_0: return avx2_range<GgmlType::Q8_0>(x, w.ggml_packed, y, ldy, n0, n1);
    case GgmlType::Q4_0: return avx2_range<GgmlType::Q4_0>(x, w.ggml_packed, y, ldy, n0, n1);
    default: return avx2_range<GgmlType::Q4_1>(x, w.ggml_packed, y, ldy, n0, n1);
  }
}

}  // namespace kernels
}  // namespace pivotmt::cpu

#pragma GCC diagnostic pop
