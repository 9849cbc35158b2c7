// Metric speed on the WMT17 en-de system in ../shared/fixtures/metrics/wmt17 (3004
// segments): each metric's full corpus score single-threaded, and 1000 bootstrap
// resamples of all four. Targets (issue): all four metrics < 1 s, bootstrap < 3 s.
#include <chrono>
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>

#include "metrics/corpus.h"
#include "metrics/scoring.h"
#include "metrics/significance.h"

using namespace pivotmt::metrics;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : "../shared/fixtures/metrics/wmt17";
  if (!std::filesystem::exists(dir + "/ref.txt")) {
    fmt::print(stderr, "usage: bench_metrics [WMT17_DIR] (default ../shared/fixtures/metrics/wmt17)\n");
    return 2;
  }
  const auto refs = read_text_lines(dir + "/ref.txt");
  const auto hyps = read_text_lines(dir + "/uedin-nmt.4722.en-de.txt");
  ScoringOptions options;
  double total = 0;
  std::vector<std::pair<std::unique_ptr<Metric>, SegmentStats>> all;
  fmt::print("{:<10} {:>10} {:>12}\n", "metric", "score", "seconds");
  for (const std::string name : {"bleu", "chrf", "chrf++", "ter"}) {
    auto metric = make_metric(name, options);
    const auto t0 = Clock::now();
    // One thread: the target is single-threaded.
    const PreparedReferences prepared(*metric, std::vector<std::vector<std::u32string>>{refs});
    SegmentStats stats(hyps.size());
    for (size_t i = 0; i < hyps.size(); ++i) stats[i] = metric->segment_stats(hyps[i], prepared.at(i));
    const double score = corpus_score(*metric, stats).score;
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    total += s;
    fmt::print("{:<10} {:>10.4f} {:>12.3f}\n", name, score, s);
    all.emplace_back(std::move(metric), std::move(stats));
  }
  fmt::print("{:<10} {:>10} {:>12.3f}  (target < 1.0 s: {})\n", "all four", "", total, total < 1.0 ? "met" : "MISSED");
  const auto t0 = Clock::now();
  for (const auto& [metric, stats] : all) bootstrap_interval(*metric, stats, 1000, kDefaultSeed, true);
  const double bs = std::chrono::duration<double>(Clock::now() - t0).count();
  fmt::print("{:<10} {:>10} {:>12.3f}  (1000 resamples x 4 metrics, target < 3.0 s: {})\n", "bootstrap", "", bs,
             bs < 3.0 ? "met" : "MISSED");
  return 0;
}
