// Tabular files (CSV, TSV, JSON Lines) read into named columns, with errors that name the
// file, the line and the problem. Used by `pivotmt score --csv`, datasets and reports.
#pragma once
#include <optional>
#include <string>
#include <vector>

namespace pivotmt {

struct Table {
  std::string source;                // the file, for messages
  std::vector<std::string> columns;  // header names (JSONL: keys in first-seen order; nested "a.b")
  std::vector<std::vector<std::optional<std::string>>> rows;  // nullopt: missing / null
  std::vector<size_t> row_lines;     // 1-based line where each row starts

  // Index of a column; throws naming the file and listing the columns it has.
  size_t column(const std::string& name) const;
};

enum class TableFormat { Csv, Tsv, Jsonl, Parquet };

// By extension: .csv, .tsv/.tab, .jsonl/.ndjson/.json (one object per line), .parquet.
TableFormat table_format_for(const std::string& path);

// RFC 4180: a header row, fields separated by `delimiter`, quoted fields may hold the
// delimiter, doubled quotes and newlines; CRLF or LF line ends; a UTF-8 BOM is skipped.
Table parse_delimited(std::string_view text, char delimiter, const std::string& source);
// One JSON object per non-empty line. Strings are taken as they are, numbers and booleans
// as their JSON text, null as missing; nested objects are flattened to "outer.inner".
Table parse_jsonl(std::string_view text, const std::string& source);

Table read_table(const std::string& path);
Table read_table(const std::string& path, TableFormat format);

}  // namespace pivotmt
