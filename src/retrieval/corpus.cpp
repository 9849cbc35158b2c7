#include "retrieval/corpus.h"

#include <algorithm>

#include <fmt/format.h>

#include "core/error.h"

namespace pivotmt {

size_t find_column(const Table& t, const std::string& name) {
  auto it = std::find(t.columns.begin(), t.columns.end(), name);
  if (it != t.columns.end()) return size_t(it - t.columns.begin());
  std::vector<size_t> nested;
  for (size_t i = 0; i < t.columns.size(); ++i)
    if (t.columns[i].ends_with("." + name)) nested.push_back(i);
  if (nested.size() == 1) return nested[0];
  if (nested.size() > 1)
    throw Error(fmt::format("{}: column '{}' is ambiguous ({} nested columns end with it)", t.source, name, nested.size()));
  return t.column(name);  // throws, listing the columns
}

ParallelCorpus load_parallel(const Table& table, const std::string& pivot, const std::string& source,
                             const std::string& target) {
  ParallelCorpus c;
  c.source = table.source;
  c.pivot_column = pivot;
  c.source_column = source;
  c.target_column = target;
  const size_t p = find_column(table, pivot), s = find_column(table, source), t = find_column(table, target);
  auto present = [](const std::optional<std::string>& v) {
    return v && v->find_first_not_of(" \t\r\n") != std::string::npos;
  };
  c.total_rows = table.rows.size();
  for (size_t r = 0; r < table.rows.size(); ++r) {
    const auto& row = table.rows[r];
    if (!present(row[p]) || !present(row[s]) || !present(row[t])) {
      ++c.dropped;
      continue;
    }
    c.rows.push_back({*row[p], *row[s], *row[t], r});
  }
  return c;
}

}  // namespace pivotmt
