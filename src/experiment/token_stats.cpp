#include "experiment/token_stats.h"

#include <algorithm>
#include <cmath>

#include "text/unicode.h"

namespace pivotmt {

std::vector<ColumnFertility> column_fertility(const Tokenizer& tok, const std::vector<std::string>& columns,
                                              const std::vector<std::vector<std::string>>& values) {
  std::vector<ColumnFertility> out;
  for (size_t c = 0; c < columns.size(); ++c) {
    ColumnFertility f;
    f.column = columns[c];
    for (const auto& v : values[c]) {
      const std::u32string u = utf8_to_u32(v);
      ++f.rows;
      f.words += py_split(u).size();
      f.chars += u.size();
      f.tokens += tok.encode(v, false).size();
    }
    out.push_back(f);
  }
  return out;
}

double percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0.0;
  const double pos = q / 100.0 * double(sorted.size() - 1);
  const size_t lo = size_t(std::floor(pos)), hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - double(lo));
}

PromptLengths prompt_lengths(const Tokenizer& tok, const std::vector<std::string>& prompts, size_t context) {
  PromptLengths p;
  std::vector<double> lengths;
  for (const auto& text : prompts) lengths.push_back(double(tok.encode(text, true).size()));
  std::sort(lengths.begin(), lengths.end());
  p.count = lengths.size();
  p.context = context;
  if (lengths.empty()) return p;
  p.p50 = percentile(lengths, 50);
  p.p90 = percentile(lengths, 90);
  p.p95 = percentile(lengths, 95);
  p.p99 = percentile(lengths, 99);
  p.max = lengths.back();
  double sum = 0;
  for (double l : lengths) {
    sum += l;
    if (context && l > double(context)) ++p.over_context;
  }
  p.mean = sum / double(lengths.size());
  return p;
}

}  // namespace pivotmt
