// The metric interface shared by BLEU, chrF(++) and TER, shaped like sacrebleu 2.6's:
// references are prepared once per segment, each hypothesis yields a vector of
// sufficient statistics, and corpus scores (and every bootstrap resample) are computed
// from summed statistics.
#pragma once
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace pivotmt::metrics {

// The sacrebleu release whose algorithms, outputs and signatures pivotmt reproduces.
inline constexpr const char* kSacrebleuVersion = "2.6.0";

struct Score {
  std::string name;      // "BLEU", "chrF2", "chrF2++", "TER"
  double score = 0.0;
  std::string verbose;   // BLEU's "p1/p2/p3/p4 (BP = ...)" tail; empty for others
  // BLEU detail (empty for other metrics).
  std::vector<double> counts, totals, precisions;
  double bp = 0.0, sys_len = 0.0, ref_len = 0.0;
  // TER detail.
  double num_edits = 0.0, ref_length = 0.0;
  // Bootstrap estimate, when requested.
  std::optional<double> mean, ci;
};

// Per-segment information extracted from that segment's (non-empty) references.
struct ReferenceInfo {
  virtual ~ReferenceInfo() = default;
};

// How summed statistics are held when scores are computed from them: exact (the plain
// corpus score, the approximate randomisation test) or as float32, the way sacrebleu's
// bootstrap stores them (numpy float32 arrays) — which changes chrF's and TER's
// divisions in the last bits.
enum class StatsPrecision { Exact, Float32 };

class Metric {
 public:
  virtual ~Metric() = default;
  virtual std::string name() const = 0;
  virtual size_t stats_size() const = 0;
  // `refs`: the segment's references, raw text, at least one, none empty.
  virtual std::unique_ptr<ReferenceInfo> prepare_references(const std::vector<std::u32string>& refs) const = 0;
  virtual std::vector<double> segment_stats(const std::u32string& hyp, const ReferenceInfo& refs) const = 0;
  virtual Score score_from_stats(std::span<const double> stats, StatsPrecision precision) const = 0;
  // The metric's own signature fields, in sacrebleu's order: (name, short name, value).
  virtual std::vector<std::pair<std::string, std::pair<std::string, std::string>>> signature_fields() const = 0;
};

// Signature as sacrebleu formats it: nrefs, bs/ar, seed, the metric's fields, version.
struct SignatureContext {
  std::string nrefs;              // "1", "2" or "var"
  std::optional<int> bootstrap;   // bs:N
  std::optional<int> ar_trials;   // ar:N
  std::optional<std::string> seed;
};
std::string format_signature(const Metric& metric, const SignatureContext& context, bool short_form);

// "BLEU|sig = 26.6510 (μ = 26.6383 ± 0.6516) 58.8/..." as sacrebleu's CLI prints it.
std::string format_score(const Score& score, const std::string& signature, int width);

}  // namespace pivotmt::metrics
