// GGUF's blocks multiplied in place by the CPU kernels (`--weights gguf`: Q8_0, Q4_0,
// Q4_1 and the K-quants Q4_K, Q5_K, Q6_K times F32 activations) and with llama.cpp's int8
// arithmetic (`--weights gguf-q8`), every SIMD path this machine has against expectations
// computed without the kernels.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/cpu_features.h"
#include "backends/cpu/gemm.h"
#include "backends/cpu/ops.h"
#include "core/error.h"
#include "io/safetensors.h"
#include "cpu_kernel_test.h"
#include "quant/ggml_quants.h"
#include "test_util.h"

namespace pivotmt::cpu {
namespace {

using test::expect_close;
using test::IsaLevels;
using test::random_normal;

// GGUF blocks (Q8_0, Q4_0, Q4_1) and K super-blocks (Q4_K, Q5_K, Q6_K) multiplied in
// place: the expectation is computed without the kernels — weights dequantised by
// ggml_dequantize (gguf-py's values, bit for bit: test_gguf's golden) — and the products
// summed in double; the reference op and every path this machine has (portable falls back
// to the generic row conversion) are held to it.
const std::vector<GgmlType> kInPlaceTypes = {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1,
                                             GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};

// Random bytes (every quant and sub-block scale a random bit pattern) with finite F16
// scales (and minimums) drawn around 0.02.
Matrix ggml_matrix(GgmlType type, size_t out, size_t in, unsigned seed) {
  std::mt19937 rng(seed);
  Matrix m;
  m.dtype = DType::GGML;
  m.ggml_type = type;
  m.out = out;
  m.in = in;
  m.ggml_row_bytes = ggml_row_bytes(type, in);
  m.ggml_owned.resize(out * m.ggml_row_bytes);
  for (auto& b : m.ggml_owned) b = uint8_t(rng());
  const size_t block = ggml_traits(type).block_bytes;
  const std::vector<size_t> halves = type == GgmlType::Q6_K                                      ? std::vector<size_t>{208}
                                     : type == GgmlType::Q4_1 || type == GgmlType::Q4_K ||
                                               type == GgmlType::Q5_K                             ? std::vector<size_t>{0, 2}
                                                                                                  : std::vector<size_t>{0};
  std::normal_distribution<float> scale(0.0f, 0.02f);
  for (size_t off = 0; off < m.ggml_owned.size(); off += block)
    for (size_t at : halves) {
      const uint16_t h = f32_to_f16(scale(rng));
      std::memcpy(&m.ggml_owned[off + at], &h, 2);
    }
  return m;
}

TEST_F(IsaLevels, GgmlBlocksEveryPathMatchesDequantisedProducts) {
  for (GgmlType type : kInPlaceTypes)
    for (size_t M : {1u, 2u, 3u, 4u, 6u, 9u}) {  // the fused decode kernel's 1-4 rows, 6 as 4 + 2, prefill from 8
      const size_t out = 13, in = ggml_traits(type).block_size == 256 ? 768 : 160;
      const Matrix w = ggml_matrix(type, out, in, unsigned(M) * 7 + unsigned(type));
      const auto x = random_normal(M * in, unsigned(M) + 100, 1.0f);
      std::vector<float> wrow(in);
      std::vector<double> want(M * out), magnitude(M * out);  // Σ w x and Σ |w x|
      for (size_t n = 0; n < out; ++n) {
        ggml_dequantize(type, {reinterpret_cast<const std::byte*>(w.row_ggml(n)), w.ggml_row_bytes}, wrow.data(), in);
        for (size_t m = 0; m < M; ++m) {
          double acc = 0, size = 0;
          for (size_t k = 0; k < in; ++k) {
            acc += double(wrow[k]) * double(x[m * in + k]);
            size += std::fabs(double(wrow[k]) * double(x[m * in + k]));
          }
          want[m * out + n] = acc;
          magnitude[m * out + n] = size;
        }
      }
      const std::string what = std::string(ggml_type_name(type)) + " M=" + std::to_string(M);
      auto check = [&](const std::string& path, auto&& linear) {
        std::vector<float> y(M * (out + 3), -7.0f);  // ldy > out: the gaps stay untouched
        linear(y.data(), out + 3);
        for (size_t m = 0; m < M; ++m) {
          for (size_t n = 0; n < out; ++n)  // F32 sums of F32 products: rounding relative to Σ |w x|
            EXPECT_NEAR(y[m * (out + 3) + n], want[m * out + n], 1e-6 * magnitude[m * out + n] + 1e-30)
                << what << " " << path << " [" << m << ", " << n << "]";
          EXPECT_EQ(y[m * (out + 3) + out], -7.0f) << what << " " << path;
        }
      };
      check("reference", [&](float* y, size_t ldy) { ref::linear(x.data(), M, w, y, ldy); });
      for (Isa level : levels()) {
        set_isa_cap(level);
        check(isa_name(level), [&](float* y, size_t ldy) { fast::linear(x.data(), M, w, y, ldy); });
      }
    }
}

// The kernels' dequantisation is gguf-py's to the last bit: every row of every type, both
// ISA levels. (Today a fused multiply-add could not change it: an F16 scale has 11
// significant bits, a sub-block scale at most 7 and a quant at most 6, so every product
// is exact in F32 and only the sums round; the test holds the bits whatever the kernels do.)
TEST(GgmlKernels, DequantisedRowsEqualGgufPyBitForBit) {
  if (hardware_isa() < Isa::Avx2) GTEST_SKIP() << "no AVX2";
  for (GgmlType type : kInPlaceTypes) {
    const size_t out = 7, in = 1024;
    const Matrix w = ggml_matrix(type, out, in, 5 + unsigned(type));
    std::vector<float> want(out * in), got(out * in);
    for (size_t n = 0; n < out; ++n)
      ggml_dequantize(type, {reinterpret_cast<const std::byte*>(w.row_ggml(n)), w.ggml_row_bytes}, &want[n * in], in);
    const auto same = [&](const char* path) {
      for (size_t i = 0; i < want.size(); ++i)
        ASSERT_EQ(std::bit_cast<uint32_t>(got[i]), std::bit_cast<uint32_t>(want[i]))
            << ggml_type_name(type) << " " << path << ": value " << i % in << " of row " << i / in << " is " << got[i]
            << ", gguf-py's " << want[i];
    };
    kernels::ggml_rows_avx2(w, 0, out, got.data());
    same("AVX2");
    if (hardware_isa() >= Isa::Avx512) {
      std::fill(got.begin(), got.end(), 0.0f);
      kernels::ggml_rows_avx512(w, 0, out, got.data());
      same("AVX-512");
    }
  }
}

// --weights gguf-q8: activations quantised to Q8_0 blocks byte for byte as ggml-cpu's x86
// quantiser does, and the products of every path against gguf-py's dequantised blocks
// multiplied in float64 (tests/goldens/make_ggml_q8_golden.py).
GgmlType ggml_type_named(const std::string& name) {
  for (uint32_t id = 0; id < 40; ++id)
    if (auto t = ggml_type_traits(id); t && name == t->name) return GgmlType(id);
  throw std::runtime_error("no ggml type " + name);
}

TEST_F(IsaLevels, GgmlQ8ActivationsAndProductsEqualGgml) {
  const SafetensorsFile golden(std::string(PIVOTMT_SOURCE_DIR) + "/tests/goldens/ggml_q8/golden.safetensors");
  const auto x = test::read_tensor<float>(golden, "x");
  const auto xq_want = test::read_tensor<uint8_t>(golden, "x.q8_0");
  const size_t M = golden.at("x").shape[0], K = golden.at("x").shape[1], blocks = K / 32;
  // The activations: q bytes and F16 scales bit for bit, reference and AVX-512 quantisers.
  auto check_quantised = [&](const kernels::GgmlQ8Blocks& q, const std::string& who) {
    ASSERT_EQ(q.blocks, blocks);
    for (size_t m = 0; m < M; ++m)
      for (size_t b = 0; b < blocks; ++b) {
        const uint8_t* want = &xq_want[(m * blocks + b) * 34];
        uint16_t h;
        std::memcpy(&h, want, 2);
        ASSERT_EQ(std::bit_cast<uint32_t>(q.d[m * blocks + b]), std::bit_cast<uint32_t>(f16_to_f32(h))) << who << " d " << m << "," << b;
        int32_t sum = 0;
        for (size_t i = 0; i < 32; ++i) {
          ASSERT_EQ(q.q[m * K + b * 32 + i], int8_t(want[2 + i])) << who << " q " << m << "," << b * 32 + i;
          sum += int8_t(want[2 + i]);
        }
        EXPECT_EQ(q.sum[m * blocks + b], sum) << who;
      }
  };
  kernels::GgmlQ8Blocks q_ref, q_fast;
  kernels::quantize_rows_ggml_q8(x.data(), M, K, q_ref);
  check_quantised(q_ref, "reference quantiser");
  if (hardware_isa() >= Isa::Avx512) {
    kernels::quantize_rows_ggml_q8_fast(x.data(), M, K, q_fast);
    check_quantised(q_fast, "AVX-512 quantiser");
  }
  for (const char* name : {"Q8_0", "Q4_0", "Q4_1"}) {
    const GgmlType type = ggml_type_named(name);
    const auto raw = test::read_tensor<uint8_t>(golden, std::string(name) + ".blocks");
    const auto want = test::read_tensor<double>(golden, std::string(name) + ".y");
    const size_t N = golden.at(std::string(name) + ".blocks").shape[0], row_bytes = ggml_row_bytes(type, K);
    Matrix w;
    w.dtype = DType::GGML;
    w.out = N;
    w.in = K;
    w.ggml_type = type;
    w.ggml_row_bytes = row_bytes;
    w.int8_activations = true;
    w.ggml_packed = GgmlPacked::pack(type, N, K, [&](size_t n) { return &raw[n * row_bytes]; });
    // The packed layout reads back as the file's blocks, dequantised bit for bit as gguf-py.
    std::vector<float> got_row(K), want_row(K);
    for (size_t n = 0; n < N; ++n) {
      w.row_to_f32(n, got_row.data());
      ggml_dequantize(type, {reinterpret_cast<const std::byte*>(&raw[n * row_bytes]), row_bytes}, want_row.data(), K);
      ASSERT_EQ(std::memcmp(got_row.data(), want_row.data(), 4 * K), 0) << name << " row " << n;
    }
    // Products: the golden, within F32 rounding of the block sums (relative to Σ |terms|).
    std::vector<double> magnitude(M * N, 0.0);
    for (size_t m = 0; m < M; ++m)
      for (size_t n = 0; n < N; ++n) {
        w.row_to_f32(n, got_row.data());
        for (size_t k = 0; k < K; ++k) magnitude[m * N + n] += std::fabs(double(got_row[k]) * q_ref.d[m * blocks + k / 32] * q_ref.q[m * K + k]);
      }
    auto check = [&](const std::string& path, auto&& linear) {
      std::vector<float> y(M * (N + 3), -7.0f);  // ldy > N: the gaps stay untouched
      linear(y.data(), N + 3);
      for (size_t m = 0; m < M; ++m) {
        for (size_t n = 0; n < N; ++n)
          EXPECT_NEAR(y[m * (N + 3) + n], want[m * N + n], 2e-6 * magnitude[m * N + n] + 1e-30)
              << name << " " << path << " [" << m << ", " << n << "]";
        EXPECT_EQ(y[m * (N + 3) + N], -7.0f) << name << " " << path;
      }
    };
    check("reference", [&](float* y, size_t ldy) { ref::linear(x.data(), M, w, y, ldy); });
    for (Isa level : levels()) {
      set_isa_cap(level);
      check(isa_name(level), [&](float* y, size_t ldy) { fast::linear(x.data(), M, w, y, ldy); });
    }
  }
}

// The same kernels on the shapes the model runs (K of a few thousand, 1..9 rows, partial
// groups and row ranges starting mid-matrix), against the reference.
TEST_F(IsaLevels, GgmlQ8EveryPathMatchesReference) {
  for (GgmlType type : {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1}) {
    const size_t N = 53, K = 2048;
    const Matrix blocks = ggml_matrix(type, N, K, 11 + unsigned(type));
    Matrix w = blocks;
    w.int8_activations = true;
    w.ggml_packed = GgmlPacked::pack(type, N, K, [&](size_t n) { return blocks.row_ggml(n); });
    w.ggml_owned.clear();
    for (size_t M : {1u, 2u, 3u, 4u, 5u, 9u}) {
      auto x = random_normal(M * K, unsigned(M) + 300, 1.0f);
      x[7] = 60.0f;  // an outlier
      std::vector<float> want(M * N), got(M * N);
      ref::linear(x.data(), M, w, want.data());
      kernels::GgmlQ8Blocks q;
      kernels::quantize_rows_ggml_q8(x.data(), M, K, q);
      const std::string what = std::string(ggml_type_name(type)) + " M=" + std::to_string(M);
      for (Isa level : levels()) {
        set_isa_cap(level);
        fast::linear(x.data(), M, w, got.data());
        expect_close(got, want, 1e-5f, what + " " + isa_name(level));
      }
      // A range starting at a group boundary mid-matrix writes those rows only.
      if (hardware_isa() >= Isa::Avx512Vnni) {
        std::vector<float> part(M * N, -5.0f);
        kernels::gemm_ggml_q8_vnni(q, w, part.data(), N, 16, N);
        for (size_t m = 0; m < M; ++m) {
          EXPECT_EQ(part[m * N + 15], -5.0f) << what;
          EXPECT_NEAR(part[m * N + 40], want[m * N + 40], 1e-5f * std::max(1.0f, std::fabs(want[m * N + 40]))) << what;
        }
        EXPECT_THROW(kernels::gemm_ggml_q8_vnni(q, w, part.data(), N, 8, N), Error) << "not a group boundary";
      }
      if (hardware_isa() >= Isa::Avx2) {
        std::vector<float> part(M * N, -5.0f);
        kernels::gemm_ggml_q8_avx2(q, w, part.data(), N, 8, 24);
        for (size_t m = 0; m < M; ++m) {
          EXPECT_EQ(part[m * N + 7], -5.0f) << what;
          EXPECT_EQ(part[m * N + 24], -5.0f) << what;
          EXPECT_NEAR(part[m * N + 20], want[m * N + 20], 1e-5f * std::max(1.0f, std::fabs(want[m * N + 20]))) << what;
        }
      }
    }
  }
}

}  // namespace
}  // namespace pivotmt::cpu
