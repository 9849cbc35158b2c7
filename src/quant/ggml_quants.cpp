// ggml's block formats, dequantised as gguf-py's quants.py does (the golden files in
// tests/goldens/ggml_dequant come from it). Written out per type rather than through a
// generic table: each layout differs in where the high bits and the scales live, and the
// loops below read like ggml's block structs.
#include "quant/ggml_quants.h"

#include <array>
#include <cstring>

#include <fmt/format.h>

#include "core/dtype.h"
#include "core/error.h"

namespace pivotmt {
namespace {

constexpr std::array<std::pair<uint32_t, GgmlTypeTraits>, 32> kTypes = {{
    {0, {"F32", 1, 4, true}},         {1, {"F16", 1, 2, true}},        {2, {"Q4_0", 32, 18, true}},
    {3, {"Q4_1", 32, 20, true}},      {6, {"Q5_0", 32, 22, true}},     {7, {"Q5_1", 32, 24, true}},
    {8, {"Q8_0", 32, 34, true}},      {9, {"Q8_1", 32, 40, false}},    {10, {"Q2_K", 256, 84, false}},
    {11, {"Q3_K", 256, 110, false}},  {12, {"Q4_K", 256, 144, true}},  {13, {"Q5_K", 256, 176, true}},
    {14, {"Q6_K", 256, 210, true}},   {15, {"Q8_K", 256, 292, false}}, {16, {"IQ2_XXS", 256, 66, false}},
    {17, {"IQ2_XS", 256, 74, false}}, {18, {"IQ3_XXS", 256, 98, false}}, {19, {"IQ1_S", 256, 50, false}},
    {20, {"IQ4_NL", 32, 18, false}},  {21, {"IQ3_S", 256, 110, false}}, {22, {"IQ2_S", 256, 82, false}},
    {23, {"IQ4_XS", 256, 136, false}}, {24, {"I8", 1, 1, false}},      {25, {"I16", 1, 2, false}},
    {26, {"I32", 1, 4, false}},       {27, {"I64", 1, 8, false}},      {28, {"F64", 1, 8, false}},
    {29, {"IQ1_M", 256, 56, false}},  {30, {"BF16", 1, 2, true}},      {34, {"TQ1_0", 256, 54, false}},
    {35, {"TQ2_0", 256, 66, false}},  {39, {"MXFP4", 32, 17, false}},
}};

inline uint16_t u16(const uint8_t* p) { return uint16_t(p[0] | (p[1] << 8)); }
inline float half(const uint8_t* p) { return f16_to_f32(u16(p)); }

// One block of each type: `b` its bytes, `y` its values.
void block_q8_0(const uint8_t* b, float* y) {
  const float d = half(b);
  for (int j = 0; j < 32; ++j) y[j] = float(int8_t(b[2 + j])) * d;
}
void block_q4_0(const uint8_t* b, float* y) {
  const float d = half(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float((qs[j] & 0x0F) - 8);
    y[j + 16] = d * float((qs[j] >> 4) - 8);
  }
}
void block_q4_1(const uint8_t* b, float* y) {
  const float d = half(b), m = half(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = d * float(qs[j] & 0x0F) + m;
    y[j + 16] = d * float(qs[j] >> 4) + m;
  }
}
void block_q5_0(const uint8_t* b, float* y) {
  const float d = half(b);
  uint32_t qh;
  std::memcpy(&qh, b + 2, 4);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    const int lo = (qs[j] & 0x0F) | int(((qh >> j) & 1) << 4);
    const int hi = (qs[j] >> 4) | int(((qh >> (j + 16)) & 1) << 4);
    y[j] = d * float(lo - 16);
    y[j + 16] = d * float(hi - 16);
  }
}
void block_q5_1(const uint8_t* b, float* y) {
  const float d = half(b), m = half(b + 2);
  uint32_t qh;
  std::memcpy(&qh, b + 4, 4);
  const uint8_t* qs = b + 8;
  for (int j = 0; j < 16; ++j) {
    const int lo = (qs[j] & 0x0F) | int(((qh >> j) & 1) << 4);
    const int hi = (qs[j] >> 4) | int(((qh >> (j + 16)) & 1) << 4);
    y[j] = d * float(lo) + m;
    y[j + 16] = d * float(hi) + m;
  }
}
// Q4_K: d, dmin (F16), 12 bytes of scales/mins, 128 bytes of nibbles: each 32-byte chunk
// holds two sub-blocks of 32 values (low nibbles, then high nibbles).
void block_q4_k(const uint8_t* b, float* y) {
  const float d = half(b), dmin = half(b + 2);
  uint8_t sc[8], mn[8];
  ggml_k4_scales(b + 4, sc, mn);
  const uint8_t* qs = b + 16;
  for (int s = 0; s < 8; ++s) {
    const float ds = d * float(sc[s]), dm = dmin * float(mn[s]);
    const uint8_t* q = qs + 32 * (s / 2);
    const int shift = 4 * (s % 2);
    for (int j = 0; j < 32; ++j) y[32 * s + j] = ds * float((q[j] >> shift) & 0x0F) - dm;
  }
}
// Q5_K: as Q4_K with 32 bytes of high bits before the nibbles: bit s of byte j is the
// fifth bit of value j of sub-block s.
void block_q5_k(const uint8_t* b, float* y) {
  const float d = half(b), dmin = half(b + 2);
  uint8_t sc[8], mn[8];
  ggml_k4_scales(b + 4, sc, mn);
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  for (int s = 0; s < 8; ++s) {
    const float ds = d * float(sc[s]), dm = dmin * float(mn[s]);
    const uint8_t* q = qs + 32 * (s / 2);
    const int shift = 4 * (s % 2);
    for (int j = 0; j < 32; ++j) {
      const int v = ((q[j] >> shift) & 0x0F) | (((qh[j] >> s) & 1) << 4);
      y[32 * s + j] = ds * float(v) - dm;
    }
  }
}
// Q6_K: 128 bytes of low nibbles, 64 of 2-bit highs, 16 int8 scales (one per 16 values),
// d (F16). Value v = 128 h + r: its nibble is in ql[64 h + r % 64] (high nibble when
// r >= 64), its high bits in qh[32 h + r % 32] at bit 2 (r / 32).
void block_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* scales = reinterpret_cast<const int8_t*>(b + 192);
  const float d = half(b + 208);
  for (int v = 0; v < 256; ++v) {
    const int h = v / 128, r = v % 128;
    const int lo = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 0x0F;
    const int hi = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 0x03;
    const float ds = d * float(scales[v / 16]);
    y[v] = ds * float(int8_t((lo | (hi << 4))) - 32);
  }
}

}  // namespace

void ggml_k4_scales(const uint8_t* s, uint8_t sc[8], uint8_t mn[8]) {
  for (int j = 0; j < 4; ++j) {
    sc[j] = s[j] & 0x3F;
    mn[j] = s[4 + j] & 0x3F;
    sc[4 + j] = uint8_t((s[8 + j] & 0x0F) | ((s[j] >> 2) & 0x30));
    mn[4 + j] = uint8_t((s[8 + j] >> 4) | ((s[4 + j] >> 2) & 0x30));
  }
}

bool ggml_multiplied_in_place(GgmlType t, uint64_t cols) {
  switch (t) {
    case GgmlType::Q8_0:
    case GgmlType::Q4_0:
    case GgmlType::Q4_1: return cols > 0 && cols % 32 == 0;
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K: return cols > 0 && cols % 256 == 0;
    default: return false;
  }
}

std::optional<GgmlTypeTraits> ggml_type_traits(uint32_t id) {
  for (const auto& [k, t] : kTypes)
    if (k == id) return t;
  return std::nullopt;
}

const GgmlTypeTraits& ggml_traits(GgmlType t) {
  for (const auto& [k, traits] : kTypes)
    if (k == uint32_t(t)) return traits;
  throw Error(fmt::format("ggml type {} is not defined", uint32_t(t)));
}

const char* ggml_type_name(GgmlType t) { return ggml_traits(t).name; }

uint64_t ggml_row_bytes(GgmlType t, uint64_t n) {
  const auto& tr = ggml_traits(t);
  if (n % tr.block_size)
    throw FormatError(fmt::format("{} values are not whole {} blocks of {}", n, tr.name, tr.block_size));
  return n / tr.block_size * tr.block_bytes;
}

void ggml_dequantize(GgmlType t, std::span<const std::byte> src, float* y, uint64_t n) {
  const auto& tr = ggml_traits(t);
  if (!tr.dequantized) throw UnsupportedError(fmt::format("ggml type {} is not supported (pivotmt reads F32, F16, BF16, "
                                                          "Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K)", tr.name));
  if (src.size() != ggml_row_bytes(t, n))
    throw Error(fmt::format("{}: {} bytes given for {} values, which take {}", tr.name, src.size(), n, ggml_row_bytes(t, n)));
  if (n == 0) return;  // a tensor with a zero dimension (the format allows it)
  const auto* b = reinterpret_cast<const uint8_t*>(src.data());
  const uint64_t blocks = n / tr.block_size;
  switch (t) {
    case GgmlType::F32: std::memcpy(y, b, n * 4); return;
    case GgmlType::F16: convert_floats(DType::F16, b, DType::F32, y, n); return;
    case GgmlType::BF16: convert_floats(DType::BF16, b, DType::F32, y, n); return;
    default: break;
  }
  void (*block)(const uint8_t*, float*) = nullptr;
  switch (t) {
    case GgmlType::Q8_0: block = block_q8_0; break;
    case GgmlType::Q4_0: block = block_q4_0; break;
    case GgmlType::Q4_1: block = block_q4_1; break;
    case GgmlType::Q5_0: block = block_q5_0; break;
    case GgmlType::Q5_1: block = block_q5_1; break;
    case GgmlType::Q4_K: block = block_q4_k; break;
    case GgmlType::Q5_K: block = block_q5_k; break;
    case GgmlType::Q6_K: block = block_q6_k; break;
    default: throw UnsupportedError(fmt::format("ggml type {} is not dequantised", tr.name));
  }
  for (uint64_t i = 0; i < blocks; ++i) block(b + i * tr.block_bytes, y + i * tr.block_size);
}

}  // namespace pivotmt
