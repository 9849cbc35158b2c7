#include "engine/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace pivotmt {

SamplerRng::SamplerRng(uint64_t seed) {
  uint64_t x = seed;
  for (auto& s : s_) {  // splitmix64 to fill the state
    x += 0x9e3779b97f4a7c15ull;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    s = z ^ (z >> 31);
  }
}

uint64_t SamplerRng::next() {
  auto rotl = [](uint64_t v, int k) { return (v << k) | (v >> (64 - k)); };
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double SamplerRng::uniform() { return double(next() >> 11) * 0x1.0p-53; }

TokenId argmax(std::span<const float> logits) {
  if (logits.empty()) throw Error("argmax of an empty row");
  size_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[best]) best = i;
  return TokenId(best);
}

std::vector<float> sampling_distribution(std::span<const float> logits, const SamplingParams& p) {
  const size_t n = logits.size();
  if (n == 0) throw Error("sampling from an empty row");
  if (p.temperature <= 0) throw Error("temperature must be positive (use greedy decoding instead)");
  std::vector<float> scores(logits.begin(), logits.end());
  for (auto& s : scores) s /= p.temperature;
  const float removed = -INFINITY;
  if (p.top_k > 0 && size_t(p.top_k) < n) {
    std::vector<float> sorted = scores;
    std::nth_element(sorted.begin(), sorted.begin() + (p.top_k - 1), sorted.end(), std::greater<float>());
    const float kth = sorted[size_t(p.top_k - 1)];
    for (auto& s : scores)
      if (s < kth) s = removed;
  }
  if (p.top_p < 1.0f) {
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] < scores[b]; });
    const float max_score = scores[order.back()];
    double total = 0;
    std::vector<double> probs(n);
    for (size_t i = 0; i < n; ++i) total += (probs[i] = std::exp(double(scores[i] - max_score)));
    double cumulative = 0;
    for (size_t r = 0; r + 1 < n; ++r) {  // the highest token always stays
      cumulative += probs[order[r]] / total;
      if (cumulative <= 1.0 - double(p.top_p)) scores[order[r]] = removed;
    }
  }
  const float max_score = *std::max_element(scores.begin(), scores.end());
  std::vector<float> dist(n);
  double total = 0;
  for (size_t i = 0; i < n; ++i) total += (dist[i] = scores[i] == removed ? 0.0f : std::exp(scores[i] - max_score));
  for (auto& d : dist) d = float(d / total);
  return dist;
}

TokenId sample_token(std::span<const float> logits, const SamplingParams& p, SamplerRng& rng) {
  if (p.greedy) return argmax(logits);  // greedy draws nothing
  return sample_token_at(logits, p, rng.uniform());
}

TokenId sample_token_at(std::span<const float> logits, const SamplingParams& p, double u) {
  if (p.greedy) return argmax(logits);
  const auto dist = sampling_distribution(logits, p);
  double cumulative = 0;
  TokenId last = 0;
  for (size_t i = 0; i < dist.size(); ++i) {
    if (dist[i] <= 0) continue;
    cumulative += dist[i];
    last = TokenId(i);
    if (u < cumulative) return TokenId(i);
  }
  return last;  // rounding left u above the total: the last kept token
}

}  // namespace pivotmt
