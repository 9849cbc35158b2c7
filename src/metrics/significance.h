// Confidence intervals and paired significance tests as sacrebleu 2.6 computes them:
// bootstrap resampling (default 1000 resamples) with numpy's default_rng(12345),
// statistics summed in float32; paired bootstrap (Moses' bootstrap-hypothesis-difference
// test) and paired approximate randomisation (default 10000 trials), p = (c + 1)/(n + 1).
#pragma once
#include <cstdint>
#include <optional>

#include "metrics/corpus.h"

namespace pivotmt::metrics {

inline constexpr uint64_t kDefaultSeed = 12345;

struct Interval {
  double mean = 0.0;  // of the resampled scores
  double ci = 0.0;    // half-width of the 95% interval (2.5th to 97.5th percentile)
};

// `exact_mean`: Python's statistics.mean (corpus --confidence) rather than numpy's
// pairwise mean (paired tests).
Interval bootstrap_interval(const Metric& metric, const SegmentStats& stats, int n_samples, uint64_t seed,
                            bool exact_mean);

struct PairedResult {
  double score = 0.0;
  std::optional<double> p_value;  // none for the baseline
  std::optional<double> mean, ci;
};

// Each system (not the baseline) against the baseline; results[0] is the baseline's own
// (score and, for the bootstrap test, its interval).
std::vector<PairedResult> paired_bootstrap(const Metric& metric, const std::vector<SegmentStats>& systems,
                                           int n_samples, uint64_t seed);
std::vector<PairedResult> paired_randomization(const Metric& metric, const std::vector<SegmentStats>& systems,
                                               int n_trials, uint64_t seed);

// numpy's pairwise summation (np.add.reduce on a contiguous float64 array), for means
// that match numpy to the last bit.
double numpy_sum(const double* x, size_t n);

}  // namespace pivotmt::metrics
