// Fast CPU kernels. Prefill (many rows): OpenBLAS SGEMM, F16 weights converted block by
// block with F16C. Decode (few rows): a hand-written GEMV over F16 or F32 weights with
// AVX2/FMA chosen at run time (portable loop otherwise), threads over output rows —
// because a GEMV is memory-bound and BLAS libraries do not read F16.
#include <cblas.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "backends/cpu/cpu_features.h"
#include "backends/cpu/gemm.h"
#include "backends/cpu/ops.h"
#include "backends/cpu/thread_pool.h"
#include "backends/cpu/vmath.h"
#include "core/error.h"

namespace pivotmt::cpu {

void blas_use_caller_thread_only() {
  openblas_set_num_threads(1);
  // Not in every OpenBLAS build (the serial one has no thread server): looked up, not linked.
  using Shutdown = int (*)();
  if (auto shutdown = reinterpret_cast<Shutdown>(dlsym(RTLD_DEFAULT, "blas_thread_shutdown_"))) shutdown();
}

}  // namespace pivotmt::cpu

namespace pivotmt::cpu::fast {
namespace {

bool cpu_has_avx2_fma_f16c() { return isa() >= Isa::Avx2; }

// Up to this many rows: the GEMV path (weights read once per call, converted in registers);
// above, SGEMM on converted blocks (its per-call F16 -> F32 conversion of every weight and
// its small-M inefficiency cost more than the GEMV's FLOP rate below ~32 rows here, for
// matrices that stream from memory). Matrices small enough to stay in cache go to SGEMM
// above kGemvRowsCached rows: the GEMV kernel is load-bound, SGEMM nearer the FMA peak.
constexpr size_t kGemvMaxRows = 32, kGemvRowsCached = 8;
constexpr size_t kCachedMatrixBytes = size_t(1) << 20;
// F32 weights from this many rows on: SGEMM even with AVX-512 (see linear).
constexpr size_t kSgemmRowsF32 = 128;

// OpenBLAS runs single-threaded, called from our pool's threads: with both OpenBLAS's
// threads and ours on the two cores, each side's idle workers spin and yield against the
// other's (perf showed ~15% of prefill in __schedule / sched_yield). Its worker threads are
// also shut down: OpenBLAS 0.3.21's idle workers kept spinning on this machine even with
// one thread requested, halving the tiny model's decode speed.
void single_threaded_blas() {
  static const bool once = [] {
    blas_use_caller_thread_only();
    return true;
  }();
  (void)once;
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma,f16c"))) float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 h = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)));
}

// One input row: four independent accumulators keep the FMA pipes busy, so the loop is
// limited by memory bandwidth, not by FMA latency.
__attribute__((target("avx2,fma,f16c"))) void gemv1_avx2(const float* x, const Matrix& w, float* y, size_t o0,
                                                          size_t o1) {
  const size_t in = w.in, in32 = in & ~size_t(31);
  const bool half = w.dtype == DType::F16;
  for (size_t o = o0; o < o1; ++o) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    if (half) {
      const uint16_t* r = w.row_f16(o);
      for (; i < in32; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r + i))), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r + i + 8))), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r + i + 16))), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r + i + 24))), a3);
      }
      for (; i + 8 <= in; i += 8)
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r + i))), a0);
    } else {
      const float* r = w.row_f32(o);
      for (; i < in32; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(r + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(r + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), _mm256_loadu_ps(r + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), _mm256_loadu_ps(r + i + 24), a3);
      }
      for (; i + 8 <= in; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(r + i), a0);
    }
    float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < in; ++i) s += x[i] * (half ? f16_to_f32(w.row_f16(o)[i]) : w.row_f32(o)[i]);
    y[o] = s;
  }
}

// Eight int8 weights as eight floats.
__attribute__((target("avx2,fma,f16c"), always_inline)) inline __m256 widen(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

// INT8, one input row: four independent accumulators over 32 weights per step, so the FMA
// latency is hidden (one chain is latency-bound at well under the memory bandwidth).
__attribute__((target("avx2,fma,f16c"))) void gemv1_i8_avx2(const float* x, const Matrix& w, float* y, size_t o0,
                                                             size_t o1) {
  const size_t in = w.in, in32 = in & ~size_t(31);
  for (size_t o = o0; o < o1; ++o) {
    const int8_t* r = w.row_i8(o);
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i < in32; i += 32) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), widen(r + i), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), widen(r + i + 8), a1);
      a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), widen(r + i + 16), a2);
      a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), widen(r + i + 24), a3);
    }
    for (; i + 8 <= in; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), widen(r + i), a0);
    float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < in; ++i) s += x[i] * float(r[i]);
    y[o] = s * w.scale[o];
  }
}

// Eight NF4 weights (flat elements e..e+7, e a multiple of 8, inside one 64-value block) as
// floats: the nibbles (high first) index the 16 codes through two 8-lane permutes, then
// the block's absmax scales them (the same product as nf4::dequantize).
__attribute__((target("avx2,fma,f16c"), always_inline)) inline __m256 nf4_eight(const Matrix& w, size_t e) {
  static const __m256 lo = _mm256_loadu_ps(nf4::codes().data()), hi = _mm256_loadu_ps(nf4::codes().data() + 8);
  int32_t bytes;
  std::memcpy(&bytes, w.nf4.packed.data() + e / 2, 4);
  const __m128i dup = _mm_shuffle_epi8(_mm_cvtsi32_si128(bytes), _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, -1, -1, -1, -1, -1, -1, -1, -1));
  __m256i idx = _mm256_srlv_epi32(_mm256_cvtepu8_epi32(dup), _mm256_setr_epi32(4, 0, 4, 0, 4, 0, 4, 0));
  idx = _mm256_and_si256(idx, _mm256_set1_epi32(15));
  const __m256 upper = _mm256_castsi256_ps(_mm256_cmpgt_epi32(idx, _mm256_set1_epi32(7)));
  const __m256 code = _mm256_blendv_ps(_mm256_permutevar8x32_ps(lo, idx), _mm256_permutevar8x32_ps(hi, idx), upper);
  return _mm256_mul_ps(code, _mm256_set1_ps(w.nf4.absmax[e / nf4::kBlock]));
}

// R input rows (R a compile-time constant, so the R accumulators stay in registers — with a
// run-time row count they were an array in memory, reloaded and stored at every FMA, and
// batch 8 ran at ~1/4 of the cores' FMA rate): y[r, o] = sum_i x[r, i] * w[o, i] for rows o
// in [o0, o1). Each weight vector is loaded (and widened) once for all R rows.
template <int R, DType D>
__attribute__((target("avx2,fma,f16c"))) void gemv_rows_avx2(const float* x, const Matrix& w, float* y, size_t ldy,
                                                              size_t o0, size_t o1) {
  const size_t in = w.in, in8 = in & ~size_t(7);
  for (size_t o = o0; o < o1; ++o) {
    __m256 acc[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (size_t i = 0; i < in8; i += 8) {
      __m256 wv;
      if constexpr (D == DType::F16) wv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.row_f16(o) + i)));
      else if constexpr (D == DType::I8) wv = widen(w.row_i8(o) + i);
      else if constexpr (D == DType::NF4) wv = nf4_eight(w, o * in + i);
      else wv = _mm256_loadu_ps(w.row_f32(o) + i);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(x + r * in + i), wv, acc[r]);
    }
    const float scale = D == DType::I8 ? w.scale[o] : 1.0f;
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      float s = hsum(acc[r]);
      if constexpr (D != DType::NF4) {  // NF4 takes this path only when in % 8 == 0
        for (size_t i = in8; i < in; ++i)
          s += x[r * in + i] * (D == DType::F16 ? f16_to_f32(w.row_f16(o)[i])
                                : D == DType::I8 ? float(w.row_i8(o)[i])
                                                 : w.row_f32(o)[i]);
      }
      y[r * ldy + o] = s * scale;
    }
  }
}

template <DType D>
__attribute__((target("avx2,fma,f16c"))) void gemv_group(size_t rows, const float* x, const Matrix& w, float* y, size_t ldy,
                                                          size_t o0, size_t o1) {
  switch (rows) {
    case 1: return gemv_rows_avx2<1, D>(x, w, y, ldy, o0, o1);
    case 2: return gemv_rows_avx2<2, D>(x, w, y, ldy, o0, o1);
    case 3: return gemv_rows_avx2<3, D>(x, w, y, ldy, o0, o1);
    case 4: return gemv_rows_avx2<4, D>(x, w, y, ldy, o0, o1);
    case 5: return gemv_rows_avx2<5, D>(x, w, y, ldy, o0, o1);
    case 6: return gemv_rows_avx2<6, D>(x, w, y, ldy, o0, o1);
    case 7: return gemv_rows_avx2<7, D>(x, w, y, ldy, o0, o1);
    default: return gemv_rows_avx2<8, D>(x, w, y, ldy, o0, o1);
  }
}

// T (<= kGemvMaxRows) rows in groups of up to 8, output rows in chunks whose weights stay in
// the L1/L2 cache while every group reads them: the weights stream from memory once per step.
__attribute__((target("avx2,fma,f16c"))) void gemv_avx2(const float* x, size_t T, const Matrix& w, float* y,
                                                         size_t ldy, size_t o0, size_t o1) {
  constexpr size_t kChunk = 16;  // output rows: 16 x 4096 F16 weights = 128 KiB at the 7B shape
  for (size_t c0 = o0; c0 < o1; c0 += kChunk) {
    const size_t c1 = std::min(o1, c0 + kChunk);
    for (size_t t0 = 0; t0 < T; t0 += 8) {
      const float* xt = x + t0 * w.in;
      float* yt = y + t0 * ldy;
      const size_t rows = std::min<size_t>(8, T - t0);
      switch (w.dtype) {
        case DType::F16: gemv_group<DType::F16>(rows, xt, w, yt, ldy, c0, c1); break;
        case DType::I8: gemv_group<DType::I8>(rows, xt, w, yt, ldy, c0, c1); break;
        case DType::NF4: gemv_group<DType::NF4>(rows, xt, w, yt, ldy, c0, c1); break;
        default: gemv_group<DType::F32>(rows, xt, w, yt, ldy, c0, c1); break;
      }
    }
  }
}
#endif

void gemv_portable(const float* x, size_t T, const Matrix& w, float* y, size_t ldy, size_t o0, size_t o1) {
  std::vector<float> row(w.in);
  for (size_t o = o0; o < o1; ++o) {
    const float* wr = w.dtype == DType::F32 ? w.row_f32(o) : row.data();
    if (w.dtype != DType::F32) w.row_to_f32(o, row.data());
    for (size_t t = 0; t < T; ++t) {
      float s = 0.0f;
      for (size_t i = 0; i < w.in; ++i) s += x[t * w.in + i] * wr[i];
      y[t * ldy + o] = s;
    }
  }
}
}  // namespace

void linear(const float* x, size_t T, const Matrix& w, float* y, size_t ldy) {
  if (T == 0) return;
  if (ldy == 0) ldy = w.out;
  const Isa level = isa();
  // Output rows split over the pool in units of the kernels' 4-row tiles.
  const auto split_rows = [&](auto&& body) {
    parallel_for((w.out + 3) / 4, [&](size_t u0, size_t u1) { body(u0 * 4, std::min(w.out, u1 * 4)); });
  };
  if (w.dtype == DType::GGML && w.int8_activations) {  // --weights gguf-q8: llama.cpp's int8 products
    static thread_local kernels::GgmlQ8Blocks buffer;  // the workers read it through the reference
    kernels::GgmlQ8Blocks& q = buffer;
    if (level >= Isa::Avx512) kernels::quantize_rows_ggml_q8_fast(x, T, w.in, q);
    else kernels::quantize_rows_ggml_q8(x, T, w.in, q);
    // Output rows split over the pool in the packed layout's groups of 16.
    constexpr size_t kGroup = GgmlPacked::kGroupRows;
    parallel_for((w.out + kGroup - 1) / kGroup, [&](size_t g0, size_t g1) {
      const size_t n0 = g0 * kGroup, n1 = std::min(w.out, g1 * kGroup);
      if (level >= Isa::Avx512Vnni) kernels::gemm_ggml_q8_vnni(q, w, y, ldy, n0, n1);
      else if (level >= Isa::Avx2) kernels::gemm_ggml_q8_avx2(q, w, y, ldy, n0, n1);
      else kernels::gemm_ggml_q8_ref(q, w, y, ldy, n0, n1);
    });
    return;
  }
  if (w.dtype == DType::GGML && level >= Isa::Avx2) {  // a GGUF file's blocks (Q8_0, Q4_0, Q4_1, K-quants), read in place
    split_rows([&](size_t n0, size_t n1) {
      if (level >= Isa::Avx512) kernels::gemm_ggml_avx512(x, T, w, y, ldy, n0, n1);
      else kernels::gemm_ggml_avx2(x, T, w, y, ldy, n0, n1);
    });
    return;
  }
  if (w.dtype == DType::I8 && w.int8_activations) {
    // Reused: decode calls this hundreds of times a step. The workers read the caller's
    // buffer through the reference (a thread_local named in the lambda would be theirs).
    static thread_local kernels::Q8Rows buffer;
    kernels::Q8Rows& q = buffer;
    if (level >= Isa::Avx512) kernels::quantize_rows_q8_fast(x, T, w.in, q);
    else kernels::quantize_rows_q8(x, T, w.in, q);
    split_rows([&](size_t n0, size_t n1) {
      if (level >= Isa::Avx512Vnni) kernels::gemm_q8_vnni(q, w, y, ldy, n0, n1);
      else kernels::gemm_q8_ref(q, w, y, ldy, n0, n1);
    });
    return;
  }
  // One row (batch-1 decode) takes the tiles too, with k whole (see gemm_range). The AVX2
  // one-row GEMV below, kept for machines without AVX-512, ran at 18-19 tok/s on two layers
  // of the 7B shape (F16 read in place) against 23 for the tiles; weight-only INT8 widened 8
  // weights per instruction chain there and ran well under the memory bandwidth (small
  // model 92-100 tok/s against 382 on the tiles, 7B shape 20 against 44).
  // F32 weights and many rows: OpenBLAS's packed SGEMM (below) ran at 155-180 GFLOP/s on
  // two cores for 256-1024 rows of XLM-R-large's shapes where the unpacked tiles reached
  // 75-80 (they win for F16 / I8 weights, which SGEMM would need converted). At 64 rows
  // SGEMM's packing of the weights on every call is a third of its time: NLLB's 4-beam
  // search over 16 sentences (64 rows through a 256k × 1024 lm_head each step) ran in
  // 32.6 s with SGEMM from 64 rows and 28.3 s with the tiles up to 127.
  const bool f32_sgemm = w.dtype == DType::F32 && T >= kSgemmRowsF32;
  // NF4 up to kGemvMaxRows rows: the same tiles, 16 codes decoded in registers per vector.
  // Small preset, 2 threads (bench_engine nf4, against the AVX2 GEMV below): decode b1
  // 63 -> 180-200 tok/s, b8 265 -> 570-640, b32 463 -> 630-680. For a 512-row prefill the
  // tiles decode each weight vector once per 6 rows and ran at 1170 tok/s against 1480
  // for converted blocks through SGEMM, which many rows keep.
  const bool tiles = w.dtype == DType::NF4 ? w.in % 16 == 0 && T <= kGemvMaxRows : !f32_sgemm;
  if (level >= Isa::Avx512 && tiles) {
    split_rows([&](size_t n0, size_t n1) { kernels::gemm_f32_avx512(x, T, w, y, ldy, n0, n1); });
    return;
  }
  // Without AVX-512, NF4 decodes in the AVX2 GEMV (rows a multiple of 8 wide); otherwise it
  // converts blocks of rows to F32 for SGEMM below.
  bool nf4_gemv = false;
#if defined(__x86_64__)
  nf4_gemv = w.dtype == DType::NF4 && w.in % 8 == 0 && cpu_has_avx2_fma_f16c();
#endif
  if ((w.dtype != DType::NF4 || nf4_gemv) && w.dtype != DType::GGML && !f32_sgemm && T <= (w.bytes() < kCachedMatrixBytes ? kGemvRowsCached : kGemvMaxRows)) {
    parallel_for(w.out, [&](size_t o0, size_t o1) {
#if defined(__x86_64__)
      if (cpu_has_avx2_fma_f16c()) {
        if (T == 1 && w.dtype != DType::NF4)
          return w.dtype == DType::I8 ? gemv1_i8_avx2(x, w, y, o0, o1) : gemv1_avx2(x, w, y, o0, o1);
        return gemv_avx2(x, T, w, y, ldy, o0, o1);
      }
#endif
      gemv_portable(x, T, w, y, ldy, o0, o1);
    });
    return;
  }
  // Our pool splits the output rows; each thread converts its own blocks of F16 / I8 rows
  // to F32 and runs a single-threaded SGEMM on them (see single_threaded_blas).
  single_threaded_blas();
  constexpr size_t kUnit = 64, kBlock = 256;  // rows per split unit / per converted block
  parallel_for((w.out + kUnit - 1) / kUnit, [&](size_t u0, size_t u1) {
    const size_t begin = u0 * kUnit, end = std::min(w.out, u1 * kUnit);
    if (w.dtype == DType::F32) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(end - begin), int(w.in), 1.0f, x, int(w.in),
                  w.data_f32() + begin * w.in, int(w.in), 0.0f, y + begin, int(ldy));
      return;
    }
    std::vector<float> block(std::min(kBlock, end - begin) * w.in);
    for (size_t o0 = begin; o0 < end; o0 += kBlock) {
      const size_t rows = std::min(kBlock, end - o0);
      if (w.dtype == DType::F16) convert_floats(DType::F16, w.row_f16(o0), DType::F32, block.data(), rows * w.in);
      else
        for (size_t r = 0; r < rows; ++r) w.row_to_f32(o0 + r, &block[r * w.in]);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(rows), int(w.in), 1.0f, x, int(w.in),
                  block.data(), int(w.in), 0.0f, y + o0, int(ldy));
    }
  });
}

void rmsnorm(const float* x, const float* w, size_t T, size_t H, float eps, float* y) {
  parallel_for(T, [&](size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; ++t) vmath::rms_norm_row(x + t * H, H, w, eps, y + t * H);
  });
}

void add_rows(float* x, size_t x_stride, const float* y, size_t y_stride, size_t T, size_t n) {
  parallel_for(T, [&](size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; ++t) vmath::add(x + t * x_stride, y + t * y_stride, n);
  });
}

RopeTable rope_table(const int64_t* positions, size_t T, const Rope& r) {
  RopeTable table;
  table.half = r.inv_freq.size();
  table.cos.resize(T * table.half);
  table.sin.resize(T * table.half);
  parallel_for(T, [&](size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; ++t)
      for (size_t i = 0; i < table.half; ++i) {
        const float angle = float(positions[t]) * r.inv_freq[i];
        table.cos[t * table.half + i] = std::cos(angle);
        table.sin[t * table.half + i] = std::sin(angle);
      }
  });
  return table;
}

void rope_apply(float* x, size_t T, size_t stride, size_t heads, size_t d, const RopeTable& table) {
  if (table.half != d / 2 || table.cos.size() < T * table.half)
    throw Error(fmt::format("rope_apply: a table of {} pairs for {} rows, used for {} rows of head_dim {}", table.half,
                            table.half ? table.cos.size() / table.half : 0, T, d));
  const size_t half = table.half;
  parallel_for(T, [&](size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; ++t)
      for (size_t h = 0; h < heads; ++h)
        vmath::rope_head(x + t * stride + h * d, half, &table.cos[t * half], &table.sin[t * half]);
  });
}

void rope(float* x, size_t T, size_t stride, size_t heads, size_t d, const int64_t* positions, const Rope& r) {
  rope_apply(x, T, stride, heads, d, rope_table(positions, T, r));
}

void silu_mul(const float* gate_up, size_t T, size_t F, float* out) {
  parallel_for(T * F, [&](size_t b, size_t e) {
    // Element j = t * F + i: the chunk [b, e) cut at row ends.
    while (b < e) {
      const size_t t = b / F, i = b % F, n = std::min(e - b, F - i);
      vmath::silu_mul(gate_up + t * 2 * F + i, gate_up + t * 2 * F + F + i, n, out + b);
      b += n;
    }
  });
}

namespace {
// Prefill: per head and block of query rows, S = Q K^T and O = softmax(S) V over the keys
// that block can see (K and V rows strided as the cache lays them out), the causal / window mask
// applied between them. Blocks of kQueryBlock rows keep the scores buffer small for long
// prompts (7,000 tokens: 1.8 MiB per thread, not 196 MiB) and skip the keys above the
// diagonal (half the work of a whole-prompt T × L product).
//
// With AVX-512 both products are broadcast kernels (gemm.h) reading their operands in
// place; for S that needs K^T, so a task takes kBlocksPerTask consecutive blocks of one
// head and transposes (and scales) their keys once. (OpenBLAS packed both operands on every
// call: 14% of a long-prompt ablation; a dot-product kernel for S spent as much on its
// horizontal sums as on FMAs, d being only 64.) Below AVX-512: OpenBLAS.
constexpr size_t kQueryBlock = 64, kBlocksPerTask = 8;

void attention_gemm(const float* q, size_t q_stride, const float* k, const float* v, size_t T, size_t L,
                    size_t n_heads, size_t n_kv, size_t d, size_t window, float* out, KvStrides at) {
  const size_t group = n_heads / n_kv;
  const float scale = 1.0f / std::sqrt(float(d));
  const size_t blocks = (T + kQueryBlock - 1) / kQueryBlock, chunks = (blocks + kBlocksPerTask - 1) / kBlocksPerTask;
  const bool avx512 = isa() >= Isa::Avx512;
  if (!avx512) single_threaded_blas();
  // The first key position row t (of this call) sees.
  const auto first_key = [&](size_t pos) { return window > 0 && pos + 1 > window ? pos + 1 - window : size_t(0); };
  parallel_for(n_heads * chunks, [&](size_t j0, size_t j1) {
    std::vector<float> scores, keys_t, row_inv(kQueryBlock);
    for (size_t job = j0; job < j1; ++job) {
      const size_t h = job / chunks, kv = h / group;
      const size_t b0 = (job % chunks) * kBlocksPerTask, b1 = std::min(blocks, b0 + kBlocksPerTask);
      // Keys [kt0, kt0 + nkt) cover every block of this task: K^T [d, nkt], times 1/sqrt(d).
      const size_t kt0 = first_key(L - T + b0 * kQueryBlock), nkt = L - T + std::min(T, b1 * kQueryBlock) - kt0;
      if (avx512) {
        keys_t.resize(d * nkt);
        kernels::transpose_scaled_avx512(k + kt0 * at.pos + kv * at.head, at.pos, nkt, d, scale, keys_t.data(), nkt);
      }
      for (size_t blk = b0; blk < b1; ++blk) {
        const size_t t0 = blk * kQueryBlock, t1 = std::min(T, t0 + kQueryBlock), rows = t1 - t0;
        const size_t first_pos = L - T + t0, last_pos = L - T + t1 - 1;
        const size_t k0 = first_key(first_pos);  // first key any row of the block sees
        const size_t keys = last_pos + 1 - k0;
        scores.resize(rows * keys);
        const float* qh = q + t0 * q_stride + h * d;
        const float* vh = v + k0 * at.pos + kv * at.head;
        float* oh = out + (t0 * n_heads + h) * d;
        if (avx512)
          kernels::gemm_nn_avx512(qh, q_stride, rows, keys_t.data() + (k0 - kt0), nkt, d, keys, scores.data(), keys);
        else
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(rows), int(keys), int(d), scale, qh, int(q_stride),
                      k + k0 * at.pos + kv * at.head, int(at.pos), 0.0f, scores.data(), int(keys));
        for (size_t t = 0; t < rows; ++t) {
          float* row = &scores[t * keys];
          const size_t pos = first_pos + t;
          const size_t lo = first_key(pos) - k0, hi = pos - k0;  // visible: [lo, hi] of this block's keys
          std::fill(row, row + lo, 0.0f);
          std::fill(row + hi + 1, row + keys, 0.0f);
          const float max_score = vmath::max_of(row + lo, hi + 1 - lo);
          // Normalised after the product with V (d values per row, not `keys`).
          row_inv[t] = 1.0f / vmath::exp_shifted_sum(row + lo, hi + 1 - lo, max_score);
        }
        if (avx512)
          kernels::gemm_nn_avx512(scores.data(), keys, rows, vh, at.pos, keys, d, oh, n_heads * d);
        else
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(d), int(keys), 1.0f, scores.data(),
                      int(keys), vh, int(at.pos), 0.0f, oh, int(n_heads * d));
        for (size_t t = 0; t < rows; ++t) {
          float* o = oh + t * n_heads * d;
          for (size_t i = 0; i < d; ++i) o[i] *= row_inv[t];
        }
      }
    }
  });
}
}  // namespace

namespace {
// Decode attention's inner loops (a dot product per key, then a weighted sum of values):
// AVX2 when the CPU has it (the plain loops were not vectorised at -O2).
#if defined(__x86_64__)
__attribute__((target("avx2,fma,f16c"))) float dot_avx2(const float* a, const float* b, size_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  float s = hsum(_mm256_add_ps(acc0, acc1));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}
__attribute__((target("avx2,fma,f16c"))) void axpy_avx2(float p, const float* x, float* y, size_t n) {
  const __m256 pv = _mm256_set1_ps(p);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(pv, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; ++i) y[i] += p * x[i];
}
#endif
float dot(const float* a, const float* b, size_t n) {
#if defined(__x86_64__)
  if (cpu_has_avx2_fma_f16c()) return dot_avx2(a, b, n);
#endif
  float s = 0.0f;
  for (size_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}
void axpy(float p, const float* x, float* y, size_t n) {
#if defined(__x86_64__)
  if (cpu_has_avx2_fma_f16c()) return axpy_avx2(p, x, y, n);
#endif
  for (size_t i = 0; i < n; ++i) y[i] += p * x[i];
}
}  // namespace

namespace {
// One query row of one head against its sequence's cache (decode): scores, softmax, the
// weighted sum of values. `scores` holds at least pos + 1 floats.
void attend_row(const float* qv, const float* k, const float* v, size_t pos, size_t kv, KvStrides at, size_t d,
                size_t window, float* scores, float* o) {
  const float scale = 1.0f / std::sqrt(float(d));
  const size_t first = window > 0 && pos + 1 > window ? pos + 1 - window : 0;
  const size_t n = pos + 1 - first;
  const float *keys = k + first * at.pos + kv * at.head, *values = v + first * at.pos + kv * at.head;
  if (isa() >= Isa::Avx512) {
    // The same products as prefill's, one row: scores four keys per horizontal sum, then
    // the values weighted in registers (no per-key load and store of the output).
    kernels::gemm_nt_avx512(qv, d, 1, keys, at.pos, n, d, scale, scores + first, n);
    const float inv = 1.0f / vmath::exp_shifted_sum(scores + first, n, vmath::max_of(scores + first, n));
    kernels::gemm_nn_avx512(scores + first, n, 1, values, at.pos, n, d, o, d);
    for (size_t i = 0; i < d; ++i) o[i] *= inv;
    return;
  }
  for (size_t j = 0; j < n; ++j) scores[first + j] = dot(qv, keys + j * at.pos, d) * scale;
  const float inv = 1.0f / vmath::exp_shifted_sum(scores + first, n, vmath::max_of(scores + first, n));
  for (size_t i = 0; i < d; ++i) o[i] = 0.0f;
  for (size_t j = 0; j < n; ++j) axpy(scores[first + j] * inv, values + j * at.pos, o, d);
}
}  // namespace

void attention(const float* q, size_t q_stride, const float* k, const float* v, size_t T, size_t L, size_t n_heads,
               size_t n_kv, size_t d, size_t window, float* out, KvStrides kv) {
  if (T >= 16) return attention_gemm(q, q_stride, k, v, T, L, n_heads, n_kv, d, window, out, kv.resolved(n_kv, d));
  AttentionJob job;
  job.q = q;
  job.q_stride = q_stride;
  job.k = k;
  job.v = v;
  job.T = T;
  job.L = L;
  job.out = out;
  job.out_stride = n_heads * d;
  job.kv = kv;
  attention_many({job}, n_heads, n_kv, d, window);
}

void attention_many(const std::vector<AttentionJob>& jobs, size_t n_heads, size_t n_kv, size_t d, size_t window) {
  // Flattened (job, row, head) index: prefix sums of the jobs' row counts.
  std::vector<size_t> first_row(jobs.size() + 1, 0);
  size_t max_len = 0;
  for (size_t i = 0; i < jobs.size(); ++i) {
    first_row[i + 1] = first_row[i] + jobs[i].T;
    max_len = std::max(max_len, jobs[i].L);
  }
  const size_t group = n_heads / n_kv;
  parallel_for(first_row.back() * n_heads, [&](size_t b, size_t e) {
    std::vector<float> scores(max_len);
    size_t i = size_t(std::upper_bound(first_row.begin(), first_row.end(), b / n_heads) - first_row.begin()) - 1;
    for (size_t item = b; item < e; ++item) {
      const size_t row = item / n_heads, h = item % n_heads;
      while (row >= first_row[i + 1]) ++i;
      const AttentionJob& j = jobs[i];
      const size_t t = row - first_row[i];
      attend_row(j.q + t * j.q_stride + h * d, j.k, j.v, j.L - j.T + t, h / group, j.kv.resolved(n_kv, d), d, window, scores.data(),
                 j.out + t * j.out_stride + h * d);
    }
  });
}

void layer_norm(float* x, size_t T, size_t H, const float* w, const float* b, float eps) {
  parallel_for(T, [&](size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; ++t) vmath::layer_norm_row(x + t * H, H, w, b, eps);
  });
}

void residual_layer_norm(float* x, const float* y, const float* bias, size_t T, size_t H, const float* w,
                         const float* b, float eps) {
  parallel_for(T, [&](size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; ++t) {
      float* r = x + t * H;
      const float* add = y + t * H;
      for (size_t i = 0; i < H; ++i) r[i] += add[i] + bias[i];
      vmath::layer_norm_row(r, H, w, b, eps);
    }
  });
}

void gelu(float* x, size_t n) {
  constexpr size_t kChunk = 4096;  // elements per split unit
  parallel_for((n + kChunk - 1) / kChunk, [&](size_t c0, size_t c1) {
    vmath::gelu(x + c0 * kChunk, std::min(n, c1 * kChunk) - c0 * kChunk);
  });
}

// Every (sequence, head) pair is one task: K^T scaled by 1/sqrt(d) [d, T], S = Q K^T [T, T]
// and O = softmax(S) V, both products broadcast kernels reading Q and V in place (as prefill
// attention above, without a mask); below AVX-512, OpenBLAS on the calling thread.
void encoder_attention(const float* qkv, const std::vector<size_t>& starts, size_t n_heads, size_t d, float* out) {
  if (starts.size() < 2) return;
  const size_t H = n_heads * d, stride = 3 * H, n_seqs = starts.size() - 1;
  const float scale = 1.0f / std::sqrt(float(d));
  const bool avx512 = isa() >= Isa::Avx512;
  if (!avx512) single_threaded_blas();
  parallel_for(n_seqs * n_heads, [&](size_t j0, size_t j1) {
    std::vector<float> scores, keys_t, row_inv;
    for (size_t job = j0; job < j1; ++job) {
      const size_t s = job / n_heads, h = job % n_heads;
      const size_t r0 = starts[s], T = starts[s + 1] - r0;
      if (T == 0) continue;
      const float* q = qkv + r0 * stride + h * d;
      const float* k = q + H;
      const float* v = q + 2 * H;
      float* o = out + r0 * H + h * d;
      scores.resize(T * T);
      row_inv.resize(T);
      if (avx512) {
        keys_t.resize(d * T);
        for (size_t j = 0; j < T; ++j)
          for (size_t i = 0; i < d; ++i) keys_t[i * T + j] = k[j * stride + i] * scale;
        kernels::gemm_nn_avx512(q, stride, T, keys_t.data(), T, d, T, scores.data(), T);
      } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(T), int(T), int(d), scale, q, int(stride), k,
                    int(stride), 0.0f, scores.data(), int(T));
      }
      for (size_t t = 0; t < T; ++t) {
        float* row = &scores[t * T];
        row_inv[t] = 1.0f / vmath::exp_shifted_sum(row, T, vmath::max_of(row, T));
      }
      if (avx512)
        kernels::gemm_nn_avx512(scores.data(), T, T, v, stride, T, d, o, H);
      else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(T), int(d), int(T), 1.0f, scores.data(), int(T), v,
                    int(stride), 0.0f, o, int(H));
      for (size_t t = 0; t < T; ++t)
        for (size_t i = 0; i < d; ++i) o[t * H + i] *= row_inv[t];
    }
  });
}

}  // namespace pivotmt::cpu::fast
