#include "metrics/chrf.h"

#include <fmt/format.h>

#include "core/error.h"
#include "metrics/ngrams.h"
#include "text/unicode.h"

namespace pivotmt::metrics {
namespace {

struct ChrfReference {
  std::vector<PackedNgrams> orders;  // char orders 1..nc, then word orders 1..nw
};
struct ChrfReferences : ReferenceInfo {
  WordIds words;
  std::vector<ChrfReference> refs;
};

bool is_ascii_punct(char32_t c) {  // Python's string.punctuation
  return (c >= 0x21 && c <= 0x2f) || (c >= 0x3a && c <= 0x40) || (c >= 0x5b && c <= 0x60) || (c >= 0x7b && c <= 0x7e);
}

std::u32string char_sequence(const std::u32string& s, bool whitespace) {
  if (whitespace) return s;
  std::u32string out;  // ''.join(s.split())
  out.reserve(s.size());
  for (char32_t c : s)
    if (!py_isspace(c)) out.push_back(c);
  return out;
}
}  // namespace

Chrf::Chrf(ChrfOptions options) : o_(options) {
  if (o_.char_order < 0 || o_.word_order < 0 || o_.char_order + o_.word_order == 0 ||
      size_t(o_.char_order) > PackedNgrams::kMaxOrder || size_t(o_.word_order) > PackedNgrams::kMaxOrder)
    throw Error(fmt::format("chrF orders out of range: char {}, word {}", o_.char_order, o_.word_order));
  if (o_.beta < 0) throw Error(fmt::format("chrF beta must be non-negative, got {}", o_.beta));
}

std::string Chrf::name() const { return fmt::format("chrF{}{}", o_.beta, std::string(size_t(o_.word_order), '+')); }

std::vector<std::u32string> Chrf::split_punctuation(const std::u32string& sentence) {
  std::vector<std::u32string> out;
  for (auto& w : py_split(sentence)) {
    if (w.size() == 1) {
      out.push_back(w);
    } else if (is_ascii_punct(w.back())) {
      out.push_back(w.substr(0, w.size() - 1));
      out.push_back(w.substr(w.size() - 1));
    } else if (is_ascii_punct(w.front())) {
      out.push_back(w.substr(0, 1));
      out.push_back(w.substr(1));
    } else {
      out.push_back(w);
    }
  }
  return out;
}

std::unique_ptr<ReferenceInfo> Chrf::prepare_references(const std::vector<std::u32string>& refs) const {
  auto info = std::make_unique<ChrfReferences>();
  for (const auto& raw : refs) {
    const std::u32string ref = o_.lowercase ? py_lower(raw) : raw;
    ChrfReference r;
    const std::u32string chars = char_sequence(ref, o_.whitespace);
    for (int n = 1; n <= o_.char_order; ++n) r.orders.emplace_back(chars, size_t(n));
    if (o_.word_order > 0) {
      const std::u32string ids = info->words.ids(split_punctuation(ref));
      for (int n = 1; n <= o_.word_order; ++n) r.orders.emplace_back(ids, size_t(n));
    }
    info->refs.push_back(std::move(r));
  }
  return info;
}

std::vector<double> Chrf::segment_stats(const std::u32string& raw_hyp, const ReferenceInfo& ref_info) const {
  const auto& refs = static_cast<const ChrfReferences&>(ref_info);
  const std::u32string hyp = o_.lowercase ? py_lower(raw_hyp) : raw_hyp;
  std::vector<PackedNgrams> h;
  const std::u32string chars = char_sequence(hyp, o_.whitespace);
  for (int n = 1; n <= o_.char_order; ++n) h.emplace_back(chars, size_t(n));
  if (o_.word_order > 0) {
    const std::u32string ids = refs.words.lookup(split_punctuation(hyp));
    for (int n = 1; n <= o_.word_order; ++n) h.emplace_back(ids, size_t(n));
  }
  // The reference with the best sentence-level score wins; the first on a tie.
  std::vector<double> best;
  double best_f = -1.0;
  for (const auto& r : refs.refs) {
    std::vector<double> stats;
    stats.reserve(stats_size());
    for (size_t i = 0; i < h.size(); ++i) {
      const long ref_total = r.orders[i].total();
      // A hypothesis n-gram only counts when the reference has n-grams of that order.
      stats.push_back(r.orders[i].empty() ? 0.0 : double(h[i].total()));
      stats.push_back(double(ref_total));
      stats.push_back(double(matched(h[i], r.orders[i])));
    }
    const double f = f_score(stats, StatsPrecision::Exact);
    if (f > best_f) {
      best_f = f;
      best = std::move(stats);
    }
  }
  return best;
}

double Chrf::f_score(std::span<const double> stats, StatsPrecision precision) const {
  const double eps = 1e-16;
  const double factor = double(o_.beta) * double(o_.beta);
  const size_t order = size_t(o_.char_order + o_.word_order);
  double score = 0.0, avg_prec = 0.0, avg_rec = 0.0;
  int effective_order = 0;
  // From float32 statistics numpy divides in float32; the rest of the arithmetic is in
  // float64 (NumPy 1.x promotes float32 scalars with Python numbers to float64).
  auto divide = [&](double a, double b) {
    return precision == StatsPrecision::Float32 ? double(float(a) / float(b)) : a / b;
  };
  for (size_t i = 0; i < order; ++i) {
    const double n_hyp = stats[3 * i], n_ref = stats[3 * i + 1], n_match = stats[3 * i + 2];
    const double prec = n_hyp > 0 ? divide(n_match, n_hyp) : eps;
    const double rec = n_ref > 0 ? divide(n_match, n_ref) : eps;
    const double denom = factor * prec + rec;
    score += denom > 0 ? (1 + factor) * prec * rec / denom : eps;
    if (n_hyp > 0 && n_ref > 0) {
      avg_prec += prec;
      avg_rec += rec;
      ++effective_order;
    }
  }
  if (o_.eps_smoothing) return 100 * score / double(order);
  if (effective_order == 0) {
    avg_prec = avg_rec = 0.0;
  } else {
    avg_prec /= effective_order;
    avg_rec /= effective_order;
  }
  if (avg_prec + avg_rec != 0.0) {
    score = (1 + factor) * avg_prec * avg_rec;
    score /= (factor * avg_prec) + avg_rec;
    return 100 * score;
  }
  return 0.0;
}

Score Chrf::score_from_stats(std::span<const double> stats, StatsPrecision precision) const {
  Score s;
  s.name = name();
  s.score = f_score(stats, precision);
  return s;
}

std::vector<std::pair<std::string, std::pair<std::string, std::string>>> Chrf::signature_fields() const {
  return {{"case", {"c", o_.lowercase ? "lc" : "mixed"}},
          {"eff", {"e", o_.eps_smoothing ? "no" : "yes"}},
          {"nc", {"nc", std::to_string(o_.char_order)}},
          {"nw", {"nw", std::to_string(o_.word_order)}},
          {"space", {"s", o_.whitespace ? "yes" : "no"}}};
}

}  // namespace pivotmt::metrics
