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

  // Runs the prefill of `members` (indices into `active`) as one forward pass; each
  // copies its donor's prefix first.
  struct Plan {
    size_t member;               // index into active
    const KvCache* donor = nullptr;  // resolved just before the pass
    size_t shared = 0;
  };
  auto prefill = [&](std::vector<Plan>& plans) {
    if (plans.empty()) return;
    std::vector<LlamaModel::Input> batch;
    for (auto& p : plans) {
      Active& a = active[p.member];
      const auto& prompt = prompts[a.index];
      if (p.donor && p.shared > 0) {
        a.cache = model_.prefix_of(*p.donor, p.shared);
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

  while (!waiting.empty() || !active.empty()) {
    // Admit waiting requests into free slots and prefill them together; the prefill budget
    // counts the tokens a request will compute (its prompt less what a donor can give).
    const size_t first_new = active.size();
    size_t budget = options.max_prefill_tokens;
    auto prefill_cost = [&](size_t i) {
      const auto& prompt = prompts[i];
      size_t shared = 0;
      if (options.reuse_prefixes) {
        for (size_t a = 0; a < active.size(); ++a) {
          const size_t n = common_prefix(prompt, prompts[active[a].index]);
          if (a < first_new || n >= options.min_shared_prefix) shared = std::max(shared, n);
        }
        for (const auto& r : retired) shared = std::max(shared, std::min(r.cache.length, common_prefix(prompt, prompts[r.index])));
      }
      return prompt.size() - std::min(shared, prompt.size() - 1);
    };
    while (!waiting.empty() && active.size() < options.max_batch &&
           (active.size() == first_new || prefill_cost(waiting.front()) <= budget)) {
      const size_t i = waiting.front();
      const size_t cost = prefill_cost(i);
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
    }
    if (active.size() > first_new) {
      // Donors: sequences already running, recently finished ones, and (one pass later)
      // members of this round's first pass. At least one prompt token is always computed:
      // its logits choose the first new token.
      std::vector<Plan> first_pass, second_pass;
      std::vector<size_t> second_donor;  // per second_pass entry: index into active
      for (size_t m = first_new; m < active.size(); ++m) {
        const auto& prompt = prompts[active[m].index];
        const size_t most = prompt.size() - 1;
        Plan here{m};
        size_t round_best = 0, round_donor = 0;
        if (options.reuse_prefixes) {
          for (size_t a = 0; a < first_new; ++a) {
            const size_t n = std::min(most, common_prefix(prompt, prompts[active[a].index]));
            if (n > here.shared) here = {m, &active[a].cache, n};
          }
          for (const auto& r : retired) {
            const size_t n = std::min({most, r.cache.length, common_prefix(prompt, prompts[r.index])});
            if (n > here.shared) here = {m, &r.cache, n};
          }
          for (const auto& p : first_pass) {
            const size_t n = std::min(most, common_prefix(prompt, prompts[active[p.member].index]));
            if (n > round_best) round_best = n, round_donor = p.member;
          }
        }
        if (round_best >= here.shared + options.min_shared_prefix) {
          second_pass.push_back({m, nullptr, round_best});
          second_donor.push_back(round_donor);
        } else {
          first_pass.push_back(here);
        }
      }
      prefill(first_pass);
      for (size_t j = 0; j < second_pass.size(); ++j) second_pass[j].donor = &active[second_donor[j]].cache;
      prefill(second_pass);
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
