// A parallel corpus as the study uses it: (pivot, source, target) per row, from any table
// (CSV/TSV/JSONL now; nested columns such as the Tunisian corpus's translation.msa are
// addressable as "translation.msa" or simply "msa"). Rows with an empty or missing
// pivot, source or target are dropped and counted, as the original did before indexing.
#pragma once
#include <string>
#include <vector>

#include "io/table.h"

namespace pivotmt {

struct ParallelRow {
  std::string pivot, source, target;
  size_t row = 0;  // index in the source table (before filtering)
};

struct ParallelCorpus {
  std::string source;  // the file it came from
  std::string pivot_column, source_column, target_column;
  std::vector<ParallelRow> rows;
  size_t total_rows = 0, dropped = 0;
};

// Resolves "msa" to "translation.msa" when only the nested column exists.
size_t find_column(const Table& t, const std::string& name);

ParallelCorpus load_parallel(const Table& table, const std::string& pivot, const std::string& source,
                             const std::string& target);

}  // namespace pivotmt
