#include "metrics/bleu.h"

#include <cmath>

#include <fmt/format.h>

#include "core/error.h"
#include "metrics/ngrams.h"
#include "text/unicode.h"

namespace pivotmt::metrics {
namespace {

struct BleuReferences : ReferenceInfo {
  WordIds words;
  NgramCounts ngrams;  // all orders; per n-gram the maximum count over the references
  std::vector<long> lengths;
};

// sacrebleu's my_log: log(0) is a large negative number instead of -inf.
double my_log(double x) { return x == 0.0 ? -9999999999.0 : std::log(x); }

// Closest reference length; on a tie the shorter reference wins.
long closest_ref_length(long hyp_len, const std::vector<long>& ref_lens) {
  long best_diff = -1, best_len = -1;
  for (long r : ref_lens) {
    const long diff = std::labs(hyp_len - r);
    if (best_diff == -1 || diff < best_diff) {
      best_diff = diff;
      best_len = r;
    } else if (diff == best_diff && r < best_len) {
      best_len = r;
    }
  }
  return best_len;
}
}  // namespace

Bleu::Bleu(BleuOptions options) : o_(std::move(options)) {
  if (o_.smooth_method != "exp" && o_.smooth_method != "floor" && o_.smooth_method != "add-k" &&
      o_.smooth_method != "none")
    throw Error(fmt::format("unknown BLEU smoothing '{}' (expected exp, floor, add-k or none)", o_.smooth_method));
  if (o_.max_ngram_order < 1 || o_.max_ngram_order > 16)
    throw Error(fmt::format("BLEU max n-gram order {} out of range 1..16", o_.max_ngram_order));
  tokenizer_ = make_bleu_tokenizer(o_.tokenize, o_.spm_model);
}

std::u32string Bleu::preprocess(const std::u32string& sentence) const {
  const std::u32string s = o_.lowercase ? py_lower(sentence) : sentence;
  return (*tokenizer_)(py_rstrip(s));
}

std::unique_ptr<ReferenceInfo> Bleu::prepare_references(const std::vector<std::u32string>& refs) const {
  auto info = std::make_unique<BleuReferences>();
  for (const auto& ref : refs) {
    const std::u32string ids = info->words.ids(py_split(preprocess(ref)));
    info->lengths.push_back(static_cast<long>(ids.size()));
    for (int n = 1; n <= o_.max_ngram_order; ++n)
      for (const auto& [g, c] : count_ngrams(ids, size_t(n))) {
        int& best = info->ngrams[g];
        best = std::max(best, c);
      }
  }
  return info;
}

std::vector<double> Bleu::segment_stats(const std::u32string& hyp, const ReferenceInfo& ref_info) const {
  const auto& refs = static_cast<const BleuReferences&>(ref_info);
  const std::u32string ids = refs.words.lookup(py_split(preprocess(hyp)));
  const long hyp_len = static_cast<long>(ids.size());
  std::vector<double> stats(stats_size(), 0.0);
  stats[0] = double(hyp_len);
  stats[1] = double(closest_ref_length(hyp_len, refs.lengths));
  const size_t N = size_t(o_.max_ngram_order);
  for (size_t n = 1; n <= N; ++n) {
    const NgramCounts h = count_ngrams(ids, n);
    stats[2 + n - 1] = double(matched(h, refs.ngrams));
    stats[2 + N + n - 1] = double(total(h));
  }
  return stats;
}

Score Bleu::score_from_stats(std::span<const double> stats, StatsPrecision) const {
  // Counts are integers, exact in float32 up to 2^24, so precision does not matter here.
  const size_t N = size_t(o_.max_ngram_order);
  std::vector<double> correct(stats.begin() + 2, stats.begin() + 2 + long(N));
  std::vector<double> totals(stats.begin() + 2 + long(N), stats.begin() + 2 + 2 * long(N));
  const double sys_len = std::trunc(stats[0]), ref_len = std::trunc(stats[1]);
  double smooth_value = o_.smooth_value.value_or(o_.smooth_method == "floor" ? 0.1 : 1.0);

  Score s;
  s.name = "BLEU";
  s.sys_len = sys_len;
  s.ref_len = ref_len;
  s.bp = sys_len < ref_len ? (sys_len > 0 ? std::exp(1.0 - ref_len / sys_len) : 0.0) : 1.0;
  s.precisions.assign(N, 0.0);

  bool any_correct = false;
  for (double c : correct) any_correct = any_correct || c != 0.0;
  if (any_correct) {
    double smooth_mteval = 1.0;
    size_t eff_order = N;
    for (size_t n = 1; n <= N; ++n) {
      if (o_.smooth_method == "add-k" && n > 1) {
        correct[n - 1] += smooth_value;
        totals[n - 1] += smooth_value;
      }
      if (totals[n - 1] == 0) break;
      if (o_.effective_order) eff_order = n;
      if (correct[n - 1] == 0) {
        if (o_.smooth_method == "exp") {
          smooth_mteval *= 2;
          s.precisions[n - 1] = 100.0 / (smooth_mteval * totals[n - 1]);
        } else if (o_.smooth_method == "floor") {
          s.precisions[n - 1] = 100.0 * smooth_value / totals[n - 1];
        }
      } else {
        s.precisions[n - 1] = 100.0 * correct[n - 1] / totals[n - 1];
      }
    }
    double sum = 0.0;
    for (size_t i = 0; i < eff_order; ++i) sum += my_log(s.precisions[i]);
    s.score = s.bp * std::exp(sum / double(eff_order));
  }
  s.counts = correct;
  s.totals = totals;
  std::string prec;
  for (size_t i = 0; i < N; ++i) prec += fmt::format("{}{:.1f}", i ? "/" : "", s.precisions[i]);
  const double ratio = ref_len != 0 ? sys_len / ref_len : 0.0;
  s.verbose = fmt::format("{} (BP = {:.3f} ratio = {:.3f} hyp_len = {} ref_len = {})", prec, s.bp, ratio,
                          static_cast<long>(sys_len), static_cast<long>(ref_len));
  return s;
}

std::vector<std::pair<std::string, std::pair<std::string, std::string>>> Bleu::signature_fields() const {
  std::string smooth = o_.smooth_method;
  if (o_.smooth_method == "floor" || o_.smooth_method == "add-k")
    smooth += fmt::format("[{:.2f}]", o_.smooth_value.value_or(o_.smooth_method == "floor" ? 0.1 : 1.0));
  return {{"case", {"c", o_.lowercase ? "lc" : "mixed"}},
          {"eff", {"e", o_.effective_order ? "yes" : "no"}},
          {"tok", {"tok", tokenizer_->signature()}},
          {"smooth", {"s", smooth}}};
}

}  // namespace pivotmt::metrics
