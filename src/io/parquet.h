// Parquet files read into a Table (Debian has no Arrow/Parquet C++ library, so this is
// our own reader): footer and Thrift metadata, data pages v1 and v2, PLAIN and
// dictionary (PLAIN_DICTIONARY / RLE_DICTIONARY) values, RLE / bit-packed levels,
// uncompressed, SNAPPY, GZIP and ZSTD pages; BYTE_ARRAY / UTF8, integer, floating and
// boolean columns, required or optional, inside nested groups (a struct column such as
// the Tunisian corpus's `translation` becomes translation.en, translation.msa, ...).
// Repeated (list) columns are left out. Every offset, length and count is checked; errors
// name the file, the column and the page.
#pragma once
#include <cstdint>
#include <span>
#include <string>

#include "io/table.h"

namespace pivotmt {

Table read_parquet(const std::string& path);
Table parse_parquet(std::span<const uint8_t> bytes, const std::string& label);

}  // namespace pivotmt
