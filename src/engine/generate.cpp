#include "engine/generate.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <map>
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
  bool requeue = false;  // leaves the batch for the front of the queue (no KV room now)
  bool resumed = false;  // recomputing a preempted sequence: its next token is already chosen
};

// A preempted sequence's state, kept while it waits to be recomputed.
struct Preempted {
  SamplerRng rng;
  TokenId pending;
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

  // Prompt caches of recently finished requests, kept as prefix donors.
  struct Retired {
    size_t index;
    KvCache cache;  // its prompt's positions only
  };
  std::deque<Retired> retired;

  // Memory: each running sequence holds room for prompt + max_new_tokens positions.
  const size_t per_position = model_.kv_bytes_per_position();
  const size_t kv_budget = options.max_kv_bytes ? options.max_kv_bytes : model_.default_kv_budget();
  size_t kv_in_use = 0;  // running reservations + kept donors
  // Sized from the prompt as given (a preempted request's recomputed prompt is longer).
  std::vector<size_t> reserved_positions(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) reserved_positions[i] = prompts[i].size() + requests[i].max_new_tokens;
  auto reservation = [&](size_t i) { return reserved_positions[i] * per_position; };
  std::map<size_t, Preempted> preempted;  // by request
  std::vector<size_t> in_prompt(requests.size());  // generated tokens appended to prompts[i] by preemptions

  // Makes room in the device's KV memory for `positions` of a's cache, dropping kept donors
  // first; false when only running sequences hold the memory.
  auto make_room = [&](Active& a, size_t positions) {
    while (!model_.grow(a.cache, positions)) {
      if (retired.empty()) return false;
      kv_in_use -= retired.front().cache.length * per_position;
      retired.pop_front();
    }
    return true;
  };
  auto too_large = [&](size_t i, size_t positions) {
    return Error(fmt::format("request {}: {} positions of keys and values ({:.1f} MiB) do not fit in the KV memory of "
                             "{} ({:.1f} MiB)",
                             i + 1, positions, double(positions * per_position) / (1 << 20), model_.describe_device(),
                             double(model_.ops().kv_capacity_bytes()) / (1 << 20)));
  };
  // A sequence whose cache holds device memory that will be given back as it finishes.
  auto holds_kv = [](const Active& a) { return !a.done && !a.requeue && a.cache.storage; };
  // Runs a forward pass; the chosen token of each row, chosen where the logits are (the
  // device; each sampled row's uniform draw comes from its request's generator here).
  auto choose = [&](std::vector<LlamaModel::Input>& batch, const std::vector<Active*>& members) {
    bool greedy = true;
    for (const Active* a : members) greedy = greedy && requests[a->index].sampling.greedy;
    if (greedy) return model_.forward_greedy(batch);
    std::vector<RowSampling> rows(members.size());
    for (size_t j = 0; j < members.size(); ++j) {
      const SamplingParams& p = requests[members[j]->index].sampling;
      // A greedy row draws nothing; a resumed sequence's draw was made before: its RNG stays put.
      const bool draws = !p.greedy && !members[j]->resumed;
      rows[j] = {p, draws ? members[j]->rng.uniform() : 0.0};
    }
    std::vector<TokenId> ids = model_.forward_sample(batch, rows);
    for (size_t j = 0; j < members.size(); ++j)
      if (members[j]->resumed) ids[j] = -1;
    return ids;
  };

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
      if (a.index == request) return a.cache.storage ? &a.cache : nullptr;
    for (const auto& r : retired)
      if (r.index == request) return &r.cache;
    return nullptr;  // dropped to make room: the prompt is computed in full
  };
  // Runs the planned prefills as one forward pass.
  // A request that finds no room waits at the front of the queue (nothing of it is lost).
  auto prefill = [&](std::vector<Plan>& plans) {
    if (plans.empty()) return;
    std::vector<LlamaModel::Input> batch;
    std::vector<Active*> members;
    for (auto& p : plans) {
      Active& a = active[p.member];
      const auto& prompt = prompts[a.index];
      const KvCache* donor = p.shared > 0 ? cache_of(p.donor) : nullptr;
      if (!donor || donor->length < p.shared) p.shared = 0, donor = nullptr;
      a.cache = donor ? model_.prefix_of(*donor, p.shared) : model_.new_cache();
      p.shared = a.cache.length;  // a GPU short of a block for a partial one shares full blocks only
      model_.reserve(a.cache, prompt.size() + requests[a.index].max_new_tokens);
      if (!make_room(a, prompt.size())) {
        // Nothing else holds memory that will be freed: it can never fit.
        if (std::none_of(active.begin(), active.end(), [&](const Active& b) { return &b != &a && holds_kv(b); }))
          throw too_large(a.index, prompt.size());
        a.cache = KvCache{};
        a.requeue = true;
        continue;
      }
      results[a.index].reused_prompt_tokens = std::max(results[a.index].reused_prompt_tokens, p.shared);
      batch.push_back({&a.cache, std::vector<TokenId>(prompt.begin() + long(p.shared), prompt.end()), false});
      members.push_back(&a);
    }
    if (batch.empty()) return;
    const auto t0 = Clock::now();
    const auto chosen = choose(batch, members);
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    size_t fed = 0;
    for (const auto& in : batch) fed += in.tokens.size();
    for (size_t j = 0; j < members.size(); ++j) {
      Active& a = *members[j];
      results[a.index].prefill_seconds += seconds;
      results[a.index].compute_seconds += seconds * double(batch[j].tokens.size()) / double(fed);
      if (a.resumed) {
        a.resumed = false;  // its cache holds everything before the token it had chosen
        preempted.erase(a.index);
        continue;
      }
      accept(a, chosen[j]);
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
      active.push_back({i, KvCache{}, SamplerRng(requests[i].sampling.seed)});
      if (auto p = preempted.find(i); p != preempted.end()) {
        active.back().rng = p->second.rng;
        active.back().pending = p->second.pending;
        active.back().resumed = true;  // the entry stays until its prefill has run
      }
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
    // One decode step for every sequence with a pending token. A sequence the device's KV
    // memory cannot grow preempts the most recently admitted one (itself, if it is that):
    // its cache is released and it is recomputed later from its prompt and the tokens it
    // has, resuming with the token it had chosen and its sampler state.
    auto steps = [&](const Active& a) { return holds_kv(a) && a.pending >= 0; };
    for (size_t a = 0; a < active.size(); ++a) {
      if (!steps(active[a])) continue;
      while (!make_room(active[a], active[a].cache.length + 1)) {
        if (std::count_if(active.begin(), active.end(), holds_kv) <= 1) throw too_large(active[a].index, active[a].cache.length + 1);
        size_t victim = active.size() - 1;  // the most recently admitted holder (a itself at worst)
        while (!holds_kv(active[victim])) --victim;
        Active& v = active[victim];
        if (v.pending >= 0) {
          // Its cache held the prompt and every generated token but the pending one.
          const auto& tokens = results[v.index].tokens;
          prompts[v.index].insert(prompts[v.index].end(), tokens.begin() + long(in_prompt[v.index]), tokens.end() - 1);
          in_prompt[v.index] = tokens.size() - 1;
          preempted.insert_or_assign(v.index, Preempted{v.rng, v.pending});
        }
        v.cache = KvCache{};
        v.requeue = true;
        ++results[v.index].preemptions;
        if (victim == a) break;
      }
    }
    std::vector<LlamaModel::Input> step;
    std::vector<Active*> stepping;
    for (auto& a : active)
      if (steps(a)) {
        step.push_back({&a.cache, {a.pending}, false});
        stepping.push_back(&a);
      }
    if (!step.empty()) {
      const auto t0 = Clock::now();
      const auto chosen = choose(step, stepping);
      const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      for (size_t j = 0; j < stepping.size(); ++j) {
        Active& a = *stepping[j];
        results[a.index].decode_seconds += seconds;
        results[a.index].compute_seconds += seconds / double(stepping.size());
        accept(a, chosen[j]);
      }
    }
    // Finished sequences leave (their slot goes to the next waiting request); their prompt
    // caches stay a while as donors.
    std::vector<Active> still;
    std::vector<size_t> requeued;
    for (auto& a : active) {
      if (a.requeue) {
        kv_in_use -= reservation(a.index);
        requeued.push_back(a.index);
        continue;
      }
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
    waiting.insert(waiting.begin(), requeued.begin(), requeued.end());  // first in line, in admission order
    report_finished();
  }
  return results;
}

}  // namespace pivotmt
