// ggml's tensor types (as GGUF files store them) and their dequantisation.
//
// Every type llama.cpp defines is known by id, name, block size and block bytes, so that a
// GGUF file's tensor sizes can be validated whatever it holds; the types dequantised are
// F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K and Q6_K, value for value as
// gguf-py's `quants.dequantize` computes them (F32 arithmetic, one rounding per numpy
// operation: Q4_1's d * q + m is two roundings, never a fused multiply-add — this file is
// compiled with -ffp-contract=off).
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace pivotmt {

enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9, Q2_K = 10, Q3_K = 11, Q4_K = 12,
  Q5_K = 13, Q6_K = 14, Q8_K = 15, IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21,
  IQ2_S = 22, IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30, TQ1_0 = 34,
  TQ2_0 = 35, MXFP4 = 39,
};

struct GgmlTypeTraits {
  const char* name;
  uint32_t block_size;   // values per block
  uint32_t block_bytes;  // bytes per block
  bool dequantized;      // pivotmt turns it into floats
};

// nullopt for an id ggml does not define (or one removed from it, such as Q4_2).
std::optional<GgmlTypeTraits> ggml_type_traits(uint32_t id);
const GgmlTypeTraits& ggml_traits(GgmlType t);  // t must be a defined type
const char* ggml_type_name(GgmlType t);

// Bytes of `n` values of type t (n a multiple of the block size; throws otherwise).
uint64_t ggml_row_bytes(GgmlType t, uint64_t n);

// Q4_K / Q5_K: the eight 6-bit scales and minimums packed in a super-block's 12 bytes
// (gguf-py's get_scale_min); shared with the CPU kernels that multiply the blocks in place.
void ggml_k4_scales(const uint8_t* packed, uint8_t scales[8], uint8_t minimums[8]);

// Whether the CPU multiplies a tensor of this type with rows of `cols` values as its
// blocks, in place (`--weights gguf` / `gguf-q8`): Q8_0, Q4_0, Q4_1 (cols a multiple of
// 32), Q4_K, Q5_K, Q6_K (of 256). Anything else is stored as F16.
bool ggml_multiplied_in_place(GgmlType t, uint64_t cols);

// `n` values (a multiple of the block size) from `src` (exactly ggml_row_bytes(t, n)
// bytes) into `dst`. Throws UnsupportedError for a type that is not dequantised.
void ggml_dequantize(GgmlType t, std::span<const std::byte> src, float* dst, uint64_t n);

}  // namespace pivotmt
