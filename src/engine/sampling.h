// Next-token selection as Hugging Face orders its logits processors: temperature, then
// top-k (every token scoring at least the k-th best survives, ties included), then top-p
// (drop the lowest tokens whose cumulative probability stays <= 1 - p, keeping at least
// one), then a draw from the softmax. Greedy is argmax (first maximum on ties).
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "engine/sampling_params.h"
#include "tokenizer/bpe.h"

namespace pivotmt {

// A small, portable generator (xoshiro256**), seeded per request so that what a request
// draws never depends on the other requests it is batched with.
class SamplerRng {
 public:
  explicit SamplerRng(uint64_t seed);
  uint64_t next();
  double uniform();  // [0, 1)

 private:
  uint64_t s_[4];
};

TokenId argmax(std::span<const float> logits);
// The probabilities after temperature / top-k / top-p (zeros for removed tokens).
std::vector<float> sampling_distribution(std::span<const float> logits, const SamplingParams& p);
TokenId sample_token(std::span<const float> logits, const SamplingParams& p, SamplerRng& rng);
// The token the uniform draw u ∈ [0, 1) picks from sampling_distribution(logits, p): the
// first kept token, in index order, whose cumulative probability exceeds u (argmax when
// greedy). sample_token is this with u from the request's generator.
TokenId sample_token_at(std::span<const float> logits, const SamplingParams& p, double u);

}  // namespace pivotmt
