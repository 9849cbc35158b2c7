// NF4 against bitsandbytes' own quantiser (tests/goldens/nf4.safetensors, made by
// tests/goldens/make_nf4_golden.py): codes, absmax, double quantisation and the
// dequantised values identical, bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "quant/nf4.h"
#include "core/error.h"
#include "test_util.h"

namespace pivotmt {
namespace {

std::string golden_path() { return std::string(PIVOTMT_SOURCE_DIR) + "/tests/goldens/nf4.safetensors"; }

template <typename T>
::testing::AssertionResult same_bits(const std::vector<T>& want, const std::vector<T>& got, const std::string& what) {
  if (want.size() != got.size())
    return ::testing::AssertionFailure() << what << ": " << got.size() << " values, want " << want.size();
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < want.size(); ++i)
    if (std::memcmp(&want[i], &got[i], sizeof(T)) != 0 && bad++ == 0) first = i;
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": " << bad << " of " << want.size() << " differ, first at " << first
                                       << " (want " << double(want[first]) << ", got " << double(got[first]) << ")";
}

TEST(Nf4, DynamicMapIsBitsandbytes) {
  SafetensorsFile f(golden_path());
  const auto want = test::read_tensor<float>(f, "dynamic_map");
  const auto& map = nf4::dynamic_map();
  EXPECT_TRUE(same_bits(want, std::vector<float>(map.begin(), map.end()), "dynamic map"));
  EXPECT_EQ(map.front(), -0.99296875f);
  EXPECT_EQ(map.back(), 1.0f);
}

TEST(Nf4, DoubleQuantIndexIsBitsandbytes) {
  SafetensorsFile f(golden_path());
  const auto z = test::read_tensor<float>(f, "dynamic_probe.input");
  const auto want = test::read_tensor<uint8_t>(f, "dynamic_probe.index");
  std::vector<uint8_t> got;
  for (float v : z) got.push_back(nf4::dynamic_index_of(v));
  EXPECT_TRUE(same_bits(want, got, "8-bit index of probe values"));
}

class Nf4Golden : public ::testing::TestWithParam<const char*> {};

TEST_P(Nf4Golden, PlainAndDoubleQuantMatchBitsandbytes) {
  SafetensorsFile f(golden_path());
  const std::string name = GetParam();
  const auto input = test::read_tensor<float>(f, name + ".input");
  {
    const auto q = nf4::quantize(input, false);
    EXPECT_TRUE(same_bits(test::read_tensor<uint8_t>(f, name + ".plain.packed"), q.packed, name + " packed codes"));
    EXPECT_TRUE(same_bits(test::read_tensor<float>(f, name + ".plain.absmax"), q.absmax, name + " absmax"));
    EXPECT_TRUE(same_bits(test::read_tensor<float>(f, name + ".plain.dequantized"), nf4::dequantize(q), name + " dequantized"));
  }
  {
    // The double quantisation given bitsandbytes' offset (torch's F32 mean, whose rounding
    // depends on the machine's reduction order) is exact; our own offset is within an F32
    // rounding of it.
    const float want_offset = test::read_tensor<float>(f, name + ".dq.offset").at(0);
    EXPECT_NEAR(nf4::quantize(input, true).offset, want_offset, std::fabs(want_offset) * 3e-7f) << name;
    auto q = nf4::quantize(input, false);
    nf4::double_quantize(q, want_offset);
    EXPECT_TRUE(same_bits(test::read_tensor<uint8_t>(f, name + ".dq.packed"), q.packed, name + " packed codes (dq)"));
    EXPECT_TRUE(same_bits(test::read_tensor<uint8_t>(f, name + ".dq.qabsmax"), q.qabsmax, name + " 8-bit absmax"));
    EXPECT_TRUE(same_bits(test::read_tensor<float>(f, name + ".dq.nested_absmax"), q.nested_absmax, name + " nested absmax"));
    EXPECT_TRUE(same_bits(test::read_tensor<float>(f, name + ".dq.dequantized"), nf4::dequantize(q), name + " dequantized (dq)"));
  }
}

INSTANTIATE_TEST_SUITE_P(Bitsandbytes, Nf4Golden,
                         ::testing::Values("normal_128x96", "remainder_1000", "odd_999", "ties", "zero_block",
                                           "zero_remainder", "double_quant_many"));

// Invariants that hold whatever the reference: each value's code is the nearest one
// (ties to the lower), and the high nibble holds the even element.
TEST(Nf4, NearestCodeHighNibbleFirst) {
  const auto& c = nf4::codes();
  for (int i = -1100; i <= 1100; ++i) {
    const float x = float(i) / 1000.0f;
    const uint8_t code = nf4::code_of(x);
    for (size_t j = 0; j < 16; ++j) EXPECT_LE(std::fabs(x - c[code]), std::fabs(x - c[j]) + 1e-7f) << x;
  }
  const std::vector<float> v = {1.0f, -1.0f, 0.0f};
  const auto q = nf4::quantize(v, false);
  ASSERT_EQ(q.packed.size(), 2u);
  EXPECT_EQ(q.packed[0], (15 << 4) | 0);  // 1.0 -> code 15 (high nibble), -1.0 -> code 0
  EXPECT_EQ(q.packed[1], (7 << 4) | 7);   // 0.0 -> code 7; the missing partner pads as 0.0
}

TEST(Nf4, DequantisingAnyRangeEqualsTheWhole) {
  std::vector<float> v(999);
  for (size_t i = 0; i < v.size(); ++i) v[i] = std::sin(float(i) * 0.37f) * float(1 + i % 7);
  const auto q = nf4::quantize(v, true);
  // The format's definition, element by element: code[nibble] * absmax[i / 64], the even
  // element in the high nibble.
  std::vector<float> whole(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const uint8_t byte = q.packed[i / 2];
    whole[i] = nf4::codes()[i % 2 == 0 ? byte >> 4 : byte & 15] * q.absmax[i / nf4::kBlock];
  }
  for (auto [b, e] : std::vector<std::pair<size_t, size_t>>{{0, 999}, {1, 2}, {3, 130}, {63, 65}, {64, 128}, {5, 5}, {997, 999}, {128, 999}}) {
    std::vector<float> part(e - b);
    nf4::dequantize(q, b, e, part.data());
    for (size_t i = b; i < e; ++i) ASSERT_EQ(part[i - b], whole[i]) << b << ".." << e << " at " << i;
  }
}

TEST(Nf4, RejectsNonFinite) {
  std::vector<float> v(64, 0.5f);
  v[3] = std::nanf("");
  EXPECT_THROW(nf4::quantize(v, false), Error);
}

}  // namespace
}  // namespace pivotmt
