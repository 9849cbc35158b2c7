#include "engine/generate.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <fstream>
#include <string>

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

namespace {
// Half of what /proc/meminfo's MemAvailable leaves once the weights are resident
// (MemAvailable counts the page cache, where weights read in place from the mapped file
// live), at least 256 MiB; 8 GiB when it cannot be read.
size_t default_kv_budget(size_t weight_bytes) {
  std::ifstream in("/proc/meminfo");
  std::string key;
  size_t kb = 0;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") {
      const size_t available = kb * 1024;
      return std::max(available > weight_bytes ? (available - weight_bytes) / 2 : 0, size_t(256) << 20);
    }
  return size_t(8) << 30;
}

size_t common_prefix(const std::vector<TokenId>& a, const std::vector<TokenId>& b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}
}  // namespace

std::vector<GenerationResult> Engine::generate(const std::vector<GenerationRequest>& requests,
                                               const EngineOptions& options, const GenerationHooks& hooks) {
  const size_t context = size_t(model_.config().max_position_embeddings);
  std::vector<GenerationResult> results(requests.size());
  std::vector<std::vector<TokenId>> prompts(requests.size());
  std::deque<size_t> waiting;
  std::vector<size_t> finished_now;  // reported through hooks.on_finished after each step
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
    if (r.max_new_tokens == 0) {  // nothing to generate
      finished_now.push_back(i);
      continue;
    }
    waiting.push_back(i);
  }

  // The text of a finished request, cut before a stop string.
  auto finish_text = [&](size_t i) {
    if (!tokenizer_) return;
    auto& res = results[i];
    res.text = tokenizer_->decode(res.tokens, true);
    if (res.finish == FinishReason::StopString)
      for (const auto& s : requests[i].stop_strings)
        if (auto pos = res.text.find(s); !s.empty() && pos != std::string::npos) res.text.erase(pos);
  };
  auto report_finished = [&] {
    if (finished_now.empty()) return;
    for (size_t i : finished_now) finish_text(i);
    if (hooks.on_finished) hooks.on_finished(finished_now, results);
    finished_now.clear();
  };
  report_finished();

  std::vector<Active> active;
  auto accept = [&](Active& a, TokenId token) {
    const auto& r = requests[a.index];
    auto& res = results[a.index];
    res.tokens.push_back(token);
    if (hooks.on_token) hooks.on_token(a.index, token);
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
    if (a.done) finished_now.push_back(a.index);
  };
  const size_t V = size_t(model_.config().vocab_size);

  // Prompt caches of recently finished requests, kept as prefix donors.
  struct Retired {
    size_t index;
    KvCache cache;  // its prompt's positions only
  };
  std::deque<Retired> retired;

  // Memory: each running sequence holds room for prompt + max_new_tokens positions.
  const size_t per_position = model_.kv_bytes_per_position();
  const size_t kv_budget = options.max_kv_bytes ? options.max_kv_bytes : default_kv_budget(model_.weight_bytes());
  size_t kv_in_use = 0;  // running reservations + kept donors
  auto reservation = [&](size_t i) { return (prompts[i].size() + requests[i].max_new_tokens) * per_position; };

  // A prefill to run: active[member] copies `shared` positions from the cache of request
  // `donor` (running or finished; looked up when the pass runs, so admission may still move
  // or drop caches), then computes the rest of its prompt.
  static constexpr size_t kNoDonor = size_t(-1);
  struct Plan {
    size_t member;
    size_t donor = kNoDonor;
    size_t shared = 0;
  };
  auto cache_of = [&](size_t request) -> const KvCache* {
    for (const auto& a : active)
      if (a.index == request) return &a.cache;
    for (const auto& r : retired)
      if (r.index == request) return &r.cache;
    return nullptr;  // dropped to make room: the prompt is computed in full
  };
  // Runs the planned prefills as one forward pass.
  auto prefill = [&](std::vector<Plan>& plans) {
    if (plans.empty()) return;
    std::vector<LlamaModel::Input> batch;
    for (auto& p : plans) {
      Active& a = active[p.member];
      const auto& prompt = prompts[a.index];
      const KvCache* donor = p.shared > 0 ? cache_of(p.donor) : nullptr;
      if (!donor) p.shared = 0;
      if (donor) {
        a.cache = model_.prefix_of(*donor, p.shared);
        results[a.index].reused_prompt_tokens = p.shared;
      }
      model_.reserve(a.cache, prompt.size() + requests[a.index].max_new_tokens);
      batch.push_back({&a.cache, std::vector<TokenId>(prompt.begin() + long(p.shared), prompt.end()), false});
    }
    const auto t0 = Clock::now();
    const auto logits = model_.forward(batch);
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    size_t fed = 0;
    for (const auto& in : batch) fed += in.tokens.size();
    for (size_t j = 0; j < plans.size(); ++j) {
      Active& a = active[plans[j].member];
      results[a.index].prefill_seconds += seconds;
      results[a.index].compute_seconds += seconds * double(batch[j].tokens.size()) / double(fed);
      accept(a, sample_token(std::span(&logits[j * V], V), requests[a.index].sampling, a.rng));
    }
  };

  // The longest prefix of prompt i (at least one token left to compute: its logits choose
  // the first new token) held by a running sequence active[0, upto) or a finished one.
  auto best_donor = [&](size_t i, size_t upto) {
    const auto& prompt = prompts[i];
    const size_t most = prompt.size() - 1;
    std::pair<size_t, size_t> best{kNoDonor, 0};  // donor request, shared positions
    if (!options.reuse_prefixes) return best;
    for (size_t a = 0; a < upto; ++a) {
      const size_t n = std::min(most, common_prefix(prompt, prompts[active[a].index]));
      if (n > best.second) best = {active[a].index, n};
    }
    for (const auto& r : retired) {
      const size_t n = std::min({most, r.cache.length, common_prefix(prompt, prompts[r.index])});
      if (n > best.second) best = {r.index, n};
    }
    return best;
  };
  // The longest prefix of prompt i that requests of this round's first pass will hold:
  // worth a second pass when it saves min_shared_prefix more than a donor already there.
  auto best_in_round = [&](size_t i, const std::vector<size_t>& members) {
    const auto& prompt = prompts[i];
    std::pair<size_t, size_t> best{kNoDonor, 0};  // donor request, shared positions
    if (!options.reuse_prefixes) return best;
    for (size_t request : members) {
      const size_t n = std::min(prompt.size() - 1, common_prefix(prompt, prompts[request]));
      if (n > best.second) best = {request, n};
    }
    return best;
  };

  while (!waiting.empty() || !active.empty()) {
    // Admit waiting requests into free slots, planning each one's prefill as it comes: a
    // donor already there, or (a second pass) a member of this round's first pass. The
    // prefill token budget counts what a request will compute, its prompt less the prefix.
    const size_t first_new = active.size();
    size_t budget = options.max_prefill_tokens;
    std::vector<Plan> first_pass, second_pass;
    std::vector<size_t> first_requests;  // requests of the first pass
    while (!waiting.empty() && active.size() < options.max_batch) {
      const size_t i = waiting.front();
      const auto [donor, shared] = best_donor(i, first_new);
      const auto [round_donor, round_shared] = best_in_round(i, first_requests);
      const bool second = round_shared >= shared + options.min_shared_prefix;
      const size_t cost = prompts[i].size() - (second ? round_shared : shared);
      if (active.size() > first_new && cost > budget) break;  // the first of a round always runs
      // Donors give way to running work; a request that alone exceeds the budget runs alone.
      while (kv_in_use + reservation(i) > kv_budget && !retired.empty()) {
        kv_in_use -= retired.front().cache.length * per_position;
        retired.pop_front();
      }
      if (!active.empty() && kv_in_use + reservation(i) > kv_budget) break;
      waiting.pop_front();
      active.push_back({i, model_.new_cache(), SamplerRng(requests[i].sampling.seed)});
      kv_in_use += reservation(i);
      budget -= std::min(budget, cost);
      const size_t m = active.size() - 1;
      if (second) {
        second_pass.push_back({m, round_donor, round_shared});
      } else {
        first_pass.push_back({m, donor, shared});
        first_requests.push_back(i);
      }
    }
    prefill(first_pass);
    prefill(second_pass);
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
        results[a.index].compute_seconds += seconds / double(stepping.size());
        accept(a, sample_token(std::span(&logits[j * V], V), requests[a.index].sampling, a.rng));
      }
    }
    // Finished sequences leave (their slot goes to the next waiting request); their prompt
    // caches stay a while as donors.
    std::vector<Active> still;
    for (auto& a : active) {
      if (!a.done) {
        still.push_back(std::move(a));
        continue;
      }
      kv_in_use -= reservation(a.index);
      if (options.reuse_prefixes && !waiting.empty()) {
        model_.truncate(a.cache, std::min(a.cache.length, prompts[a.index].size()));
        kv_in_use += a.cache.length * per_position;
        retired.push_back({a.index, std::move(a.cache)});
        if (retired.size() > options.max_batch) {
          kv_in_use -= retired.front().cache.length * per_position;
          retired.pop_front();
        }
      }
    }
    active.swap(still);
    report_finished();
  }
  return results;
}

}  // namespace pivotmt
