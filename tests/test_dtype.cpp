// Float conversions against slow, obviously-correct references built on double arithmetic.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <random>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"

namespace pivotmt {
namespace {

double ref_f16_value(uint16_t h) {  // IEEE binary16 by definition
  const int sign = h >> 15, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  double v = exp == 0 ? std::ldexp(mant, -24) : std::ldexp(1.0 + mant / 1024.0, exp - 15);
  if (exp == 0x1f) v = mant ? NAN : INFINITY;
  return sign ? -v : v;
}

double ref_bf16_value(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }

// Round |x| to the nearest rung of a ladder of codes (ties to the even code): the
// definition of round-to-nearest-even. The rung after the largest finite value stands for
// infinity at the value where the next binade would start.
uint16_t ref_round(double x, const std::vector<std::pair<double, uint16_t>>& ladder, uint16_t sign_bit) {
  const double a = std::fabs(x);
  if (a >= ladder.back().first) return sign_bit | ladder.back().second;
  auto hi = std::lower_bound(ladder.begin(), ladder.end(), std::make_pair(a, uint16_t(0)));
  if (hi->first == a) return sign_bit | hi->second;
  auto lo = hi - 1;
  const double dl = a - lo->first, dh = hi->first - a;
  const uint16_t code = dl < dh ? lo->second : dh < dl ? hi->second : ((lo->second & 1) ? hi->second : lo->second);
  return sign_bit | code;
}

std::vector<std::pair<double, uint16_t>> ladder_f16() {
  std::vector<std::pair<double, uint16_t>> l;
  for (uint16_t h = 0; h < 0x7c00; ++h) l.push_back({ref_f16_value(h), h});
  l.push_back({65536.0, 0x7c00});
  return l;
}
std::vector<std::pair<double, uint16_t>> ladder_bf16() {
  std::vector<std::pair<double, uint16_t>> l;
  for (uint16_t h = 0; h < 0x7f80; ++h) l.push_back({ref_bf16_value(h), h});
  l.push_back({std::ldexp(1.0, 128), 0x7f80});
  return l;
}

std::vector<float> interesting_floats() {
  std::mt19937_64 rng(1234);
  std::vector<float> v = {0.0f, -0.0f, 1.0f, -1.0f, 65504.0f, 65519.99f, 65520.0f, 1e-8f, 5.960464477539063e-8f,
                          2.9802322387695312e-8f, 2.98023259e-8f, 6.103515625e-05f, 3.0e38f, -3.4e38f, 1e-40f};
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    float f = std::bit_cast<float>(bits(rng));
    if (!std::isfinite(f)) continue;
    v.push_back(f);
    // Also values of the magnitudes weights have, and near half's subnormal range.
    v.push_back(std::ldexp(std::bit_cast<float>((bits(rng) & 0x807fffffu) | 0x3f800000u), int(bits(rng) % 48) - 30));
  }
  return v;
}

TEST(DType, NamesAndSizes) {
  EXPECT_EQ(dtype_from_name("BF16"), DType::BF16);
  EXPECT_EQ(dtype_from_name("F8_E5M2"), DType::F8_E5M2);
  EXPECT_FALSE(dtype_from_name("F128").has_value());
  EXPECT_FALSE(dtype_from_name("f32").has_value());  // names are case-sensitive in the format
  EXPECT_EQ(dtype_size(DType::F64), 8u);
  EXPECT_EQ(dtype_size(DType::BOOL), 1u);
  EXPECT_EQ(dtype_name(DType::I16), "I16");
}

TEST(DType, F16DecodeEveryCode) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const double want = ref_f16_value(uint16_t(h));
    const float got = f16_to_f32(uint16_t(h));
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << h;
    } else {
      ASSERT_EQ(double(got), want) << "code " << h;
      ASSERT_EQ(std::signbit(got), bool(h & 0x8000)) << h;
      ASSERT_EQ(f32_to_f16(got), h) << "round trip of code " << h;
    }
  }
}

TEST(DType, F16EncodeRoundsToNearestEven) {
  const auto ladder = ladder_f16();
  for (float f : interesting_floats()) {
    const uint16_t want = ref_round(f, ladder, std::signbit(f) ? 0x8000 : 0);
    ASSERT_EQ(f32_to_f16(f), want) << "value " << f;
  }
  EXPECT_EQ(f32_to_f16(INFINITY), 0x7c00);
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(NAN))));
}

TEST(DType, BF16EncodeRoundsToNearestEven) {
  const auto ladder = ladder_bf16();
  for (float f : interesting_floats()) {
    const uint16_t want = ref_round(f, ladder, std::signbit(f) ? 0x8000 : 0);
    ASSERT_EQ(f32_to_bf16(f), want) << "value " << f;
  }
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(NAN))));
  for (uint32_t b = 0; b < 65536; ++b)
    if (!std::isnan(bf16_to_f32(uint16_t(b)))) ASSERT_EQ(f32_to_bf16(bf16_to_f32(uint16_t(b))), b);
}

TEST(DType, ConvertBuffers) {
  const std::vector<float> src = {1.5f, -2.25f, 1e-3f, 70000.0f, 0.0f};
  std::vector<uint16_t> half(src.size()), bf(src.size());
  std::vector<float> back(src.size());
  convert_floats(DType::F32, src.data(), DType::F16, half.data(), src.size());
  convert_floats(DType::F16, half.data(), DType::F32, back.data(), src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    EXPECT_EQ(half[i], f32_to_f16(src[i]));
    EXPECT_EQ(back[i], f16_to_f32(half[i]));
  }
  convert_floats(DType::F16, half.data(), DType::BF16, bf.data(), src.size());
  for (size_t i = 0; i < src.size(); ++i) EXPECT_EQ(bf[i], f32_to_bf16(f16_to_f32(half[i])));
  int32_t ints[2] = {1, 2};
  EXPECT_THROW(convert_floats(DType::I32, ints, DType::F32, back.data(), 2), UnsupportedError);
}

TEST(DType, FastPathsMatchScalarReference) {
  auto values = interesting_floats();
  values.push_back(NAN);
  values.push_back(-INFINITY);
  for (size_t offset : {size_t(0), size_t(1), size_t(3)}) {  // unaligned starts too
    const size_t n = values.size() - offset;
    std::vector<uint16_t> fast(n), slow(n);
    convert_floats(DType::F32, values.data() + offset, DType::F16, fast.data(), n);
    convert_floats_scalar(DType::F32, values.data() + offset, DType::F16, slow.data(), n);
    ASSERT_EQ(fast, slow);
    std::vector<float> back_fast(n), back_slow(n);
    convert_floats(DType::F16, fast.data(), DType::F32, back_fast.data(), n);
    convert_floats_scalar(DType::F16, fast.data(), DType::F32, back_slow.data(), n);
    ASSERT_EQ(0, std::memcmp(back_fast.data(), back_slow.data(), n * 4));
  }
}

TEST(Device, Parse) {
  EXPECT_EQ(Device::parse("cpu").kind, DeviceKind::CPU);
  EXPECT_EQ(Device::parse("cuda").index, 0);
  EXPECT_EQ(Device::parse("cuda:3").index, 3);
  EXPECT_EQ(Device::parse("cuda:3").to_string(), "cuda:3");
  EXPECT_THROW(Device::parse("gpu"), Error);
  EXPECT_THROW(Device::parse("cuda:"), Error);
  EXPECT_THROW(Device::parse("cuda:-1"), Error);
  EXPECT_THROW(Device::parse("cuda:1x"), Error);
}

}  // namespace
}  // namespace pivotmt
