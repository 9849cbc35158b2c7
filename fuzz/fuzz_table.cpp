// libFuzzer target: arbitrary bytes as CSV, TSV, JSON Lines and Parquet. Either a table whose
// every row has one value per column, or a FormatError.
//
// Inputs starting with 'R' are also a recipe for a well-formed Parquet file
// (tests/parquet_writer.h) whose page headers claim sizes from the edges of 32/64-bit
// arithmetic (edge_numbers.h): what a crafted file asks the reader to allocate.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>
#include <string_view>

#include "core/error.h"
#include "edge_numbers.h"
#include "parquet_writer.h"
#include "io/parquet.h"
#include "io/table.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto check = [](const pivotmt::Table& t) {
    if (t.rows.size() != t.row_lines.size()) std::abort();
    for (const auto& row : t.rows)
      if (row.size() != t.columns.size()) std::abort();
  };
  for (char delimiter : {',', '\t'}) {
    try {
      check(pivotmt::parse_delimited(text, delimiter, "fuzz.csv"));
    } catch (const pivotmt::FormatError&) {
    }
  }
  try {
    check(pivotmt::parse_jsonl(text, "fuzz.jsonl"));
  } catch (const pivotmt::FormatError&) {
  }
  try {
    check(pivotmt::parse_parquet(std::span(data, size), "fuzz.parquet"));
  } catch (const pivotmt::Error&) {  // FormatError, or UnsupportedError for codecs/encodings
  }
  if (size > 0 && data[0] == 'R') {
    pivotmt::fuzz::Recipe r{data + 1, size - 1};
    std::vector<std::optional<std::string>> values(1 + r.byte() % 4);
    for (auto& v : values)
      if (r.byte() % 4) v = std::string(r.byte() % 16, char('a' + r.byte() % 26));
    const bool snappy = r.byte() % 2;
    const std::string file = pivotmt::test::write_parquet({{"a", values}}, "", snappy, int64_t(r.number() >> 1));
    try {
      check(pivotmt::parse_parquet(std::span(reinterpret_cast<const uint8_t*>(file.data()), file.size()), "fuzz.parquet"));
    } catch (const pivotmt::Error&) {
    }
  }
  return 0;
}
