// GGUF (llama.cpp's model file, versions 2 and 3): a validated reader.
//
// Layout (little-endian): "GGUF", u32 version, u64 tensor count, u64 metadata count;
// metadata as (string key, u32 value type, value); tensor infos as (string name, u32 rank,
// u64 dims[rank] — innermost first —, u32 ggml type, u64 offset); padding to the
// alignment (general.alignment, default 32); the data section. Strings are a u64 length
// and that many bytes (not NUL-terminated). An array value is a u32 element type, a u64
// count, then the elements (arrays may nest).
//
// Everything is checked before anything is used, as the safetensors reader does: every
// count against the bytes that are left, every string within the file, every tensor's
// byte size (overflow-checked) and its range inside the data section, aligned, without
// overlaps or duplicate names. Errors name the file and the key or tensor.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "io/mapped_file.h"
#include "quant/ggml_quants.h"

namespace pivotmt {

enum class GgufValueType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7, String = 8, Array = 9, U64 = 10, I64 = 11,
  F64 = 12,
};
const char* gguf_value_type_name(GgufValueType t);

// One metadata value. Integers keep their sign in `i` (signed types) or `u` (unsigned
// types and bool); floats are widened to double exactly; an array's elements are values
// of `element_type`.
struct GgufValue {
  GgufValueType type = GgufValueType::U8;
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0;
  std::string s;
  GgufValueType element_type = GgufValueType::U8;  // arrays
  std::vector<GgufValue> array;

  bool is_integer() const;
  bool is_number() const { return is_integer() || type == GgufValueType::F32 || type == GgufValueType::F64; }
  std::string describe() const;  // "u32 30", "string 'llama'", "array of 49152 string"
};

struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> dims;  // innermost first (GGUF / ggml order): a [out, in] weight is {in, out}
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;  // inside the data section
  uint64_t nbytes = 0;

  uint64_t numel() const;
  // The shape as PyTorch / safetensors write it (outermost first).
  std::vector<int64_t> torch_shape() const;
};

struct GgufHeader {
  uint32_t version = 0;
  std::vector<std::pair<std::string, GgufValue>> metadata;  // file order
  std::map<std::string, size_t, std::less<>> metadata_index;
  std::vector<GgufTensorInfo> tensors;  // file order
  uint64_t alignment = 32;
  uint64_t data_start = 0;  // byte offset of the data section in the file
};

// Parses and validates a whole GGUF file's bytes. `label` (usually the path) prefixes
// every error message.
GgufHeader parse_gguf(std::span<const std::byte> file, const std::string& label);

// True when the bytes start with GGUF's magic (any version, either byte order).
bool looks_like_gguf(std::span<const std::byte> prefix);
bool is_gguf_path(const std::string& path);  // a regular file whose first four bytes are "GGUF"

// One mapped, validated GGUF file.
class GgufFile {
 public:
  explicit GgufFile(const std::string& path);

  const std::string& path() const { return file_.path(); }
  uint32_t version() const { return header_.version; }
  const GgufHeader& header() const { return header_; }
  const std::vector<GgufTensorInfo>& tensors() const { return header_.tensors; }

  const GgufValue* find(std::string_view key) const;  // nullptr when absent
  const GgufValue& at(std::string_view key) const;    // throws naming file and key
  // Typed getters: a value of another type is an error naming the key, the type found and
  // the type expected; the optional forms return nullopt only when the key is absent.
  std::optional<std::string> get_string(std::string_view key) const;
  std::optional<uint64_t> get_uint(std::string_view key) const;  // any integer type, >= 0
  std::optional<double> get_float(std::string_view key) const;   // any number
  std::optional<bool> get_bool(std::string_view key) const;
  std::vector<std::string> get_strings(std::string_view key) const;  // an array of strings; empty when absent
  std::vector<double> get_numbers(std::string_view key) const;       // an array of numbers; empty when absent
  std::vector<int64_t> get_integers(std::string_view key) const;     // an array of integers; empty when absent

  const GgufTensorInfo* find_tensor(std::string_view name) const;
  const GgufTensorInfo& tensor(std::string_view name) const;  // throws naming file and tensor
  std::span<const std::byte> data(const GgufTensorInfo& t) const;

 private:
  MappedFile file_;
  GgufHeader header_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace pivotmt
