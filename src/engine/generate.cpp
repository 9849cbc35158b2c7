#include "engine/generate.h"

#include <chrono>
#include <deque>

#include <fmt/format.h>

#include "core/error.h"

namespace pivotmt {
namespace {
using Clock = std::chrono::steady_clock;

struct Active {
  size_t index;
  KvCache cache;
  SamplerRng rng;
  TokenId pending = -1;  // chosen but not yet fed to the model
  bool done = false;
};
}  // namespace

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::Eos: return "eos";
    case FinishReason::StopString: return "stop";
    case FinishReason::Length: return "length";
  }
  return "?";
}

std::vector<GenerationResult> Engine::generate(const std::vector<GenerationRequest>& requests,
                                               const EngineOptions& options,
                                               const std::function<void(size_t, TokenId)>& on_token) {
  const size_t context = size_t(model_.config().max_position_embeddings);
  std::vector<GenerationResult> results(requests.size());
  std::vector<std::vector<TokenId>> prompts(requests.size());
  std::deque<size_t> waiting;
  for (size_t i = 0; i < requests.size(); ++i) {
    const auto& r = requests[i];
    if (r.prompt.empty()) throw Error(fmt::format("request {}: empty prompt (at least one token, e.g. BOS, is needed)", i + 1));
    if (!r.stop_strings.empty() && !tokenizer_) throw Error("stop strings need a tokenizer");
    prompts[i] = r.prompt;
    results[i].prompt_tokens = r.prompt.size();
    const size_t need = r.prompt.size() + r.max_new_tokens;
    if (need > context) {
      switch (options.context) {
        case ContextPolicy::Error:
          throw Error(fmt::format("request {}: prompt ({} tokens) + max_new_tokens ({}) exceeds the context of {} "
                                  "tokens (context policy 'error'; use 'truncate-left' or 'allow')",
                                  i + 1, r.prompt.size(), r.max_new_tokens, context));
        case ContextPolicy::TruncateLeft: {
          if (r.max_new_tokens >= context) throw Error(fmt::format("request {}: max_new_tokens {} leaves no room for the prompt in {} positions", i + 1, r.max_new_tokens, context));
          const size_t keep = context - r.max_new_tokens;
          const size_t drop = r.prompt.size() - keep;
          // Keep a leading BOS: drop the tokens right after it.
          const size_t start = r.prompt.size() > 1 && model_.config().bos_token_id && r.prompt[0] == *model_.config().bos_token_id ? 1 : 0;
          prompts[i].erase(prompts[i].begin() + long(start), prompts[i].begin() + long(start + drop));
          results[i].truncated_tokens = drop;
          break;
        }
        case ContextPolicy::Allow: results[i].context_overflow = true; break;
      }
    }
    if (r.max_new_tokens == 0) continue;  // nothing to generate
    waiting.push_back(i);
  }

  std::vector<Active> active;
  auto accept = [&](Active& a, TokenId token) {
    const auto& r = requests[a.index];
    auto& res = results[a.index];
    res.tokens.push_back(token);
    if (on_token) on_token(a.index, token);
    bool is_eos = false;
    for (TokenId e : r.eos_ids) is_eos = is_eos || e == token;
    if (is_eos && !r.ignore_eos) {
      res.finish = FinishReason::Eos;
      a.done = true;
    } else if (!r.stop_strings.empty()) {
      const std::string text = tokenizer_->decode(res.tokens, true);
      for (const auto& s : r.stop_strings)
        if (!s.empty() && text.find(s) != std::string::npos) {
          res.finish = FinishReason::StopString;
          a.done = true;
        }
    }
    if (!a.done && res.tokens.size() >= r.max_new_tokens) {
      res.finish = FinishReason::Length;
      a.done = true;
    }
    a.pending = a.done ? -1 : token;
  };
  const size_t V = size_t(model_.config().vocab_size);

  while (!waiting.empty() || !active.empty()) {
    // Admit waiting requests into free slots and prefill them together.
    std::vector<size_t> admitted;
    size_t budget = options.max_prefill_tokens;
    while (!waiting.empty() && active.size() < options.max_batch &&
           (admitted.empty() || prompts[waiting.front()].size() <= budget)) {
      const size_t i = waiting.front();
      waiting.pop_front();
      active.push_back({i, model_.new_cache(), SamplerRng(requests[i].sampling.seed)});
      admitted.push_back(active.size() - 1);
      budget -= std::min(budget, prompts[i].size());
    }
    if (!admitted.empty()) {
      std::vector<LlamaModel::Input> batch;
      for (size_t a : admitted) batch.push_back({&active[a].cache, prompts[active[a].index], false});
      const auto t0 = Clock::now();
      const auto logits = model_.forward(batch);
      const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      for (size_t j = 0; j < admitted.size(); ++j) {
        Active& a = active[admitted[j]];
        results[a.index].prefill_seconds += seconds;
        accept(a, sample_token(std::span(&logits[j * V], V), requests[a.index].sampling, a.rng));
      }
    }
    // One decode step for every sequence with a pending token.
    std::vector<LlamaModel::Input> step;
    std::vector<size_t> stepping;
    for (size_t a = 0; a < active.size(); ++a)
      if (!active[a].done && active[a].pending >= 0) {
        step.push_back({&active[a].cache, {active[a].pending}, false});
        stepping.push_back(a);
      }
    if (!step.empty()) {
      const auto t0 = Clock::now();
      const auto logits = model_.forward(step);
      const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      for (size_t j = 0; j < stepping.size(); ++j) {
        Active& a = active[stepping[j]];
        results[a.index].decode_seconds += seconds;
        accept(a, sample_token(std::span(&logits[j * V], V), requests[a.index].sampling, a.rng));
      }
    }
    // Finished sequences leave (their slot goes to the next waiting request).
    std::vector<Active> still;
    for (auto& a : active)
      if (!a.done) still.push_back(std::move(a));
    active.swap(still);
  }

  if (tokenizer_)
    for (size_t i = 0; i < results.size(); ++i) {
      auto& res = results[i];
      res.text = tokenizer_->decode(res.tokens, true);
      if (res.finish == FinishReason::StopString)
        for (const auto& s : requests[i].stop_strings)
          if (auto pos = res.text.find(s); !s.empty() && pos != std::string::npos) res.text.erase(pos);
    }
  return results;
}

}  // namespace pivotmt
