#include "metrics/scoring.h"

#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "core/error.h"
#include "metrics/bleu.h"
#include "metrics/chrf.h"
#include "metrics/ter.h"
#include "text/unicode.h"

namespace pivotmt::metrics {

std::unique_ptr<Metric> make_metric(const std::string& name, const ScoringOptions& o, bool sentence_level) {
  if (name == "bleu") {
    BleuOptions b;
    b.lowercase = o.lowercase;
    b.tokenize = o.tokenize;
    b.spm_model = o.spm_model;
    b.smooth_method = o.smooth_method;
    b.smooth_value = o.smooth_value;
    b.max_ngram_order = o.max_ngram_order;
    b.effective_order = o.effective_order || sentence_level;
    return std::make_unique<Bleu>(b);
  }
  if (name == "chrf" || name == "chrf++") {
    ChrfOptions c;
    c.char_order = o.chrf_char_order;
    c.word_order = name == "chrf++" ? o.chrf_word_order : 0;
    c.beta = o.chrf_beta;
    c.lowercase = o.lowercase;
    c.whitespace = o.chrf_whitespace;
    c.eps_smoothing = o.chrf_eps_smoothing;
    return std::make_unique<Chrf>(c);
  }
  if (name == "ter") return std::make_unique<Ter>(o.ter);
  throw Error(fmt::format("unknown metric '{}' (expected bleu, chrf, chrf++ or ter)", name));
}

std::string metric_key(const std::string& name) {
  if (name == "bleu") return "BLEU";
  if (name == "chrf") return "chrF";
  if (name == "chrf++") return "chrF++";
  if (name == "ter") return "TER";
  throw Error(fmt::format("unknown metric '{}'", name));
}

std::vector<std::u32string> read_text_lines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("{}: cannot open", path));
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string data = ss.str();
  std::vector<std::u32string> lines;
  size_t start = 0, line_no = 1;
  while (start < data.size()) {
    size_t end = data.find('\n', start);
    if (end == std::string::npos) end = data.size();
    const std::string_view line(data.data() + start, end - start);
    if (const size_t bad = utf8_invalid_offset(line); bad != std::string_view::npos)
      throw FormatError(fmt::format("{}:{}: invalid UTF-8 at byte {} of the line", path, line_no, bad + 1));
    lines.push_back(py_rstrip(utf8_to_u32(line)));
    start = end + 1;
    ++line_no;
  }
  return lines;
}

}  // namespace pivotmt::metrics
