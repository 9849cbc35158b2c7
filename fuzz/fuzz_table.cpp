// libFuzzer target: arbitrary bytes as CSV, TSV, JSON Lines and Parquet. Either a table whose
// every row has one value per column, or a FormatError.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "core/error.h"
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
  return 0;
}
