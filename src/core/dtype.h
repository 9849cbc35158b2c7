// Element types of stored and computed tensors, and exact conversions between them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace pivotmt {

// The safetensors dtype names, in the order of the format's specification.
// NF4 comes last and is not a file dtype: it names bitsandbytes' 4-bit weight storage
// (quant/nf4.h), two values per byte, so dtype_size() is 0 for it and dtype_from_name()
// never returns it.
// GGML, after it, names weights kept as a GGUF file's blocks (quant/ggml_quants.h: Q8_0,
// Q4_0, Q4_1), also storage only.
enum class DType : uint8_t { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL, F8_E4M3, F8_E5M2, NF4, GGML };

// "F32" -> DType::F32; nullopt for a name the format does not define.
std::optional<DType> dtype_from_name(std::string_view name);
std::string_view dtype_name(DType t);
size_t dtype_size(DType t);
bool dtype_is_float(DType t);

// IEEE half <-> float, round to nearest even (the rounding PyTorch's .half() does).
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
// bfloat16 <-> float, round to nearest even; NaN stays NaN (as torch's .bfloat16()).
float bf16_to_f32(uint16_t b);
uint16_t f32_to_bf16(float f);

// Converts `count` elements of float type `from` (F32, F16, BF16, F64) at `src` into
// `to` (F32, F16, BF16) at `dst`. Throws UnsupportedError for other pairs.
// src and dst may be unaligned; they must not overlap.
// Uses F16C instructions when the CPU has them.
void convert_floats(DType from, const void* src, DType to, void* dst, size_t count);
// The portable element-by-element path: the reference the SIMD path is tested against.
void convert_floats_scalar(DType from, const void* src, DType to, void* dst, size_t count);

}  // namespace pivotmt
