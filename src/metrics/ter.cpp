#include "metrics/ter.h"

#include <cmath>

#include "metrics/ngrams.h"
#include "metrics/ter_edit.h"
#include "text/unicode.h"

namespace pivotmt::metrics {
namespace {
struct TerReferences : ReferenceInfo {
  WordIds words;
  std::vector<std::vector<uint32_t>> refs;
};

std::vector<uint32_t> to_vector(const std::u32string& ids) { return {ids.begin(), ids.end()}; }
}  // namespace

std::unique_ptr<ReferenceInfo> Ter::prepare_references(const std::vector<std::u32string>& refs) const {
  auto info = std::make_unique<TerReferences>();
  for (const auto& ref : refs)
    info->refs.push_back(to_vector(info->words.ids(py_split(tokenize_tercom(py_rstrip(ref), o_)))));
  return info;
}

std::vector<double> Ter::segment_stats(const std::u32string& hyp, const ReferenceInfo& ref_info) const {
  const auto& refs = static_cast<const TerReferences&>(ref_info);
  const auto words = to_vector(refs.words.lookup(py_split(tokenize_tercom(py_rstrip(hyp), o_))));
  int64_t best = 10'000'000'000'000'000;
  double ref_lengths = 0;
  for (const auto& ref : refs.refs) {
    const TerEdits e = translation_edit_rate(words, ref);
    ref_lengths += double(e.ref_length);
    if (e.edits < best) best = e.edits;
  }
  return {double(best), ref_lengths / double(refs.refs.size())};
}

Score Ter::score_from_stats(std::span<const double> stats, StatsPrecision precision) const {
  const double edits = stats[0], ref_length = stats[1];
  double score;
  if (ref_length > 0) {
    // float32 statistics divide in float32 (numpy), as in sacrebleu's bootstrap.
    score = precision == StatsPrecision::Float32 ? double(float(edits) / float(ref_length)) : edits / ref_length;
  } else {
    score = edits > 0 ? 1.0 : 0.0;  // empty references: 100 with a non-empty hypothesis
  }
  Score s;
  s.name = "TER";
  s.score = 100 * score;
  s.num_edits = std::trunc(edits);
  s.ref_length = ref_length;
  return s;
}

std::vector<std::pair<std::string, std::pair<std::string, std::string>>> Ter::signature_fields() const {
  auto yn = [](bool b) { return std::string(b ? "yes" : "no"); };
  return {{"case", {"c", o_.case_sensitive ? "mixed" : "lc"}},
          {"tok", {"t", "tercom"}},
          {"norm", {"nr", yn(o_.normalized)}},
          {"punct", {"pn", yn(!o_.no_punct)}},
          {"asian", {"as", yn(o_.asian_support)}}};
}

}  // namespace pivotmt::metrics
