#include "metrics/metric.h"

#include <fmt/format.h>

namespace pivotmt::metrics {

std::string format_signature(const Metric& metric, const SignatureContext& context, bool short_form) {
  std::vector<std::string> pairs;
  auto add = [&](const std::string& name, const std::string& abbr, const std::string& value) {
    pairs.push_back(fmt::format("{}:{}", short_form ? abbr : name, value));
  };
  add("nrefs", "#", context.nrefs);
  if (context.bootstrap) add("bs", "bs", std::to_string(*context.bootstrap));
  if (context.ar_trials) add("ar", "ar", std::to_string(*context.ar_trials));
  if (context.seed) add("seed", "rs", *context.seed);
  for (const auto& [name, rest] : metric.signature_fields()) add(name, rest.first, rest.second);
  add("version", "v", kSacrebleuVersion);
  return fmt::format("{}", fmt::join(pairs, "|"));
}

std::string format_score(const Score& score, const std::string& signature, int width) {
  std::string sc = fmt::format("{:.{}f}", score.score, width);
  if (score.mean && score.ci) sc += fmt::format(" (μ = {:.{}f} ± {:.{}f})", *score.mean, width, *score.ci, width);
  std::string full = signature.empty() ? score.name : score.name + "|" + signature;
  full += " = " + sc;
  if (!score.verbose.empty()) full += " " + score.verbose;
  return full;
}

}  // namespace pivotmt::metrics
