// AVX-512 GEMM kernels (see gemm.h). Hand-written because no Debian BLAS reads F16 or INT8
// weights: OpenBLAS needs them converted to F32 first (a pass over every weight per call,
// and its small-M kernels leave batched decode far from the FMA peak), and these kernels
// convert in registers as they load.
//
// Register tile: RM x-rows × RN weight rows (RM <= 6, RN <= 4: 24 accumulators + 6 x
// vectors + one weight vector of the 32 ZMM registers). Each step loads 16 k-values of RM
// x-rows and of RN weight rows and issues RM·RN FMAs, so F16 weights cost RN conversions
// per RM·RN FMAs. The dot products along k end in one horizontal reduction per output
// (hsum4: four accumulators into four sums in 14 instructions).
#include <algorithm>
#include <cstring>
#include <stdexcept>

// GCC 12's AVX-512 headers trip its own uninitialised-value warnings (false positives in
// the intrinsics' "undefined" source operands).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "backends/cpu/gemm.h"
#include "backends/cpu/thread_pool.h"

#define PIVOTMT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,fma,f16c")))
#define PIVOTMT_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")))

namespace pivotmt::cpu::kernels {
namespace {

constexpr int kMaxRM = 6, kMaxRN = 4;
constexpr size_t kMaxKc = 1024;  // k block: a 6-row x tile of 24 KiB stays in L1 beside the weight tile
constexpr size_t kFewRows = 32;  // up to this many x rows: weight tiles outermost (see gemm_range)

// [Σa, Σb, Σc, Σd] of four 16-lane vectors.
PIVOTMT_AVX512 inline __m128 hsum4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
  const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xEE));
  // 128-bit blocks: [a0+a2 | b0+b2 | c0+c2 | d0+d2] + [a1+a3 | b1+b3 | c1+c3 | d1+d3]
  __m512 s = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
  s = _mm512_add_ps(s, _mm512_permute_ps(s, 0xB1));  // lanes (0+1, 0+1, 2+3, 2+3) of each block
  s = _mm512_add_ps(s, _mm512_permute_ps(s, 0x4E));  // every lane of a block: its sum
  return _mm512_castps512_ps128(_mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), s));
}

// The "weight" side of a product: rows of `in` values, `ld` elements apart (a Matrix, or
// the keys of one attention head inside the KV cache), an optional per-row scale (I8)
// and a factor applied to every output (decode attention's 1 / sqrt(d)). NF4: `data` the
// packed codes of the flattened matrix (ld a multiple of 16, so a vector of 16 weights is
// 8 whole bytes inside one 64-value block), `block_scale` each block's absmax, `codes` the
// 16 code values.
struct WeightView {
  const void* data = nullptr;
  size_t rows = 0, in = 0, ld = 0;
  const float* row_scale = nullptr;
  const float* block_scale = nullptr;
  const float* codes = nullptr;
  float alpha = 1.0f;
};

// Bytes of `elements` consecutive weights (NF4: two a byte; only ever asked of even counts).
template <DType D>
constexpr size_t bytes_of(size_t elements) {
  return D == DType::F32 ? 4 * elements : D == DType::F16 ? 2 * elements : D == DType::NF4 ? elements / 2 : elements;
}
template <DType D>
inline const char* row_ptr(const WeightView& w, size_t n, size_t k) {
  return static_cast<const char*>(w.data) + bytes_of<D>(n * w.ld + k);
}

// 16 NF4 weights from 8 bytes (element 2j in byte j's high nibble, 2j + 1 in its low one),
// times their block's absmax: the nibbles index the 16 codes with one 16-lane permute, which
// reads only an index's low 4 bits, so the low nibble needs no mask (the AVX2 GEMV needs two
// 8-lane permutes and a blend).
PIVOTMT_AVX512 inline __m512 nf4_sixteen(const char* p, const float* codes, float absmax) {
  const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
  const __m128i pairs = _mm_shuffle_epi8(bytes, _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7));
  const __m512i index = _mm512_srlv_epi32(_mm512_cvtepu8_epi32(pairs), _mm512_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0));
  return _mm512_mul_ps(_mm512_permutexvar_ps(index, _mm512_loadu_ps(codes)), _mm512_set1_ps(absmax));
}

// 16 weights of row n from k, as F32 (mask: the valid lanes, for the tail of a row).
template <DType D>
PIVOTMT_AVX512 inline __m512 load_w(const WeightView& w, size_t n, size_t k) {
  const char* p = row_ptr<D>(w, n, k);
  if constexpr (D == DType::F16)
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  else if constexpr (D == DType::I8)
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  else if constexpr (D == DType::NF4)
    return nf4_sixteen(p, w.codes, w.block_scale[(n * w.ld + k) / nf4::kBlock]);
  else
    return _mm512_loadu_ps(reinterpret_cast<const float*>(p));
}
template <DType D>
PIVOTMT_AVX512 inline __m512 load_w_masked(const WeightView& w, size_t n, size_t k, __mmask16 m) {
  const char* p = row_ptr<D>(w, n, k);
  if constexpr (D == DType::F16)
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
  else if constexpr (D == DType::I8)
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, p)));
  else if constexpr (D == DType::NF4)  // rows a multiple of 16 wide and k blocks of 16: no tail
    throw std::logic_error("NF4 tiles: a partial vector of weights");
  else
    return _mm512_maskz_loadu_ps(m, reinterpret_cast<const float*>(p));
}

// Software prefetch as inline assembly: GCC 12 silently drops _mm_prefetch and
// __builtin_prefetch in some functions compiled with a target attribute (all of this
// file's tiles had none), so the instruction is written out. A prefetch never faults.
inline void prefetch_l1(const void* p) { asm volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p))); }
inline void prefetch_l2(const void* p) { asm volatile("prefetcht1 %0" : : "m"(*static_cast<const char*>(p))); }

// Weight rows are prefetched this many rows ahead of the tile reading them. A tile reads
// its RN rows interleaved (short strided streams the hardware prefetcher follows poorly),
// so each step also asks for the same k of the rows two tiles on.
constexpr size_t kPrefetchRows = 2 * kMaxRN;

inline void prefetch_rows(const char* base, size_t row_bytes, int rows, size_t offset) {
  if (!base) return;
  for (int j = 0; j < rows; ++j) prefetch_l1(base + size_t(j) * row_bytes + offset);
}

// One RM × RN tile over k in [k0, k0 + kc): y (+)= x · wᵀ (times the I8 row scale).
template <int RM, int RN, DType D>
PIVOTMT_AVX512 void tile(const float* x, size_t ldx, const WeightView& w, size_t n, size_t k0, size_t kc, float* y,
                         size_t ldy, bool accumulate) {
  __m512 acc[RM][kMaxRN];
#pragma GCC unroll 6
  for (int r = 0; r < RM; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < kMaxRN; ++j) acc[r][j] = _mm512_setzero_ps();
  const size_t kend = k0 + kc, k16 = k0 + (kc & ~size_t(15));
  const size_t row_bytes = bytes_of<D>(w.ld);
  const char* ahead = n + RN + kPrefetchRows <= w.rows ? row_ptr<D>(w, n + kPrefetchRows, 0) : nullptr;
  for (size_t k = k0; k < k16; k += 16) {
    if (bytes_of<D>(k) % 64 == 0) prefetch_rows(ahead, row_bytes, RN, bytes_of<D>(k));
    __m512 a[RM];
#pragma GCC unroll 6
    for (int r = 0; r < RM; ++r) a[r] = _mm512_loadu_ps(x + r * ldx + k);
#pragma GCC unroll 4
    for (int j = 0; j < RN; ++j) {
      const __m512 b = load_w<D>(w, n + j, k);
#pragma GCC unroll 6
      for (int r = 0; r < RM; ++r) acc[r][j] = _mm512_fmadd_ps(a[r], b, acc[r][j]);
    }
  }
  if (k16 < kend) {
    const __mmask16 m = __mmask16((1u << (kend - k16)) - 1);
    __m512 a[RM];
#pragma GCC unroll 6
    for (int r = 0; r < RM; ++r) a[r] = _mm512_maskz_loadu_ps(m, x + r * ldx + k16);
#pragma GCC unroll 4
    for (int j = 0; j < RN; ++j) {
      const __m512 b = load_w_masked<D>(w, n + j, k16, m);
#pragma GCC unroll 6
      for (int r = 0; r < RM; ++r) acc[r][j] = _mm512_fmadd_ps(a[r], b, acc[r][j]);
    }
  }
  __m128 scale = _mm_set1_ps(w.alpha);
  if (w.row_scale) scale = _mm_mul_ps(scale, _mm_maskz_loadu_ps(__mmask8((1u << RN) - 1), w.row_scale + n));
  const __mmask8 cols = __mmask8((1u << RN) - 1);
#pragma GCC unroll 6
  for (int r = 0; r < RM; ++r) {
    __m128 s = _mm_mul_ps(hsum4(acc[r][0], acc[r][1], acc[r][2], acc[r][3]), scale);
    float* out = y + r * ldy + n;
    if (accumulate) s = _mm_add_ps(s, _mm_maskz_loadu_ps(cols, out));
    _mm_mask_storeu_ps(out, cols, s);
  }
}

using TileFn = void (*)(const float*, size_t, const WeightView&, size_t, size_t, size_t, float*, size_t, bool);

template <DType D, int RM, int... RN>
constexpr void fill_row(TileFn (&row)[kMaxRN], std::integer_sequence<int, RN...>) {
  ((row[RN] = &tile<RM, RN + 1, D>), ...);
}
template <DType D, int... RM>
constexpr auto make_table(std::integer_sequence<int, RM...>) {
  struct Table {
    TileFn fn[kMaxRM][kMaxRN];
  } t{};
  (fill_row<D, RM + 1>(t.fn[RM], std::make_integer_sequence<int, kMaxRN>{}), ...);
  return t;
}
template <DType D>
const auto& tiles() {
  static const auto table = make_table<D>(std::make_integer_sequence<int, kMaxRM>{});
  return table.fn;
}

// Decode tile (2 to 8 x rows): all RM rows × RN <= 3 weight rows in one pass, so each
// weight vector is loaded (from memory) once per step, with x reloaded from L1 per row:
// RM·RN accumulators + RN weight vectors + one x vector. Against two passes of the 4 × 4
// tile at batch 8 it measured ~1.3× on weights streamed from memory (the 4608 × 768 and
// 32000 × 768 matrices of the small model). Weight rows are prefetched into L2 12 rows
// ahead (into L1 they would evict x: 8 rows of 768 floats are already 24 of its 32 KiB);
// without it batch-8 decode ran ~30% slower.
constexpr int kDecodeRows = 8, kDecodeRN = 3;
constexpr size_t kDecodePrefetchRows = 12;

template <int RM, int RN, DType D>
PIVOTMT_AVX512 void decode_tile(const float* x, size_t ldx, const WeightView& w, size_t n, size_t k0, size_t kc, float* y,
                                size_t ldy, bool accumulate) {
  __m512 acc[RM][kDecodeRN];
#pragma GCC unroll 8
  for (int r = 0; r < RM; ++r)
#pragma GCC unroll 3
    for (int j = 0; j < kDecodeRN; ++j) acc[r][j] = _mm512_setzero_ps();
  const size_t kend = k0 + kc;
  const size_t row_bytes = bytes_of<D>(w.ld);
  const char* ahead = n + RN + kDecodePrefetchRows <= w.rows ? row_ptr<D>(w, n + kDecodePrefetchRows, 0) : nullptr;
  size_t k = k0;
  for (; k + 16 <= kend; k += 16) {
    if (ahead && (bytes_of<D>(k) & 63) == 0)
      for (int j = 0; j < RN; ++j) prefetch_l2(ahead + j * row_bytes + bytes_of<D>(k));
    __m512 b[kDecodeRN];
#pragma GCC unroll 3
    for (int j = 0; j < RN; ++j) b[j] = load_w<D>(w, n + j, k);
#pragma GCC unroll 8
    for (int r = 0; r < RM; ++r) {
      const __m512 a = _mm512_loadu_ps(x + r * ldx + k);
#pragma GCC unroll 3
      for (int j = 0; j < RN; ++j) acc[r][j] = _mm512_fmadd_ps(a, b[j], acc[r][j]);
    }
  }
  if (k < kend) {
    const __mmask16 m = __mmask16((1u << (kend - k)) - 1);
    __m512 b[kDecodeRN];
#pragma GCC unroll 3
    for (int j = 0; j < RN; ++j) b[j] = load_w_masked<D>(w, n + j, k, m);
#pragma GCC unroll 8
    for (int r = 0; r < RM; ++r) {
      const __m512 a = _mm512_maskz_loadu_ps(m, x + r * ldx + k);
#pragma GCC unroll 3
      for (int j = 0; j < RN; ++j) acc[r][j] = _mm512_fmadd_ps(a, b[j], acc[r][j]);
    }
  }
  const __mmask8 cols = __mmask8((1u << RN) - 1);
  __m128 scale = _mm_set1_ps(w.alpha);
  if (w.row_scale) scale = _mm_mul_ps(scale, _mm_maskz_loadu_ps(cols, w.row_scale + n));
#pragma GCC unroll 8
  for (int r = 0; r < RM; ++r) {
    __m128 s = _mm_mul_ps(hsum4(acc[r][0], acc[r][1], acc[r][2], acc[r][2]), scale);
    float* out = y + r * ldy + n;
    if (accumulate) s = _mm_add_ps(s, _mm_maskz_loadu_ps(cols, out));
    _mm_mask_storeu_ps(out, cols, s);
  }
}

template <DType D, int RM, int... RN>
constexpr void fill_decode_row(TileFn (&row)[kDecodeRN], std::integer_sequence<int, RN...>) {
  ((row[RN] = &decode_tile<RM, RN + 1, D>), ...);
}
template <DType D, int... RM>
constexpr auto make_decode_table(std::integer_sequence<int, RM...>) {
  struct Table {
    TileFn fn[kDecodeRows][kDecodeRN];
  } t{};
  (fill_decode_row<D, RM + 1>(t.fn[RM], std::make_integer_sequence<int, kDecodeRN>{}), ...);
  return t;
}
template <DType D>
const auto& decode_tiles() {
  static const auto table = make_decode_table<D>(std::make_integer_sequence<int, kDecodeRows>{});
  return table.fn;
}

// x rows [m0, m1) against weight rows [n0, n1): k blocks of at most kMaxKc, weight rows in
// blocks of ~256 KiB (L2) that every x tile sweeps while they stay cached, and x split into
// tiles of nearly equal height (13 rows: 5 + 4 + 4, not 6 + 6 + 1); 2 to 8 rows take the
// decode tile in one pass.
template <DType D>
void gemm_range(const float* x, size_t ldx, size_t m0, size_t m1, const WeightView& w, float* y, size_t ldy, size_t n0,
                size_t n1) {
  const size_t K = w.in, M = m1 - m0;
  // Decode (up to kDecodeRows x rows) takes k whole: each weight row is then read once from
  // start to end. In blocks of 1024 a 7B step read 2 KiB pieces of ~128 rows per pass, and
  // batch 1 ran at 17 tok/s (F16, two layers of the 7B shape read in place) against 23
  // whole (NF4 28 against 33-34; batch 8 100 against 107). x stays in L1 or L2 either way.
  const size_t kblocks = M <= size_t(kDecodeRows) ? 1 : (K + kMaxKc - 1) / kMaxKc;
  const size_t kc_full = ((K + kblocks - 1) / kblocks + 15) & ~size_t(15);
  const size_t nc = std::max<size_t>(kMaxRN, ((size_t(256) << 10) / bytes_of<D>(kc_full)) & ~size_t(kMaxRN - 1));
  const size_t mtiles = (M + kMaxRM - 1) / kMaxRM;
  const auto& fns = tiles<D>();
  for (size_t k0 = 0; k0 < K; k0 += kc_full) {
    const size_t kc = std::min(kc_full, K - k0);
    for (size_t nb = n0; nb < n1; nb += nc) {
      const size_t ne = std::min(n1, nb + nc);
      if (M >= 2 && M <= size_t(kDecodeRows)) {
        const auto& dec = decode_tiles<D>();
        for (size_t n = nb; n < ne; n += kDecodeRN)
          dec[M - 1][std::min<size_t>(kDecodeRN, ne - n) - 1](x + m0 * ldx, ldx, w, n, k0, kc, y + m0 * ldy, ldy, k0 > 0);
        continue;
      }
      if (M <= kFewRows) {
        // Decode: all of x stays in L1, and each weight tile is used by every x tile while
        // it is in L1 (one pass over the weights, streamed from memory in order).
        for (size_t n = nb; n < ne; n += kMaxRN) {
          const size_t rn = std::min<size_t>(kMaxRN, ne - n);
          size_t m = m0;
          for (size_t t = 0; t < mtiles; ++t) {
            const size_t rm = (M - (m - m0) + (mtiles - t) - 1) / (mtiles - t);  // balanced heights
            fns[rm - 1][rn - 1](x + m * ldx, ldx, w, n, k0, kc, y + m * ldy, ldy, k0 > 0);
            m += rm;
          }
        }
        continue;
      }
      size_t m = m0;
      for (size_t t = 0; t < mtiles; ++t) {
        const size_t rm = (M - (m - m0) + (mtiles - t) - 1) / (mtiles - t);  // balanced heights
        for (size_t n = nb; n < ne; n += kMaxRN) {
          const size_t rn = std::min<size_t>(kMaxRN, ne - n);
          fns[rm - 1][rn - 1](x + m * ldx, ldx, w, n, k0, kc, y + m * ldy, ldy, k0 > 0);
        }
        m += rm;
      }
    }
  }
}

// ---- c = a · b with b along the columns (attention's P · V: values are rows of the cache)

// Broadcast tile: RM rows of c × NV vectors of 16 columns (24 accumulators at most); each
// k broadcasts RM values of a and loads NV vectors of b's row k. `last` masks the final
// vector's columns; `accumulate` adds to c (later key blocks).
template <int RM, int NV>
PIVOTMT_AVX512 void nn_tile(const float* a, size_t lda, const float* b, size_t ldb, size_t k0, size_t k1, __mmask16 last,
                            float* c, size_t ldc, bool accumulate) {
  __m512 acc[RM][NV];
#pragma GCC unroll 6
  for (int r = 0; r < RM; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  for (size_t k = k0; k < k1; ++k) {
    __m512 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      bv[v] = v + 1 < NV ? _mm512_loadu_ps(b + k * ldb + 16 * v) : _mm512_maskz_loadu_ps(last, b + k * ldb + 16 * v);
#pragma GCC unroll 6
    for (int r = 0; r < RM; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * lda + k]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < RM; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const __mmask16 m = v + 1 < NV ? __mmask16(0xFFFF) : last;
      float* out = c + r * ldc + 16 * v;
      const __m512 prev = accumulate ? _mm512_maskz_loadu_ps(m, out) : _mm512_setzero_ps();
      _mm512_mask_storeu_ps(out, m, _mm512_add_ps(prev, acc[r][v]));
    }
}

using NnTileFn = void (*)(const float*, size_t, const float*, size_t, size_t, size_t, __mmask16, float*, size_t, bool);
template <int RM, int... NV>
constexpr void fill_nn_row(NnTileFn (&row)[kMaxRN], std::integer_sequence<int, NV...>) {
  ((row[NV] = &nn_tile<RM, NV + 1>), ...);
}
template <int... RM>
constexpr auto make_nn_table(std::integer_sequence<int, RM...>) {
  struct Table {
    NnTileFn fn[kMaxRM][kMaxRN];
  } t{};
  (fill_nn_row<RM + 1>(t.fn[RM], std::make_integer_sequence<int, kMaxRN>{}), ...);
  return t;
}

// ---- INT8 · INT8 (VNNI)

PIVOTMT_AVX512 void quantize_rows_q8_avx512(const float* x, size_t m0, size_t m1, Q8Rows& out) {
  const size_t K = out.cols;
  for (size_t m = m0; m < m1; ++m) {
    const float* row = x + m * K;
    uint8_t* q = out.q.data() + m * out.stride;
    for (size_t b = 0; b < out.blocks; ++b) {
      const size_t k0 = b * kQ8Block, k1 = std::min(K, k0 + kQ8Block);
      __m512 vmax = _mm512_setzero_ps();
      for (size_t k = k0; k < k1; k += 16) {
        const __mmask16 live = k + 16 <= k1 ? __mmask16(0xFFFF) : __mmask16((1u << (k1 - k)) - 1);
        vmax = _mm512_max_ps(vmax, _mm512_abs_ps(_mm512_maskz_loadu_ps(live, row + k)));
      }
      // The scalar steps of the reference quantiser, so both give the same bytes.
      const float absmax = _mm512_reduce_max_ps(vmax);
      const float scale = absmax > 0 ? absmax / 127.0f : 1.0f, inv = 1.0f / scale;
      out.scale[m * out.blocks + b] = scale;
      const __m512 vinv = _mm512_set1_ps(inv), lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
      for (size_t k = k0; k < k1; k += 16) {
        const __mmask16 live = k + 16 <= k1 ? __mmask16(0xFFFF) : __mmask16((1u << (k1 - k)) - 1);
        const __m512 v = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(live, row + k), vinv), lo), hi);
        // Round to nearest even (lrint under the default rounding mode), then + 128.
        const __m512i i = _mm512_add_epi32(_mm512_cvtps_epi32(v), _mm512_set1_epi32(128));
        _mm_mask_storeu_epi8(q + k, live, _mm512_cvtepi32_epi8(i));
      }
    }
    std::memset(q + K, 128, out.stride - K);
  }
}


constexpr int kQ8RM = 3, kQ8RN = 4;  // 12 int32 + 12 F32 accumulators

template <int RM, int RN>
PIVOTMT_VNNI void q8_tile(const Q8Rows& x, size_t m, const Matrix& w, size_t n, float* y, size_t ldy) {
  const size_t K = w.in, blocks = x.blocks, k64 = K & ~size_t(63);
  const char* ahead = n + RN + kPrefetchRows <= w.out ? reinterpret_cast<const char*>(w.row_i8(n + kPrefetchRows)) : nullptr;
  __m512 accf[RM][kQ8RN];
#pragma GCC unroll 3
  for (int r = 0; r < RM; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < kQ8RN; ++j) accf[r][j] = _mm512_setzero_ps();
  for (size_t b = 0; b < blocks; ++b) {
    __m512i acci[RM][kQ8RN];
#pragma GCC unroll 4
    for (int j = 0; j < RN; ++j) {
      // The −128 · Σw correction of the unsigned activations, in lane 0 of the block's sum.
      const __m512i init = _mm512_zextsi128_si512(_mm_cvtsi32_si128(-128 * w.block_sums[(n + j) * blocks + b]));
#pragma GCC unroll 3
      for (int r = 0; r < RM; ++r) acci[r][j] = init;
    }
    const size_t kb = b * kQ8Block, ke = std::min(K, kb + kQ8Block);
    for (size_t k = kb; k < ke; k += 64) {
      prefetch_rows(ahead, K, RN, k);
      __m512i a[RM];
#pragma GCC unroll 3
      for (int r = 0; r < RM; ++r) a[r] = _mm512_loadu_si512(x.q.data() + (m + r) * x.stride + k);
      const __mmask64 mask = k < k64 ? ~__mmask64(0) : (__mmask64(1) << (K - k)) - 1;
#pragma GCC unroll 4
      for (int j = 0; j < RN; ++j) {
        const __m512i bw = _mm512_maskz_loadu_epi8(mask, w.row_i8(n + j) + k);
#pragma GCC unroll 3
        for (int r = 0; r < RM; ++r) acci[r][j] = _mm512_dpbusd_epi32(acci[r][j], a[r], bw);
      }
    }
#pragma GCC unroll 3
    for (int r = 0; r < RM; ++r) {
      const __m512 s = _mm512_set1_ps(x.scale[(m + r) * blocks + b]);
#pragma GCC unroll 4
      for (int j = 0; j < RN; ++j) accf[r][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acci[r][j]), s, accf[r][j]);
    }
  }
  const __mmask8 cols = __mmask8((1u << RN) - 1);
  const __m128 scale = _mm_maskz_loadu_ps(cols, w.scale.data() + n);
#pragma GCC unroll 3
  for (int r = 0; r < RM; ++r)
    _mm_mask_storeu_ps(y + (m + r) * ldy + n, cols, _mm_mul_ps(hsum4(accf[r][0], accf[r][1], accf[r][2], accf[r][3]), scale));
}

// One x row (batch-1 decode): weight rows one after another, each a single sequential
// stream (the 3 × 4 tile at one row reads four rows interleaved and measured ~24 GB/s on
// the 32000 × 768 output layer against ~35 GB/s for the one-row F32 GEMV). Two int32
// chains per block hide the dpbusd latency.
PIVOTMT_VNNI void q8_gemv1(const Q8Rows& x, const Matrix& w, float* y, size_t n0, size_t n1) {
  const size_t K = w.in, blocks = x.blocks, k64 = K & ~size_t(63);
  // The rows are contiguous: prefetch a fixed distance ahead in that one stream (~3 KiB,
  // the bytes in flight one core needs at its share of the bandwidth), not whole rows
  // ahead (a 7B model's 11008-byte rows would push the stream out of L1).
  constexpr size_t kAheadBytes = 3072;
  const char* const end = reinterpret_cast<const char*>(w.row_i8(0)) + w.out * K;
  for (size_t n = n0; n < n1; ++n) {
    const int8_t* row = w.row_i8(n);
    const char* ahead = reinterpret_cast<const char*>(row) + kAheadBytes;
    if (ahead + K > end) ahead = nullptr;
    __m512 accf = _mm512_setzero_ps();
    for (size_t b = 0; b < blocks; ++b) {
      // The −128 · Σw correction of the unsigned activations, in lane 0.
      __m512i acc0 = _mm512_zextsi128_si512(_mm_cvtsi32_si128(-128 * w.block_sums[n * blocks + b]));
      __m512i acc1 = _mm512_setzero_si512();
      const size_t kb = b * kQ8Block, ke = std::min(K, kb + kQ8Block);
      size_t k = kb;
      for (; k + 128 <= ke; k += 128) {
        if (ahead) {
          prefetch_l1(ahead + k);
          prefetch_l1(ahead + k + 64);
        }
        acc0 = _mm512_dpbusd_epi32(acc0, _mm512_loadu_si512(x.q.data() + k), _mm512_loadu_si512(row + k));
        acc1 = _mm512_dpbusd_epi32(acc1, _mm512_loadu_si512(x.q.data() + k + 64), _mm512_loadu_si512(row + k + 64));
      }
      for (; k < ke; k += 64) {
        if (ahead) prefetch_l1(ahead + k);
        const __mmask64 mask = k < k64 ? ~__mmask64(0) : (__mmask64(1) << (K - k)) - 1;
        acc0 = _mm512_dpbusd_epi32(acc0, _mm512_loadu_si512(x.q.data() + k), _mm512_maskz_loadu_epi8(mask, row + k));
      }
      accf = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(acc0, acc1)), _mm512_set1_ps(x.scale[b]), accf);
    }
    y[n] = _mm512_reduce_add_ps(accf) * w.scale[n];
  }
}

using Q8TileFn = void (*)(const Q8Rows&, size_t, const Matrix&, size_t, float*, size_t);
template <int RM, int... RN>
constexpr void fill_q8_row(Q8TileFn (&row)[kQ8RN], std::integer_sequence<int, RN...>) {
  ((row[RN] = &q8_tile<RM, RN + 1>), ...);
}
const auto& q8_tiles() {
  static const auto table = [] {
    struct Table {
      Q8TileFn fn[kQ8RM][kQ8RN];
    } t{};
    fill_q8_row<1>(t.fn[0], std::make_integer_sequence<int, kQ8RN>{});
    fill_q8_row<2>(t.fn[1], std::make_integer_sequence<int, kQ8RN>{});
    fill_q8_row<3>(t.fn[2], std::make_integer_sequence<int, kQ8RN>{});
    return t;
  }();
  return table.fn;
}

}  // namespace

void gemm_f32_avx512(const float* x, size_t M, const Matrix& w, float* y, size_t ldy, size_t n0, size_t n1) {
  WeightView v;
  v.rows = w.out;
  v.in = v.ld = w.in;
  switch (w.dtype) {
    case DType::F16: v.data = w.data_f16(); return gemm_range<DType::F16>(x, w.in, 0, M, v, y, ldy, n0, n1);
    case DType::I8:
      v.data = w.i8.data();
      v.row_scale = w.scale.data();
      return gemm_range<DType::I8>(x, w.in, 0, M, v, y, ldy, n0, n1);
    case DType::F32: v.data = w.data_f32(); return gemm_range<DType::F32>(x, w.in, 0, M, v, y, ldy, n0, n1);
    case DType::NF4:
      if (w.in % 16 != 0) throw std::logic_error("gemm_f32_avx512: NF4 rows must be a multiple of 16 wide");
      v.data = w.nf4.packed.data();
      v.block_scale = w.nf4.absmax.data();
      v.codes = nf4::codes().data();
      return gemm_range<DType::NF4>(x, w.in, 0, M, v, y, ldy, n0, n1);
    default: throw std::logic_error("gemm_f32_avx512: F32, F16, I8 or NF4 weights");
  }
}

void gemm_nt_avx512(const float* a, size_t lda, size_t M, const float* b, size_t ldb, size_t N, size_t K, float alpha,
                    float* c, size_t ldc) {
  WeightView v;
  v.data = b;
  v.rows = N;
  v.in = K;
  v.ld = ldb;
  v.alpha = alpha;
  gemm_range<DType::F32>(a, lda, 0, M, v, c, ldc, 0, N);
}

void quantize_rows_q8_fast(const float* x, size_t M, size_t K, Q8Rows& out) {
  out.rows = M;
  out.cols = K;
  out.stride = (K + 63) & ~size_t(63);
  out.blocks = (K + kQ8Block - 1) / kQ8Block;
  out.q.resize(M * out.stride);
  out.scale.resize(M * out.blocks);
  // A few rows per task: one row of the model is only a few microseconds of work.
  parallel_for(M, [&](size_t m0, size_t m1) { quantize_rows_q8_avx512(x, m0, m1, out); });
}

namespace {
// One 16 × 16 block: dst[i, j] = scale · src[j, i].
PIVOTMT_AVX512 void transpose16_scaled(const float* src, size_t ld_src, float scale, float* dst, size_t ld_dst) {
  __m512 r[16], t[16];
  const __m512 sv = _mm512_set1_ps(scale);
  for (int j = 0; j < 16; ++j) r[j] = _mm512_mul_ps(_mm512_loadu_ps(src + j * ld_src), sv);
  // Pairs of rows interleaved by 32-bit lanes, then 64-bit lanes, then 128-bit blocks twice.
  for (int j = 0; j < 16; j += 2) {
    t[j] = _mm512_unpacklo_ps(r[j], r[j + 1]);
    t[j + 1] = _mm512_unpackhi_ps(r[j], r[j + 1]);
  }
  for (int j = 0; j < 16; j += 4) {
    r[j] = _mm512_shuffle_ps(t[j], t[j + 2], 0x44);
    r[j + 1] = _mm512_shuffle_ps(t[j], t[j + 2], 0xEE);
    r[j + 2] = _mm512_shuffle_ps(t[j + 1], t[j + 3], 0x44);
    r[j + 3] = _mm512_shuffle_ps(t[j + 1], t[j + 3], 0xEE);
  }
  for (int j = 0; j < 4; ++j) {
    t[j] = _mm512_shuffle_f32x4(r[j], r[j + 4], 0x88);
    t[j + 4] = _mm512_shuffle_f32x4(r[j], r[j + 4], 0xDD);
    t[j + 8] = _mm512_shuffle_f32x4(r[j + 8], r[j + 12], 0x88);
    t[j + 12] = _mm512_shuffle_f32x4(r[j + 8], r[j + 12], 0xDD);
  }
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
    r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xDD);
  }
  for (int q = 0; q < 16; ++q) _mm512_storeu_ps(dst + size_t(q) * ld_dst, r[q]);  // r[q]: column q
}
}  // namespace

void transpose_scaled_avx512(const float* src, size_t ld_src, size_t rows, size_t cols, float scale, float* dst,
                             size_t ld_dst) {
  const size_t rows16 = rows & ~size_t(15), cols16 = cols & ~size_t(15);
  for (size_t j = 0; j < rows16; j += 16)
    for (size_t i = 0; i < cols16; i += 16) transpose16_scaled(src + j * ld_src + i, ld_src, scale, dst + i * ld_dst + j, ld_dst);
  // Edges: the rows past the last whole block (all columns), the columns past it (whole rows).
  for (size_t j = rows16; j < rows; ++j)
    for (size_t i = 0; i < cols; ++i) dst[i * ld_dst + j] = src[j * ld_src + i] * scale;
  for (size_t j = 0; j < rows16; ++j)
    for (size_t i = cols16; i < cols; ++i) dst[i * ld_dst + j] = src[j * ld_src + i] * scale;
}

void gemm_nn_avx512(const float* a, size_t lda, size_t M, const float* b, size_t ldb, size_t K, size_t N, float* c,
                    size_t ldc) {
  static const auto table = make_nn_table(std::make_integer_sequence<int, kMaxRM>{});
  if (K == 0) {
    for (size_t m = 0; m < M; ++m) std::fill(c + m * ldc, c + m * ldc + N, 0.0f);
    return;
  }
  // Keys in blocks whose b rows (64 columns: 256 bytes each) stay in L2 while every row
  // tile of a sweeps them.
  constexpr size_t kBlockK = 512, kCols = 16 * kMaxRN;
  const size_t mtiles = (M + kMaxRM - 1) / kMaxRM;
  for (size_t k0 = 0; k0 < K; k0 += kBlockK) {
    const size_t k1 = std::min(K, k0 + kBlockK);
    for (size_t n = 0; n < N; n += kCols) {
      const size_t cols = std::min(kCols, N - n), nv = (cols + 15) / 16;
      const __mmask16 last = __mmask16((1u << (cols - 16 * (nv - 1))) - 1);
      size_t m = 0;
      for (size_t t = 0; t < mtiles; ++t) {
        const size_t rm = (M - m + (mtiles - t) - 1) / (mtiles - t);  // balanced heights
        table.fn[rm - 1][nv - 1](a + m * lda, lda, b + n, ldb, k0, k1, last, c + m * ldc + n, ldc, k0 > 0);
        m += rm;
      }
    }
  }
}

void gemm_q8_vnni(const Q8Rows& x, const Matrix& w, float* y, size_t ldy, size_t n0, size_t n1) {
  if (x.rows == 1) return q8_gemv1(x, w, y, n0, n1);
  // Weight rows in blocks that stay in L2 while every x tile sweeps them.
  const size_t nc = std::max<size_t>(kQ8RN, ((size_t(256) << 10) / std::max<size_t>(w.in, 1)) & ~size_t(kQ8RN - 1));
  const size_t M = x.rows, mtiles = (M + kQ8RM - 1) / kQ8RM;
  const auto& fns = q8_tiles();
  for (size_t nb = n0; nb < n1; nb += nc) {
    const size_t ne = std::min(n1, nb + nc);
    if (M <= kFewRows) {  // as in gemm_range: each weight tile used by every x tile while in L1
      for (size_t n = nb; n < ne; n += kQ8RN) {
        size_t m = 0;
        for (size_t t = 0; t < mtiles; ++t) {
          const size_t rm = (M - m + (mtiles - t) - 1) / (mtiles - t);
          fns[rm - 1][std::min<size_t>(kQ8RN, ne - n) - 1](x, m, w, n, y, ldy);
          m += rm;
        }
      }
      continue;
    }
    size_t m = 0;
    for (size_t t = 0; t < mtiles; ++t) {
      const size_t rm = (M - m + (mtiles - t) - 1) / (mtiles - t);
      for (size_t n = nb; n < ne; n += kQ8RN) fns[rm - 1][std::min<size_t>(kQ8RN, ne - n) - 1](x, m, w, n, y, ldy);
      m += rm;
    }
  }
}

}  // namespace pivotmt::cpu::kernels
