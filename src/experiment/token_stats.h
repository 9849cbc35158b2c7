// Token fertility (the original's side study): tokens per whitespace word and per
// character for each column and tokenizer, the premium over a baseline column, and
// prompt-length percentiles with the share of prompts longer than the context.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/tokenizer.h"

namespace pivotmt {

struct ColumnFertility {
  std::string column;
  size_t rows = 0, tokens = 0, words = 0, chars = 0;
  double tokens_per_word() const { return words ? double(tokens) / double(words) : 0.0; }
  double tokens_per_char() const { return chars ? double(tokens) / double(chars) : 0.0; }
};

// Counts over the non-missing values of each column (no special tokens added).
std::vector<ColumnFertility> column_fertility(const Tokenizer& tok, const std::vector<std::string>& columns,
                                              const std::vector<std::vector<std::string>>& values);

struct PromptLengths {
  size_t count = 0, over_context = 0, context = 0;
  double p50 = 0, p90 = 0, p95 = 0, p99 = 0, max = 0, mean = 0;
};
// Lengths with special tokens (as the model sees them); context 0 = unknown.
PromptLengths prompt_lengths(const Tokenizer& tok, const std::vector<std::string>& prompts, size_t context);

// Percentile with linear interpolation (numpy's default), of sorted values.
double percentile(const std::vector<double>& sorted, double q);

}  // namespace pivotmt
