#include "metrics/corpus.h"

#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "core/error.h"

namespace pivotmt::metrics {

PreparedReferences::PreparedReferences(const Metric& metric,
                                       const std::vector<std::vector<std::optional<std::u32string>>>& ref_streams) {
  if (ref_streams.empty()) throw Error("no reference stream given");
  const size_t n = ref_streams[0].size();
  for (size_t k = 1; k < ref_streams.size(); ++k)
    if (ref_streams[k].size() != n)
      throw Error(fmt::format("reference stream {} has {} segments, stream 1 has {}", k + 1, ref_streams[k].size(), n));
  std::set<size_t> counts;
  infos_.resize(n);
  for (size_t i = 0; i < n; ++i) {
    std::vector<std::u32string> refs;
    for (const auto& stream : ref_streams)
      if (stream[i]) refs.push_back(*stream[i]);
    if (refs.empty()) throw Error(fmt::format("segment {} has no reference", i + 1));
    counts.insert(refs.size());
    infos_[i] = metric.prepare_references(refs);
  }
  nrefs_ = counts.size() == 1 ? std::to_string(*counts.begin()) : counts.empty() ? std::to_string(ref_streams.size()) : "var";
}

namespace {
std::vector<std::vector<std::optional<std::u32string>>> all_present(
    const std::vector<std::vector<std::u32string>>& streams) {
  std::vector<std::vector<std::optional<std::u32string>>> out;
  for (const auto& s : streams) out.emplace_back(s.begin(), s.end());
  return out;
}
}  // namespace

PreparedReferences::PreparedReferences(const Metric& metric, const std::vector<std::vector<std::u32string>>& ref_streams)
    : PreparedReferences(metric, all_present(ref_streams)) {}

SegmentStats system_statistics(const Metric& metric, const PreparedReferences& refs,
                               const std::vector<std::u32string>& hyps) {
  if (hyps.size() != refs.size())
    throw Error(fmt::format("the system has {} segments but the references have {}", hyps.size(), refs.size()));
  SegmentStats stats(hyps.size());
  // Segments are independent: spread them over the cores (TER dominates the cost).
  const unsigned threads = std::max(1u, std::min<unsigned>(std::thread::hardware_concurrency(), 16));
  std::atomic<size_t> next{0};
  std::exception_ptr failure;
  std::mutex failure_mutex;
  auto work = [&] {
    try {
      for (size_t i = next++; i < hyps.size(); i = next++) stats[i] = metric.segment_stats(hyps[i], refs.at(i));
    } catch (...) {
      std::lock_guard lock(failure_mutex);
      if (!failure) failure = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads && t < hyps.size(); ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (failure) std::rethrow_exception(failure);
  return stats;
}

std::vector<double> sum_statistics(const SegmentStats& stats) {
  if (stats.empty()) return {};
  std::vector<double> total(stats[0].size(), 0.0);
  for (const auto& s : stats)
    for (size_t k = 0; k < total.size(); ++k) total[k] += s[k];
  return total;
}

Score corpus_score(const Metric& metric, const SegmentStats& stats) {
  if (stats.empty()) throw Error("cannot score an empty corpus");
  return metric.score_from_stats(sum_statistics(stats), StatsPrecision::Exact);
}

}  // namespace pivotmt::metrics
