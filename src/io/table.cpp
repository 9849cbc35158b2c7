#include "io/table.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/parquet.h"
#include "text/unicode.h"

namespace pivotmt {

size_t Table::column(const std::string& name) const {
  auto it = std::find(columns.begin(), columns.end(), name);
  if (it != columns.end()) return size_t(it - columns.begin());
  throw Error(fmt::format("{}: no column '{}' (columns: {})", source, name, fmt::join(columns, ", ")));
}

TableFormat table_format_for(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), ::tolower);
  if (ext == ".csv") return TableFormat::Csv;
  if (ext == ".tsv" || ext == ".tab") return TableFormat::Tsv;
  if (ext == ".jsonl" || ext == ".ndjson" || ext == ".json") return TableFormat::Jsonl;
  if (ext == ".parquet") return TableFormat::Parquet;
  throw Error(fmt::format("{}: unknown table format (expected .csv, .tsv, .jsonl or .parquet)", path));
}

namespace {
void check_utf8(std::string_view text, const std::string& source) {
  const size_t bad = utf8_invalid_offset(text);
  if (bad == std::string_view::npos) return;
  const size_t line = 1 + size_t(std::count(text.begin(), text.begin() + long(bad), '\n'));
  throw FormatError(fmt::format("{}:{}: invalid UTF-8 (byte offset {})", source, line, bad));
}

std::string_view skip_bom(std::string_view text) {
  return text.starts_with("\xEF\xBB\xBF") ? text.substr(3) : text;
}
}  // namespace

Table parse_delimited(std::string_view text, char delimiter, const std::string& source) {
  check_utf8(text, source);
  text = skip_bom(text);
  Table t;
  t.source = source;
  std::vector<std::vector<std::string>> records;
  std::vector<size_t> lines;
  size_t line = 1, i = 0;
  while (i < text.size()) {
    std::vector<std::string> record;
    const size_t record_line = line;
    while (true) {  // one field per iteration
      std::string field;
      if (i < text.size() && text[i] == '"') {
        const size_t field_line = line;
        ++i;
        while (true) {
          if (i >= text.size())
            throw FormatError(fmt::format("{}:{}: quoted field {} never closes", source, field_line, record.size() + 1));
          const char c = text[i++];
          if (c == '"') {
            if (i < text.size() && text[i] == '"') {
              field.push_back('"');
              ++i;
              continue;
            }
            break;
          }
          if (c == '\n') ++line;
          field.push_back(c);
        }
        if (i < text.size() && text[i] != delimiter && text[i] != '\n' && !(text[i] == '\r' && i + 1 < text.size() && text[i + 1] == '\n') && text[i] != '\r')
          throw FormatError(fmt::format("{}:{}: field {}: unexpected character after a closing quote", source, line,
                                        record.size() + 1));
      } else {
        while (i < text.size() && text[i] != delimiter && text[i] != '\n') field.push_back(text[i++]);
        if (!field.empty() && field.back() == '\r' && (i >= text.size() || text[i] == '\n')) field.pop_back();
      }
      record.push_back(std::move(field));
      if (i < text.size() && text[i] == delimiter) {
        ++i;
        continue;
      }
      if (i < text.size() && text[i] == '\r') ++i;
      if (i < text.size() && text[i] == '\n') {
        ++i;
        ++line;
      }
      break;
    }
    if (record.size() == 1 && record[0].empty()) continue;  // blank line
    records.push_back(std::move(record));
    lines.push_back(record_line);
  }
  if (records.empty()) throw FormatError(fmt::format("{}: empty file (expected a header row)", source));
  t.columns = records[0];
  std::map<std::string, int> seen;
  for (const auto& c : t.columns)
    if (seen[c]++ == 1) throw FormatError(fmt::format("{}:1: column '{}' appears twice in the header", source, c));
  for (size_t r = 1; r < records.size(); ++r) {
    if (records[r].size() != t.columns.size())
      throw FormatError(fmt::format("{}:{}: {} fields, the header has {}", source, lines[r], records[r].size(),
                                    t.columns.size()));
    std::vector<std::optional<std::string>> row(records[r].begin(), records[r].end());
    t.rows.push_back(std::move(row));
    t.row_lines.push_back(lines[r]);
  }
  return t;
}

namespace {
void flatten(const nlohmann::json& value, const std::string& prefix, std::vector<std::pair<std::string, std::optional<std::string>>>& out) {
  if (value.is_object()) {
    for (const auto& [k, v] : value.items()) flatten(v, prefix.empty() ? k : prefix + "." + k, out);
  } else if (value.is_null()) {
    out.emplace_back(prefix, std::nullopt);
  } else if (value.is_string()) {
    out.emplace_back(prefix, value.get<std::string>());
  } else {
    out.emplace_back(prefix, value.dump());
  }
}
}  // namespace

Table parse_jsonl(std::string_view text, const std::string& source) {
  check_utf8(text, source);
  text = skip_bom(text);
  Table t;
  t.source = source;
  std::map<std::string, size_t> index;
  std::vector<std::vector<std::pair<std::string, std::optional<std::string>>>> parsed;
  size_t line = 0, start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    ++line;
    std::string_view l = text.substr(start, end - start);
    start = end + 1;
    if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
    if (l.find_first_not_of(" \t") == std::string_view::npos) {
      if (end == text.size()) break;
      continue;
    }
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(l);
    } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for a number like 1e999
      throw FormatError(fmt::format("{}:{}: invalid JSON: {}", source, line, e.what()));
    }
    if (!j.is_object()) throw FormatError(fmt::format("{}:{}: expected a JSON object", source, line));
    std::vector<std::pair<std::string, std::optional<std::string>>> fields;
    flatten(j, "", fields);
    for (const auto& [k, v] : fields)
      if (index.emplace(k, t.columns.size()).second) t.columns.push_back(k);
    parsed.push_back(std::move(fields));
    t.row_lines.push_back(line);
    if (end == text.size()) break;
  }
  for (const auto& fields : parsed) {
    std::vector<std::optional<std::string>> row(t.columns.size());
    for (const auto& [k, v] : fields) row[index.at(k)] = v;
    t.rows.push_back(std::move(row));
  }
  return t;
}

Table read_table(const std::string& path) { return read_table(path, table_format_for(path)); }

Table read_table(const std::string& path, TableFormat format) {
  if (format == TableFormat::Parquet) return read_parquet(path);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("{}: cannot open", path));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  switch (format) {
    case TableFormat::Csv: return parse_delimited(text, ',', path);
    case TableFormat::Tsv: return parse_delimited(text, '\t', path);
    case TableFormat::Jsonl: return parse_jsonl(text, path);
    case TableFormat::Parquet: break;
  }
  throw Error("unreachable");
}

}  // namespace pivotmt
