// A bounds-checked reader of Thrift's compact protocol (the encoding of Parquet's footer
// and page headers) into a generic tree; every length and count is checked against the
// bytes that remain, and nesting is limited, so hostile input gives a FormatError.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace pivotmt::thrift {

struct Value {
  enum class Kind { Bool, Int, Double, Binary, List, Struct, Map } kind = Kind::Int;
  bool b = false;
  int64_t i = 0;
  double d = 0;
  std::string bin;
  std::vector<Value> list;
  std::map<int16_t, Value> fields;  // Struct

  const Value* field(int16_t id) const;
  int64_t int_field(int16_t id, int64_t fallback) const;
  const std::string* binary_field(int16_t id) const;
};

// Parses one struct starting at `data`; `consumed` receives its length in bytes.
// `where` prefixes error messages (file and what is being read).
Value read_struct(const uint8_t* data, size_t size, size_t& consumed, const std::string& where);

}  // namespace pivotmt::thrift
