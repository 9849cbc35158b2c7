#include "metrics/significance.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "metrics/numpy_random.h"

namespace pivotmt::metrics {
namespace {

double pairwise(const double* a, size_t n) {
  if (n < 8) {
    double res = 0.0;
    for (size_t i = 0; i < n; ++i) res += a[i];
    return res;
  }
  if (n <= 128) {
    double r[8];
    for (size_t j = 0; j < 8; ++j) r[j] = a[j];
    size_t i = 8;
    for (; i < n - (n % 8); i += 8)
      for (size_t j = 0; j < 8; ++j) r[j] += a[i + j];
    double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; ++i) res += a[i];
    return res;
  }
  size_t n2 = n / 2;
  n2 -= n2 % 8;
  return pairwise(a, n2) + pairwise(a + n2, n - n2);
}

// Shewchuk's exact summation (as Python's math.fsum): `partials` is a non-overlapping
// expansion of the exact sum.
void fsum_add(std::vector<double>& partials, double x) {
  size_t i = 0;
  for (double y : partials) {
    if (std::fabs(x) < std::fabs(y)) std::swap(x, y);
    const double hi = x + y;
    const double lo = y - (hi - x);
    if (lo != 0.0) partials[i++] = lo;
    x = hi;
  }
  partials.resize(i);
  partials.push_back(x);
}

double fsum_value(const std::vector<double>& partials) {
  double total = 0.0;
  for (auto it = partials.rbegin(); it != partials.rend(); ++it) total += *it;
  return total;
}

// The correctly rounded mean, as Python's statistics.mean (exact rational arithmetic):
// an exact sum, a first quotient, then one correction with the exact residual.
double exact_mean(const std::vector<double>& x) {
  std::vector<double> partials;
  for (double v : x) fsum_add(partials, v);
  const double n = double(x.size());
  const double q = fsum_value(partials) / n;
  const double prod = q * n;
  const double prod_err = std::fma(q, n, -prod);  // q * n == prod + prod_err exactly
  fsum_add(partials, -prod);
  fsum_add(partials, -prod_err);
  return q + fsum_value(partials) / n;
}

// sacrebleu's estimate_ci: sort; the 95% interval drops n // 40 scores at each end.
Interval estimate(std::vector<double> scores, bool use_exact_mean) {
  Interval iv;
  iv.mean = use_exact_mean ? exact_mean(scores) : numpy_sum(scores.data(), scores.size()) / double(scores.size());
  std::sort(scores.begin(), scores.end());
  const size_t n = scores.size(), lower = n / 40, upper = n - lower - 1;
  iv.ci = 0.5 * (scores[upper] - scores[lower]);
  return iv;
}

// Scores of every resample: rows of `idx` select segments; statistics are stored and
// summed as float32, in segment order, as numpy does for stats_np[idxs].sum(0).
std::vector<double> resampled_scores(const Metric& metric, const SegmentStats& stats, const std::vector<int64_t>& idx,
                                     int n_samples) {
  const size_t N = stats.size(), K = metric.stats_size();
  std::vector<float> f32(N * K);
  for (size_t i = 0; i < N; ++i)
    for (size_t k = 0; k < K; ++k) f32[i * K + k] = static_cast<float>(stats[i][k]);
  std::vector<double> scores(static_cast<size_t>(n_samples));
  std::vector<float> acc(K);
  std::vector<double> as_double(K);
  for (size_t s = 0; s < size_t(n_samples); ++s) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (size_t i = 0; i < N; ++i) {
      const float* row = &f32[size_t(idx[s * N + i]) * K];
      for (size_t k = 0; k < K; ++k) acc[k] += row[k];
    }
    for (size_t k = 0; k < K; ++k) as_double[k] = acc[k];
    scores[s] = metric.score_from_stats(as_double, StatsPrecision::Float32).score;
  }
  return scores;
}

void check_systems(const std::vector<SegmentStats>& systems) {
  if (systems.size() < 2) throw Error("a paired test needs a baseline and at least one system");
  for (const auto& s : systems)
    if (s.size() != systems[0].size() || s.empty())
      throw Error("paired test: every system must have the same, non-zero number of segments");
}
}  // namespace

double numpy_sum(const double* x, size_t n) {
  // np.add.reduce starts from the first element and adds the pairwise sum of the rest.
  if (n == 0) return 0.0;
  return x[0] + pairwise(x + 1, n - 1);
}

Interval bootstrap_interval(const Metric& metric, const SegmentStats& stats, int n_samples, uint64_t seed,
                            bool use_exact_mean) {
  if (n_samples < 1) throw Error("bootstrap needs at least one resample");
  if (stats.empty()) throw Error("cannot resample an empty corpus");
  Pcg64 rng(seed);
  const auto idx = rng.choice(int64_t(stats.size()), size_t(n_samples) * stats.size());
  return estimate(resampled_scores(metric, stats, idx, n_samples), use_exact_mean);
}

std::vector<PairedResult> paired_bootstrap(const Metric& metric, const std::vector<SegmentStats>& systems,
                                           int n_samples, uint64_t seed) {
  check_systems(systems);
  const size_t N = systems[0].size();
  std::vector<PairedResult> results;
  // Every test draws the same indices: each one seeds a fresh generator.
  const auto idx = Pcg64(seed).choice(int64_t(N), size_t(n_samples) * N);
  const double baseline_score = corpus_score(metric, systems[0]).score;
  const auto baseline_scores = resampled_scores(metric, systems[0], idx, n_samples);
  const Interval bl = estimate(baseline_scores, false);
  results.push_back({baseline_score, std::nullopt, bl.mean, bl.ci});
  for (size_t s = 1; s < systems.size(); ++s) {
    const double score = corpus_score(metric, systems[s]).score;
    const double diff = std::fabs(baseline_score - score);
    const auto sys_scores = resampled_scores(metric, systems[s], idx, n_samples);
    const Interval iv = estimate(sys_scores, false);
    std::vector<double> sample_diffs(sys_scores.size());
    for (size_t i = 0; i < sys_scores.size(); ++i) sample_diffs[i] = std::fabs(sys_scores[i] - baseline_scores[i]);
    const double mean_diff = numpy_sum(sample_diffs.data(), sample_diffs.size()) / double(sample_diffs.size());
    size_t c = 0;
    for (double d : sample_diffs) c += (d - mean_diff) > diff;
    results.push_back({score, double(c + 1) / double(n_samples + 1), iv.mean, iv.ci});
  }
  return results;
}

std::vector<PairedResult> paired_randomization(const Metric& metric, const std::vector<SegmentStats>& systems,
                                               int n_trials, uint64_t seed) {
  check_systems(systems);
  const size_t N = systems[0].size(), K = metric.stats_size();
  std::vector<PairedResult> results;
  const double baseline_score = corpus_score(metric, systems[0]).score;
  results.push_back({baseline_score, std::nullopt, std::nullopt, std::nullopt});
  for (size_t s = 1; s < systems.size(); ++s) {
    const double score = corpus_score(metric, systems[s]).score;
    const double diff = std::fabs(baseline_score - score);
    const auto select = Pcg64(seed).random_bools(size_t(n_trials) * N);
    std::vector<double> a(K), b(K);
    size_t c = 0;
    for (size_t t = 0; t < size_t(n_trials); ++t) {
      std::fill(a.begin(), a.end(), 0.0);
      std::fill(b.begin(), b.end(), 0.0);
      for (size_t i = 0; i < N; ++i) {
        // A true bit keeps the pair as is; a false bit swaps the two systems' segment.
        const bool keep = select[t * N + i] != 0;
        const auto& x = keep ? systems[0][i] : systems[s][i];
        const auto& y = keep ? systems[s][i] : systems[0][i];
        for (size_t k = 0; k < K; ++k) {
          a[k] += x[k];
          b[k] += y[k];
        }
      }
      const double sa = metric.score_from_stats(a, StatsPrecision::Exact).score;
      const double sb = metric.score_from_stats(b, StatsPrecision::Exact).score;
      c += std::fabs(sa - sb) > diff;
    }
    results.push_back({score, double(c + 1) / double(n_trials + 1), std::nullopt, std::nullopt});
  }
  return results;
}

}  // namespace pivotmt::metrics
