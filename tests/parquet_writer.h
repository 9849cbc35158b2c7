// A minimal Parquet writer for tests: string columns (flat, or fields of one struct
// group), optional values, PLAIN encoding, data pages v1, uncompressed or SNAPPY. It
// follows the format specification independently of the reader under test.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace pivotmt::test {

struct ParquetColumn {
  std::string name;                               // leaf name
  std::vector<std::optional<std::string>> values;  // nullopt: null
};

// `group`: when not empty, the columns are fields of an optional struct with that name.
// `claimed_uncompressed` >= 0: the page headers claim that many uncompressed bytes (crafted
// files for the reader's bounds).
std::string write_parquet(const std::vector<ParquetColumn>& columns, const std::string& group, bool snappy,
                          int64_t claimed_uncompressed = -1);

}  // namespace pivotmt::test
