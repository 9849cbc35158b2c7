// 4-bit NormalFloat (NF4) quantisation exactly as bitsandbytes computes it (REFERENCE.md
// §10, §11): blocks of 64 consecutive values of the row-major weight, an F32 absmax per
// block, each value mapped to the nearest of 16 codes, two codes per byte with the first
// element in the high nibble; optionally the absmax values double-quantised to 8 bits
// (blocks of 256, bitsandbytes' signed dynamic map). Written here because no Debian library
// implements bitsandbytes' format; the goldens in tests/goldens/nf4 come from bitsandbytes.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace pivotmt::nf4 {

constexpr size_t kBlock = 64;          // values per absmax (HF's bnb_4bit blocksize)
constexpr size_t kNestedBlock = 256;   // absmax values per nested scale (double quantisation)

// The 16 NF4 code values, ascending (code index = nibble).
const std::array<float, 16>& codes();
// bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
// 256 ascending values from -0.99296875 to 1.0 (the double-quantisation code book).
const std::array<float, 256>& dynamic_map();

// The nibble of one value already scaled by 1/absmax: strict '>' against the midpoints of
// adjacent codes, so a value exactly on a midpoint takes the lower code.
uint8_t code_of(float scaled);
// The 8-bit index of a value scaled into [-1, 1] in the dynamic map, found as
// bitsandbytes' blockwise quantiser finds it (a binary search; nearly always the nearest).
uint8_t dynamic_index_of(float scaled);

struct Quantized {
  size_t numel = 0;
  std::vector<uint8_t> packed;        // [(numel + 1) / 2]: element 2j high nibble, 2j+1 low
  std::vector<float> absmax;          // [blocks] the absmax each block dequantises with
  // Double quantisation (nested): absmax[b] = map[qabsmax[b]] * nested_absmax[b / 256] + offset.
  bool double_quant = false;
  std::vector<uint8_t> qabsmax;       // [blocks]
  std::vector<float> nested_absmax;   // [ceil(blocks / 256)]
  float offset = 0;                   // mean of the block absmax values
  size_t blocks() const { return absmax.size(); }
  size_t bytes() const { return packed.size() + (double_quant ? qabsmax.size() + nested_absmax.size() * 4 : absmax.size() * 4); }
};

// Quantises `values` (a weight flattened row-major). An all-zero block stores absmax 0 and
// code 7 (0.0), as bitsandbytes' CPU backend does (its GPU kernel stores code 0; both
// dequantise to 0). With double_quant the absmax values used to dequantise are the
// reconstructed 8-bit ones, as bitsandbytes dequantises them.
Quantized quantize(std::span<const float> values, bool double_quant);

// Replaces the absmax values of a plain quantisation by their 8-bit double quantisation
// around `offset` (quantize() passes their mean): blockwise over 256 values, each divided by
// the block's max |absmax - offset| and indexed by dynamic_index_of().
// bitsandbytes takes the offset from torch's F32 mean, whose rounding depends on the
// reduction order of the machine (AVX2, AVX-512, CUDA); quantize() uses the mean computed
// in double, which is within an F32 rounding of any of them.
void double_quantize(Quantized& q, float offset);

// w[i] = code[nibble(i)] * absmax[i / 64] in F32, for elements [begin, end).
void dequantize(const Quantized& q, size_t begin, size_t end, float* out);
std::vector<float> dequantize(const Quantized& q);

}  // namespace pivotmt::nf4
