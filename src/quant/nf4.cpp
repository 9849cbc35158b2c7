#include "quant/nf4.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "core/error.h"

namespace pivotmt::nf4 {

const std::array<float, 16>& codes() {
  static const std::array<float, 16> c = {
      -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
      -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
      0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
      0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};
  return c;
}

namespace {

// The 15 decision thresholds: midpoints of adjacent codes in F32 arithmetic, as
// bitsandbytes computes its bucket bounds ((code[:-1] + code[1:]) / 2 on F32 tensors).
const std::array<float, 15>& midpoints() {
  static const std::array<float, 15> m = [] {
    std::array<float, 15> t{};
    for (size_t i = 0; i < 15; ++i) t[i] = (codes()[i] + codes()[i + 1]) / 2.0f;
    return t;
  }();
  return m;
}

}  // namespace

// bitsandbytes' create_dynamic_map(signed=True): for i in 0..6 the midpoints of
// torch.linspace(0.1, 1, 2^i + 1) (F32) times 10^(i-6), with negated copies, plus 0 and 1.
// The values are listed rather than recomputed because torch's F32 linspace rounds some
// points differently from any plain formula (its vectorised kernel); these are the values
// bitsandbytes uses, checked against its own output by tests/test_nf4.cpp.
const std::array<float, 256>& dynamic_map() {
  static const std::array<float, 256> m = {
      -9.929687380e-01f, -9.789062740e-01f, -9.648437500e-01f, -9.507812260e-01f, -9.367187620e-01f, -9.226562380e-01f,
      -9.085937740e-01f, -8.945312500e-01f, -8.804687260e-01f, -8.664062620e-01f, -8.523437380e-01f, -8.382812740e-01f,
      -8.242187500e-01f, -8.101562260e-01f, -7.960937620e-01f, -7.820312380e-01f, -7.679687740e-01f, -7.539062500e-01f,
      -7.398437260e-01f, -7.257812620e-01f, -7.117187980e-01f, -6.976562740e-01f, -6.835937500e-01f, -6.695312260e-01f,
      -6.554687620e-01f, -6.414062980e-01f, -6.273437740e-01f, -6.132812500e-01f, -5.992187260e-01f, -5.851562620e-01f,
      -5.710937980e-01f, -5.570312740e-01f, -5.429687500e-01f, -5.289062260e-01f, -5.148437020e-01f, -5.007812380e-01f,
      -4.867187140e-01f, -4.726562500e-01f, -4.585937260e-01f, -4.445312620e-01f, -4.304687380e-01f, -4.164062440e-01f,
      -4.023437500e-01f, -3.882812260e-01f, -3.742187620e-01f, -3.601562380e-01f, -3.460937440e-01f, -3.320312500e-01f,
      -3.179687260e-01f, -3.039062620e-01f, -2.898437380e-01f, -2.757812740e-01f, -2.617187500e-01f, -2.476562410e-01f,
      -2.335937470e-01f, -2.195312530e-01f, -2.054687440e-01f, -1.914062500e-01f, -1.773437560e-01f, -1.632812470e-01f,
      -1.492187530e-01f, -1.351562440e-01f, -1.210937500e-01f, -1.070312560e-01f, -9.859374910e-02f, -9.578125920e-02f,
      -9.296875450e-02f, -9.015624970e-02f, -8.734375240e-02f, -8.453124760e-02f, -8.171875770e-02f, -7.890625300e-02f,
      -7.609374820e-02f, -7.328125090e-02f, -7.046874610e-02f, -6.765625630e-02f, -6.484375150e-02f, -6.203125040e-02f,
      -5.921875310e-02f, -5.640624840e-02f, -5.359375100e-02f, -5.078125000e-02f, -4.796874900e-02f, -4.515625160e-02f,
      -4.234374690e-02f, -3.953124960e-02f, -3.671875220e-02f, -3.390625120e-02f, -3.109375010e-02f, -2.828125100e-02f,
      -2.546874990e-02f, -2.265625070e-02f, -1.984375160e-02f, -1.703125050e-02f, -1.421875040e-02f, -1.140625030e-02f,
      -9.718749670e-03f, -9.156249460e-03f, -8.593750190e-03f, -8.031249980e-03f, -7.468749770e-03f, -6.906250030e-03f,
      -6.343749820e-03f, -5.781250070e-03f, -5.218750330e-03f, -4.656249660e-03f, -4.093749910e-03f, -3.531249710e-03f,
      -2.968749960e-03f, -2.406249990e-03f, -1.843750010e-03f, -1.281249920e-03f, -9.437500850e-04f, -8.312499850e-04f,
      -7.187500600e-04f, -6.062500760e-04f, -4.937500340e-04f, -3.812500220e-04f, -2.687500380e-04f, -1.562500110e-04f,
      -8.874999910e-05f, -6.625000240e-05f, -4.374999840e-05f, -2.124999810e-05f, -7.749999900e-06f, -3.250000190e-06f,
      -5.500000380e-07f, 0.000000000e+00f, 5.500000380e-07f, 3.250000190e-06f, 7.749999900e-06f, 2.124999810e-05f,
      4.374999840e-05f, 6.625000240e-05f, 8.874999910e-05f, 1.562500110e-04f, 2.687500380e-04f, 3.812500220e-04f,
      4.937500340e-04f, 6.062500760e-04f, 7.187500600e-04f, 8.312499850e-04f, 9.437500850e-04f, 1.281249920e-03f,
      1.843750010e-03f, 2.406249990e-03f, 2.968749960e-03f, 3.531249710e-03f, 4.093749910e-03f, 4.656249660e-03f,
      5.218750330e-03f, 5.781250070e-03f, 6.343749820e-03f, 6.906250030e-03f, 7.468749770e-03f, 8.031249980e-03f,
      8.593750190e-03f, 9.156249460e-03f, 9.718749670e-03f, 1.140625030e-02f, 1.421875040e-02f, 1.703125050e-02f,
      1.984375160e-02f, 2.265625070e-02f, 2.546874990e-02f, 2.828125100e-02f, 3.109375010e-02f, 3.390625120e-02f,
      3.671875220e-02f, 3.953124960e-02f, 4.234374690e-02f, 4.515625160e-02f, 4.796874900e-02f, 5.078125000e-02f,
      5.359375100e-02f, 5.640624840e-02f, 5.921875310e-02f, 6.203125040e-02f, 6.484375150e-02f, 6.765625630e-02f,
      7.046874610e-02f, 7.328125090e-02f, 7.609374820e-02f, 7.890625300e-02f, 8.171875770e-02f, 8.453124760e-02f,
      8.734375240e-02f, 9.015624970e-02f, 9.296875450e-02f, 9.578125920e-02f, 9.859374910e-02f, 1.070312560e-01f,
      1.210937500e-01f, 1.351562440e-01f, 1.492187530e-01f, 1.632812470e-01f, 1.773437560e-01f, 1.914062500e-01f,
      2.054687440e-01f, 2.195312530e-01f, 2.335937470e-01f, 2.476562410e-01f, 2.617187500e-01f, 2.757812740e-01f,
      2.898437380e-01f, 3.039062620e-01f, 3.179687260e-01f, 3.320312500e-01f, 3.460937440e-01f, 3.601562380e-01f,
      3.742187620e-01f, 3.882812260e-01f, 4.023437500e-01f, 4.164062440e-01f, 4.304687380e-01f, 4.445312620e-01f,
      4.585937260e-01f, 4.726562500e-01f, 4.867187140e-01f, 5.007812380e-01f, 5.148437020e-01f, 5.289062260e-01f,
      5.429687500e-01f, 5.570312740e-01f, 5.710937980e-01f, 5.851562620e-01f, 5.992187260e-01f, 6.132812500e-01f,
      6.273437740e-01f, 6.414062980e-01f, 6.554687620e-01f, 6.695312260e-01f, 6.835937500e-01f, 6.976562740e-01f,
      7.117187980e-01f, 7.257812620e-01f, 7.398437260e-01f, 7.539062500e-01f, 7.679687740e-01f, 7.820312380e-01f,
      7.960937620e-01f, 8.101562260e-01f, 8.242187500e-01f, 8.382812740e-01f, 8.523437380e-01f, 8.664062620e-01f,
      8.804687260e-01f, 8.945312500e-01f, 9.085937740e-01f, 9.226562380e-01f, 9.367187620e-01f, 9.507812260e-01f,
      9.648437500e-01f, 9.789062740e-01f, 9.929687380e-01f, 1.000000000e+00f,
  };
  return m;
}

uint8_t code_of(float scaled) {
  const auto& m = midpoints();
  uint8_t code = 0;
  for (uint8_t i = 0; i < 15; ++i)
    if (scaled > m[i]) code = uint8_t(i + 1);
  return code;
}

uint8_t dynamic_index_of(float scaled) {
  // bitsandbytes' CPU blockwise quantiser (0.50) does not search the map: it maps the value
  // onto a grid of 65536 points over [-1, 1], u = trunc(((v + 1) * 0.5) * 65535 + 0.5) in
  // F32, and a table gives each grid point its nearest entry. So a value within half a
  // grid step (1.5e-5) of a midpoint can take the farther entry; reproduced as it is.
  static const std::vector<uint8_t> table = [] {
    const auto& map = dynamic_map();
    std::vector<uint8_t> t(65536);
    size_t k = 0;
    for (size_t u = 0; u < t.size(); ++u) {
      const double g = double(u) / 65535.0 * 2.0 - 1.0;
      while (k < 255 && std::fabs(double(map[k + 1]) - g) < std::fabs(double(map[k]) - g)) ++k;
      t[u] = uint8_t(k);
    }
    return t;
  }();
  if (std::isnan(scaled)) return 0;  // 0 / 0 (all absmax equal): bitsandbytes stores index 0
  const float v = std::clamp(scaled, -1.0f, 1.0f);
  return table[size_t(((v + 1.0f) * 0.5f) * 65535.0f + 0.5f)];
}

Quantized quantize(std::span<const float> values, bool double_quant) {
  Quantized q;
  q.numel = values.size();
  const size_t blocks = (values.size() + kBlock - 1) / kBlock;
  // An odd count pads with 0.0, whose code (7) fills the last low nibble (bitsandbytes).
  q.packed.assign((values.size() + 1) / 2, 0);
  if (values.size() % 2) q.packed.back() = 7;
  q.absmax.resize(blocks);
  for (size_t b = 0; b < blocks; ++b) {
    const size_t begin = b * kBlock, end = std::min(values.size(), begin + kBlock);
    float absmax = 0;
    for (size_t i = begin; i < end; ++i) {
      if (!std::isfinite(values[i])) throw Error(fmt::format("nf4: element {} is {} (only finite values quantise)", i, values[i]));
      absmax = std::max(absmax, std::fabs(values[i]));
    }
    // bitsandbytes: a full block multiplies by the F32 reciprocal of its absmax and stores
    // the absmax as it is (0 for an all-zero block); the short last block divides and
    // stores its absmax clamped to >= 1e-38.
    const bool full = end - begin == kBlock;
    const float clamped = std::max(absmax, 1e-38f);
    q.absmax[b] = full ? absmax : clamped;
    const float inv = 1.0f / clamped;
    for (size_t i = begin; i < end; ++i) {
      const uint8_t c = code_of(full ? values[i] * inv : values[i] / clamped);
      q.packed[i / 2] |= uint8_t(i % 2 == 0 ? c << 4 : c);
    }
  }
  if (!double_quant) return q;

  double sum = 0;
  for (float a : q.absmax) sum += a;
  double_quantize(q, blocks ? float(sum / double(blocks)) : 0.0f);
  return q;
}

void double_quantize(Quantized& q, float offset) {
  if (q.double_quant) throw Error("nf4::double_quantize: already double-quantised");
  const size_t blocks = q.absmax.size();
  q.double_quant = true;
  q.offset = offset;
  const size_t nested = (blocks + kNestedBlock - 1) / kNestedBlock;
  q.qabsmax.resize(blocks);
  q.nested_absmax.resize(nested);
  for (size_t n = 0; n < nested; ++n) {
    const size_t begin = n * kNestedBlock, end = std::min(blocks, begin + kNestedBlock);
    float amax = 0;
    for (size_t b = begin; b < end; ++b) amax = std::max(amax, std::fabs(q.absmax[b] - q.offset));
    q.nested_absmax[n] = amax;
    for (size_t b = begin; b < end; ++b) q.qabsmax[b] = dynamic_index_of((q.absmax[b] - q.offset) / amax);
  }
  // Dequantisation uses what the file stores: the reconstructed absmax.
  for (size_t b = 0; b < blocks; ++b)
    q.absmax[b] = dynamic_map()[q.qabsmax[b]] * q.nested_absmax[b / kNestedBlock] + q.offset;
}

void dequantize(const Quantized& q, size_t begin, size_t end, float* out) {
  if (end > q.numel || begin > end) throw Error("nf4::dequantize: range outside the tensor");
  // Both codes of a byte at once from a 256-entry table; same products as element by element.
  static const std::array<std::array<float, 2>, 256> pairs = [] {
    std::array<std::array<float, 2>, 256> t{};
    for (size_t b = 0; b < 256; ++b) t[b] = {codes()[b >> 4], codes()[b & 15]};
    return t;
  }();
  size_t i = begin;
  if (i < end && i % 2 == 1) {
    out[0] = pairs[q.packed[i / 2]][1] * q.absmax[i / kBlock];
    ++i;
  }
  while (i + 2 <= end) {
    const size_t block_end = std::min(end & ~size_t(1), (i / kBlock + 1) * kBlock);  // kBlock is even
    const float a = q.absmax[i / kBlock];
    for (; i < block_end; i += 2) {
      const auto& p = pairs[q.packed[i / 2]];
      out[i - begin] = p[0] * a;
      out[i + 1 - begin] = p[1] * a;
    }
  }
  if (i < end) out[i - begin] = pairs[q.packed[i / 2]][0] * q.absmax[i / kBlock];
}

std::vector<float> dequantize(const Quantized& q) {
  std::vector<float> out(q.numel);
  dequantize(q, 0, q.numel, out.data());
  return out;
}

}  // namespace pivotmt::nf4
