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
  bool prefilling = false;  // its prompt is not all in its cache yet (computed in chunks)
};

// A prompt chunk smaller than this is not started in a round that already computes one: it
// would cost a pass's overheads for little work.
constexpr size_t kMinChunkTokens = 256;

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
  // A sequence whose next pass feeds it its pending token (its prompt is all in its cache).
  auto steps = [&](const Active& a) { return holds_kv(a) && !a.prefilling && a.pending >= 0; };

  // A prompt's chunk to compute in a pass: active[member] first copies `shared` positions
  // from the cache of request `donor` (running or finished; looked up when the pass runs,
  // so admission may still move or drop caches) when it has no cache yet, then computes
  // `tokens` more of its prompt (a long prompt takes several passes).
  static constexpr size_t kNoDonor = size_t(-1);
  struct Plan {
    size_t member;
    size_t donor = kNoDonor;
    size_t shared = 0;
    size_t tokens = 0;
  };
  auto cache_of = [&](size_t request) -> const KvCache* {
    for (const auto& a : active)
      if (a.index == request) return a.cache.storage ? &a.cache : nullptr;
    for (const auto& r : retired)
      if (r.index == request) return &r.cache;
    return nullptr;  // dropped to make room: the prompt is computed in full
  };

  // One forward pass: the planned prompt chunks, and (with_decode) a row for every sequence
  // with a pending token. The chosen token of a row is chosen where the logits are (the
  // device); a sampled row's uniform draw comes from its request's generator here, made
  // only for a row whose token is used (not a chunk before a prompt's last, nor a resumed
  // sequence's, whose token was chosen before it was preempted). A chunk that finds no room
  // in the KV memory sends its request to the front of the queue (nothing of it is lost).
  auto run_pass = [&](std::vector<Plan>& plans, bool with_decode) {
    std::vector<LlamaModel::Input> batch;
    std::vector<Active*> members;
    std::vector<char> prompt_rows;  // 1: a prompt chunk, 0: a decode row
    for (auto& p : plans) {
      Active& a = active[p.member];
      if (a.requeue) continue;  // preempted for a decode row's room
      const auto& prompt = prompts[a.index];
      if (!a.cache.storage) {  // its first chunk
        const KvCache* donor = p.shared > 0 ? cache_of(p.donor) : nullptr;
        const size_t shared = donor ? std::min(p.shared, donor->length) : 0;  // a donor may be mid-prompt
        a.cache = shared > 0 ? model_.prefix_of(*donor, shared) : model_.new_cache();
        // (a GPU short of a block for a partial one shares full blocks only: cache.length)
        p.tokens += p.shared - a.cache.length;
        model_.reserve(a.cache, prompt.size() + requests[a.index].max_new_tokens);
        results[a.index].reused_prompt_tokens = std::max(results[a.index].reused_prompt_tokens, a.cache.length);
      }
      const size_t from = a.cache.length, n = std::min(p.tokens, prompt.size() - from);
      if (!make_room(a, from + n)) {
        // Nothing else holds memory that will be freed: it can never fit.
        if (std::none_of(active.begin(), active.end(), [&](const Active& b) { return &b != &a && holds_kv(b); }))
          throw too_large(a.index, from + n);
        if (from > 0 && p.donor == kNoDonor) ++results[a.index].preemptions;  // part of its prompt computed, dropped
        a.cache = KvCache{};
        a.requeue = true;
        continue;
      }
      batch.push_back({&a.cache, std::vector<TokenId>(prompt.begin() + long(from), prompt.begin() + long(from + n)), false});
      members.push_back(&a);
      prompt_rows.push_back(1);
    }
    if (with_decode)
      for (auto& a : active)
        if (steps(a)) {
          batch.push_back({&a.cache, {a.pending}, false});
          members.push_back(&a);
          prompt_rows.push_back(0);
        }
    if (batch.empty()) return;
    // Whose token this pass chooses: a decode row's, a prompt's last chunk's.
    std::vector<char> chooses(members.size());
    for (size_t j = 0; j < members.size(); ++j)
      chooses[j] = !prompt_rows[j] || members[j]->cache.length + batch[j].tokens.size() == prompts[members[j]->index].size();
    bool greedy = true;
    for (const Active* a : members) greedy = greedy && requests[a->index].sampling.greedy;
    const auto t0 = Clock::now();
    std::vector<TokenId> chosen;
    if (greedy) {
      chosen = model_.forward_greedy(batch);
    } else {
      std::vector<RowSampling> rows(members.size());
      for (size_t j = 0; j < members.size(); ++j) {
        const SamplingParams& p = requests[members[j]->index].sampling;
        const bool draws = !p.greedy && chooses[j] && !members[j]->resumed;
        rows[j] = {p, draws ? members[j]->rng.uniform() : 0.0};
      }
      chosen = model_.forward_sample(batch, rows);
    }
    const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    size_t fed = 0;
    for (const auto& in : batch) fed += in.tokens.size();
    for (size_t j = 0; j < members.size(); ++j) {
      Active& a = *members[j];
      auto& res = results[a.index];
      (prompt_rows[j] ? res.prefill_seconds : res.decode_seconds) += seconds;
      res.compute_seconds += seconds * double(batch[j].tokens.size()) / double(fed);
      if (!chooses[j]) continue;  // more of its prompt to come
      if (prompt_rows[j]) {
        a.prefilling = false;
        if (a.resumed) {
          a.resumed = false;  // its cache holds everything before the token it had chosen
          preempted.erase(a.index);
          continue;
        }
      }
      accept(a, chosen[j]);
    }
  };

  // Where prompt i takes its prefix from. Candidates: running sequences (those admitted
  // before this round, from what their caches hold when the round starts), finished ones,
  // and (a second pass, after the first) what the first pass will have computed — a
  // prompt part-way through included. The shared prefix leaves at least one token to
  // compute (its logits choose the first new token). A second pass is worth it when it
  // shares min_shared_prefix more. (No prompt is ever part-computed when a round has room
  // for another: a prompt is cut into a chunk only when it takes all the room left, and
  // prompts part-way through are continued first, so waiting for one never pays.)
  struct DonorChoice {
    size_t donor = kNoDonor, shared = 0;
    bool second = false;
  };
  auto choose_donor = [&](size_t i, size_t first_new, const std::vector<Plan>& first_pass) {
    if (!options.reuse_prefixes) return DonorChoice{};
    const auto& prompt = prompts[i];
    const size_t most = prompt.size() - 1;
    std::vector<size_t> end_of_first(active.size(), 0);  // prompt positions after the first pass
    for (const auto& p : first_pass) {
      const Active& a = active[p.member];
      end_of_first[p.member] = (a.cache.storage ? a.cache.length : p.shared) + p.tokens;
    }
    size_t now = 0, now_donor = kNoDonor, after = 0, after_donor = kNoDonor;
    auto consider = [&](size_t request, size_t common, size_t at_start, size_t after_first) {
      common = std::min(common, most);
      if (std::min(common, at_start) > now) now = std::min(common, at_start), now_donor = request;
      if (std::min(common, after_first) > after) after = std::min(common, after_first), after_donor = request;
    };
    for (size_t m = 0; m < active.size(); ++m) {
      const Active& a = active[m];
      const size_t held = m < first_new && a.cache.storage ? a.cache.length : 0;
      consider(a.index, common_prefix(prompt, prompts[a.index]), held, std::max(held, end_of_first[m]));
    }
    for (const auto& r : retired) {
      const size_t held = r.cache.length;
      consider(r.index, std::min(held, common_prefix(prompt, prompts[r.index])), held, held);
    }
    if (after >= now + options.min_shared_prefix) return DonorChoice{after_donor, after, true};
    return DonorChoice{now_donor, now, false};
  };

  while (!waiting.empty() || !active.empty()) {
    // One round: a pass of every decode row and prompt chunks up to the token budget
    // (max_prefill_tokens rows in all), then (when worth it) a second pass of prompts that
    // share a prefix with a prompt of the first. Prompts part-way through continue first,
    // then waiting requests are admitted into free slots, each planned as it comes: a donor
    // already there, or (the second pass) a member of this round's first pass; the budget
    // counts what a prompt computes, less its shared prefix, and a prompt longer than what
    // is left is computed in chunks over the next rounds.
    size_t decode_rows = size_t(std::count_if(active.begin(), active.end(), steps));
    size_t budget = options.max_prefill_tokens > decode_rows ? options.max_prefill_tokens - decode_rows : 0;
    if (decode_rows == 0) budget = std::max<size_t>(budget, 1);  // a round always makes progress
    std::vector<Plan> first_pass, second_pass;
    for (size_t m = 0; m < active.size() && budget > 0; ++m) {
      const Active& a = active[m];
      if (!a.prefilling || !a.cache.storage) continue;
      const size_t n = std::min(budget, prompts[a.index].size() - a.cache.length);
      first_pass.push_back({m, kNoDonor, 0, n});
      budget -= n;
    }
    const size_t first_new = active.size();
    while (!waiting.empty() && active.size() < options.max_batch && budget > 0) {
      const size_t i = waiting.front();
      const DonorChoice d = choose_donor(i, first_new, first_pass);
      const size_t cost = prompts[i].size() - d.shared;
      // A prompt that does not fit what is left waits for the next round, unless this round
      // computes no prompt yet or a sizeable chunk of it fits.
      if (cost > budget && !first_pass.empty() && budget < kMinChunkTokens) break;
      // Donors give way to running work; a request that alone exceeds the budget runs alone.
      while (kv_in_use + reservation(i) > kv_budget && !retired.empty()) {
        kv_in_use -= retired.front().cache.length * per_position;
        retired.pop_front();
      }
      if (!active.empty() && kv_in_use + reservation(i) > kv_budget) break;
      waiting.pop_front();
      active.push_back({i, KvCache{}, SamplerRng(requests[i].sampling.seed)});
      active.back().prefilling = true;
      if (auto p = preempted.find(i); p != preempted.end()) {
        active.back().rng = p->second.rng;
        active.back().pending = p->second.pending;
        active.back().resumed = true;  // the entry stays until its prefill has run
      }
      kv_in_use += reservation(i);
      const size_t n = std::min(cost, budget);
      budget -= n;
      const size_t m = active.size() - 1;
      (d.second ? second_pass : first_pass).push_back({m, d.donor, d.shared, n});
    }
    // Room for every decode row's new position. A sequence the device's KV memory cannot
    // grow preempts the most recently admitted holder (itself, if it is that): its cache is
    // released and it is recomputed later from its prompt and the tokens it has, resuming
    // with the token it had chosen and its sampler state.
    for (size_t a = 0; a < active.size(); ++a) {
      if (!steps(active[a])) continue;
      while (!make_room(active[a], active[a].cache.length + 1)) {
        if (std::count_if(active.begin(), active.end(), holds_kv) <= 1) throw too_large(active[a].index, active[a].cache.length + 1);
        size_t victim = active.size() - 1;  // the most recently admitted holder (a itself at worst)
        while (!holds_kv(active[victim])) --victim;
        Active& v = active[victim];
        if (v.pending >= 0 && !v.prefilling) {
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
    run_pass(first_pass, true);
    run_pass(second_pass, false);
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
