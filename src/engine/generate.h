// Batched generation over the model, on whichever device it runs (the engine only sees
// LlamaModel and opaque KV caches): requests of different lengths prefill together,
// then decode step by step as one batch; a finished request's slot is given to the next
// waiting one (continuous batching). A forward pass holds at most max_prefill_tokens rows:
// every running sequence's decode row plus prompt chunks — a prompt longer than what is
// left is computed over several passes, and new prompts do not stall the sequences
// decoding (their rows ride along). Stops on any EOS id, a stop string, or the token
// budget; reports why and how long each phase took.
//
// Prefix reuse: a request whose prompt starts like another's copies that one's keys and
// values for the common prefix instead of recomputing them (the prompts of one test row
// at k = 3, 5, 10 share the system prompt and their first examples). Donors are the
// running sequences, recently finished ones (their prompt part), and requests admitted
// earlier in the same round; a request waits one extra prefill pass for a same-round donor
// only when that saves at least `min_shared_prefix` tokens more than a donor already there.
// Requests are considered in the order given, so a caller that puts the longest prompt of a
// family first (k = 10 before k = 5) lets all the others copy from it.
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
  size_t reused_prompt_tokens = 0;  // prompt positions copied from another sequence's cache
  size_t preemptions = 0;           // times its KV cache was released to let others grow
  double prefill_seconds = 0, decode_seconds = 0;  // wall time of the passes it took part in
  // Its share of those passes (a pass's time split by the tokens each sequence fed it): the
  // shares of all requests add up to the call's compute time, however they were batched.
  double compute_seconds = 0;
};

struct EngineOptions {
  ContextPolicy context = ContextPolicy::Allow;
  size_t max_batch = 32;             // sequences decoding together
  size_t max_prefill_tokens = 4096;  // rows per forward pass: decode rows and prompt chunks
  // Keys and values of the running sequences (each reserved for prompt + max_new_tokens)
  // and the kept donors stay under this; 0: the device's default (CPU: half of what is
  // available when generate starts, less the weights; GPU: the KV block pool).
  // The device may hold less than admission counted (a GPU pool is what it is): then a
  // request waits, and a running sequence that cannot grow is preempted and recomputed.
  // A request that alone exceeds it still runs, by itself.
  size_t max_kv_bytes = 0;
  bool reuse_prefixes = true;
  size_t min_shared_prefix = 32;  // tokens a same-round donor must save to be waited for
};

// Hooks into a generate() call. on_token(request index, token): streaming, called as
// tokens are chosen. on_finished(request indices, results): after each model step, the
// requests that finished in it; their results (text included) are complete.
struct GenerationHooks {
  std::function<void(size_t, TokenId)> on_token;
  std::function<void(const std::vector<size_t>&, const std::vector<GenerationResult>&)> on_finished;
};

class Engine {
 public:
  Engine(LlamaModel& model, const Tokenizer* tokenizer = nullptr) : model_(model), tokenizer_(tokenizer) {}
  std::vector<GenerationResult> generate(const std::vector<GenerationRequest>& requests, const EngineOptions& options,
                                         const GenerationHooks& hooks = {});

 private:
  LlamaModel& model_;
  const Tokenizer* tokenizer_;
};

}  // namespace pivotmt
