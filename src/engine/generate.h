// Batched generation over the CPU model: requests of different lengths prefill together,
// then decode step by step as one batch; a finished request's slot is given to the next
// waiting one (continuous batching). Stops on any EOS id, a stop string, or the token
// budget; reports why and how long each phase took.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "engine/sampling.h"
#include "models/llama_model.h"
#include "tokenizer/tokenizer.h"

namespace pivotmt {

struct GenerationRequest {
  std::vector<TokenId> prompt;
  size_t max_new_tokens = 600;
  SamplingParams sampling;
  std::vector<TokenId> eos_ids;
  bool ignore_eos = false;
  std::vector<std::string> stop_strings;  // needs a tokenizer
};

enum class FinishReason { Eos, StopString, Length };
const char* finish_reason_name(FinishReason r);

// When prompt + max_new_tokens exceed the model's max_position_embeddings.
enum class ContextPolicy { Error, TruncateLeft, Allow };

struct GenerationResult {
  std::vector<TokenId> tokens;  // generated tokens (EOS included when it ended the text)
  std::string text;             // decoded without special tokens, cut before a stop string
  FinishReason finish = FinishReason::Length;
  size_t prompt_tokens = 0;
  bool context_overflow = false;  // ran past max_position_embeddings (policy allow)
  size_t truncated_tokens = 0;    // dropped from the left (policy truncate-left)
  double prefill_seconds = 0, decode_seconds = 0;
};

struct EngineOptions {
  ContextPolicy context = ContextPolicy::Allow;
  size_t max_batch = 32;             // sequences decoding together
  size_t max_prefill_tokens = 4096;  // tokens per prefill forward
};

class Engine {
 public:
  Engine(LlamaModel& model, const Tokenizer* tokenizer = nullptr) : model_(model), tokenizer_(tokenizer) {}
  // on_token(request index, token): streaming hook, called as tokens are chosen.
  std::vector<GenerationResult> generate(const std::vector<GenerationRequest>& requests, const EngineOptions& options,
                                         const std::function<void(size_t, TokenId)>& on_token = {});

 private:
  LlamaModel& model_;
  const Tokenizer* tokenizer_;
};

}  // namespace pivotmt
