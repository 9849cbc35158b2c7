#include "engine/seq2seq.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <optional>

#include <fmt/format.h>

#include "core/error.h"

namespace pivotmt {

namespace {
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
// transformers' "very large negative value" for beams that must not be chosen.
constexpr float kLarge = 1.0e9f;

std::vector<int32_t> banned_after(const std::vector<int32_t>& seq, size_t n) {
  std::vector<int32_t> banned;
  if (n == 0 || seq.size() + 1 < n) return banned;
  if (n == 1) return seq;  // every token already generated (a 1-gram's empty prefix always matches)
  const size_t prefix_start = seq.size() + 1 - n;  // the last n − 1 tokens
  for (size_t i = 0; i + n <= seq.size(); ++i)
    if (std::equal(seq.begin() + std::ptrdiff_t(i), seq.begin() + std::ptrdiff_t(i + n - 1),
                   seq.begin() + std::ptrdiff_t(prefix_start)))
      banned.push_back(seq[i + n - 1]);
  return banned;
}

// The logits processors of generate for NLLB's settings, in transformers' order: no-repeat
// n-grams (banned_after: those tokens −inf), forced BOS (the target language), forced EOS
// (every other token −inf). The decoders below apply them to each row's best tokens
// (EncoderOps::top_k) rather than to the whole row.
// The token the processors force after a sequence of cur_len tokens (the target language
// first, </s> last), if any; the forced EOS wins, as in `process`.
std::optional<int32_t> forced_token(size_t cur_len, const Seq2SeqSettings& s) {
  if (s.forced_eos_token_id && cur_len == s.max_length - 1) return s.forced_eos_token_id;
  if (s.forced_bos_token_id && cur_len == 1) return s.forced_bos_token_id;
  return std::nullopt;
}

void check_settings(const M2M100Model& model, const Seq2SeqSettings& s) {
  const auto V = model.config().vocab_size;
  if (s.max_length < 2) throw Error(fmt::format("max_length {} leaves no room for a token after the decoder's start", s.max_length));
  if (s.num_beams < 1) throw Error("num_beams must be at least 1");
  for (const auto& id : {s.forced_bos_token_id, s.forced_eos_token_id})
    if (id && (*id < 0 || *id >= V)) throw Error(fmt::format("forced token id {} is outside the vocabulary ({})", *id, V));
}

// Greedy decoding of one batch of sources.
void greedy(const M2M100Model& model, const std::vector<std::vector<int32_t>>& sources, const std::vector<size_t>& index,
            const Seq2SeqSettings& s, std::vector<Seq2SeqResult>& results,
            const std::function<void(size_t, const Seq2SeqResult&)>& on_done) {
  const auto& cfg = model.config();
  const size_t n = index.size();
  std::vector<std::vector<int32_t>> batch;
  for (size_t i : index) batch.push_back(sources[i]);
  const auto cross = model.cross_caches(model.encode(batch));
  std::vector<M2M100Model::SelfCache> caches;
  std::vector<std::vector<int32_t>> seqs(n, std::vector<int32_t>{cfg.decoder_start_token_id});
  for (size_t i = 0; i < n; ++i) caches.push_back(model.new_self_cache(s.max_length));
  std::vector<size_t> active(n);
  std::iota(active.begin(), active.end(), 0);
  auto finish = [&](size_t i) {
    Seq2SeqResult& r = results[index[i]];
    r.ids = seqs[i];
    r.hit_max_length = seqs[i].back() != cfg.eos_token_id;
    caches[i] = {};
    if (on_done) on_done(index[i], r);
  };
  M2M100Model::Workspace ws;
  ws.host_logits = false;  // each row's few best logits cross to the host, not the row
  std::vector<RowTop> tops;
  for (size_t cur_len = 1; cur_len < s.max_length && !active.empty(); ++cur_len) {
    std::vector<M2M100Model::DecoderRow> rows;
    for (size_t i : active) rows.push_back({&caches[i], &cross[i], std::span<const int32_t>(&seqs[i].back(), 1)});
    model.decode(rows, true, ws);
    // The processors of `process` on the best 1 + |banned| tokens of each row: the first
    // one not banned is the row's arg-max (the first maximum, as torch.argmax), unless a
    // token is forced.
    std::vector<std::vector<int32_t>> banned(active.size());
    size_t most = 0;
    for (size_t r = 0; r < active.size(); ++r) {
      banned[r] = banned_after(seqs[active[r]], s.no_repeat_ngram_size);
      most = std::max(most, banned[r].size());
    }
    model.top_k(ws, 1 + most, tops);
    std::vector<size_t> still;
    for (size_t r = 0; r < active.size(); ++r) {
      const size_t i = active[r];
      int32_t next = -1;
      for (int32_t t : tops[r].tokens)
        if (std::find(banned[r].begin(), banned[r].end(), t) == banned[r].end()) {
          next = t;
          break;
        }
      if (const auto forced = forced_token(seqs[i].size(), s)) next = *forced;
      if (next < 0) throw Error("greedy decoding: every candidate token is banned");
      seqs[i].push_back(next);
      if (next == cfg.eos_token_id) finish(i);
      else still.push_back(i);
    }
    active.swap(still);
  }
  for (size_t i : active) finish(i);
}

struct Candidate {
  float score = kNegInf;  // accumulated log-probability
  size_t beam = 0;        // the running beam it extends
  int32_t token = 0;
};

// Beam search over one batch of sources (each source's beams are decoder rows).
void beam_search(const M2M100Model& model, const std::vector<std::vector<int32_t>>& sources,
                 const std::vector<size_t>& index, const Seq2SeqSettings& s, std::vector<Seq2SeqResult>& results,
                 const std::function<void(size_t, const Seq2SeqResult&)>& on_done) {
  const auto& cfg = model.config();
  const size_t V = size_t(cfg.vocab_size), nb = s.num_beams, K = 2 * nb, n = index.size();
  const float lp = float(s.length_penalty);
  std::vector<std::vector<int32_t>> batch;
  for (size_t i : index) batch.push_back(sources[i]);
  const auto cross = model.cross_caches(model.encode(batch));

  struct Beam {
    std::vector<int32_t> seq;
    float score = 0.0f;
    M2M100Model::SelfCache cache;
    bool alive = false;  // false: a beam whose score is −inf (never extended, never decoded)
  };
  struct Hypothesis {
    std::vector<int32_t> seq;
    float score = -kLarge;
    bool finished = false;
  };
  struct Sentence {
    std::vector<Beam> running;
    std::vector<Hypothesis> done;  // transformers' `sequences` / `beam_scores` / `is_sent_finished`
    bool improvable = true;        // is_early_stop_heuristic_unsatisfied
    bool active = true;
  };
  std::vector<Sentence> sent(n);
  for (size_t i = 0; i < n; ++i) {
    sent[i].running.resize(nb);
    for (auto& b : sent[i].running) b.seq = {cfg.decoder_start_token_id};
    // Only the first beam starts live (transformers gives the others −1e9 so that the
    // first step does not pick the same token nb times; their continuations never win).
    sent[i].running[0].alive = true;
    sent[i].running[0].cache = model.new_self_cache(s.max_length);
    sent[i].done.assign(nb, Hypothesis{{cfg.decoder_start_token_id}, -kLarge, false});
  }
  auto finish = [&](size_t i) {
    Sentence& st = sent[i];
    st.active = false;
    Seq2SeqResult& r = results[index[i]];
    r.ids = st.done[0].seq;
    r.score = st.done[0].score;
    r.hit_max_length = r.ids.back() != cfg.eos_token_id;
    st.running.clear();
    if (on_done) on_done(index[i], r);
  };

  M2M100Model::Workspace ws;
  ws.host_logits = false;
  std::vector<RowTop> tops;
  for (size_t cur_len = 1;; ++cur_len) {
    std::vector<M2M100Model::DecoderRow> rows;
    std::vector<std::pair<size_t, size_t>> row_of;  // (sentence, beam)
    for (size_t i = 0; i < n; ++i) {
      if (!sent[i].active) continue;
      for (size_t b = 0; b < nb; ++b) {
        Beam& beam = sent[i].running[b];
        if (!beam.alive) continue;
        rows.push_back({&beam.cache, &cross[i], std::span<const int32_t>(&beam.seq.back(), 1)});
        row_of.emplace_back(i, b);
      }
    }
    if (rows.empty()) break;
    model.decode(rows, true, ws);
    // Each row's own top K of log-softmax + processors + its running score (transformers:
    // log_softmax, then the processors, then + the beam's score). log-softmax is monotonic
    // in the logits, so only the K best need their value: x − max − log Σ e^(x − max). A row
    // with banned n-grams reads K + |banned| (the K best not banned are among them).
    std::vector<std::vector<int32_t>> banned(rows.size());
    size_t most = 0;
    for (size_t r = 0; r < rows.size(); ++r) {
      const auto [i, b] = row_of[r];
      banned[r] = banned_after(sent[i].running[b].seq, s.no_repeat_ngram_size);
      most = std::max(most, banned[r].size());
    }
    model.top_k(ws, K + most, tops);
    std::vector<std::vector<Candidate>> row_top(rows.size());
    for (size_t r = 0; r < rows.size(); ++r) {
      const auto [i, b] = row_of[r];
      const Beam& beam = sent[i].running[b];
      auto& top = row_top[r];
      if (const auto forced = forced_token(beam.seq.size(), s)) {
        // Every other token is −inf: the forced one scores 0 (not its log-probability).
        top.push_back({0.0f + beam.score, b, *forced});
        continue;
      }
      const RowTop& t = tops[r];
      for (size_t j = 0; j < t.tokens.size() && top.size() < std::min(K, V); ++j) {
        if (std::find(banned[r].begin(), banned[r].end(), t.tokens[j]) != banned[r].end()) continue;
        top.push_back({((t.logits[j] - t.max) - t.log_sum) + beam.score, b, t.tokens[j]});
      }
    }

    size_t r = 0;
    for (size_t i = 0; i < n; ++i) {
      Sentence& st = sent[i];
      if (!st.active) continue;
      // The top K of all beams' continuations (ties: the lower flat index beam · V + token).
      std::vector<Candidate> cand;
      while (r < rows.size() && row_of[r].first == i) {
        cand.insert(cand.end(), row_top[r].begin(), row_top[r].end());
        ++r;
      }
      std::sort(cand.begin(), cand.end(), [](const Candidate& a, const Candidate& c) {
        if (a.score != c.score) return a.score > c.score;
        return a.beam != c.beam ? a.beam < c.beam : a.token < c.token;
      });
      if (cand.size() > K) cand.resize(K);
      while (cand.size() < K) cand.push_back({kNegInf, 0, cfg.pad_token_id});  // dead beams' continuations
      std::vector<bool> hits(K);
      bool all_hit = true;
      for (size_t c = 0; c < K; ++c) {
        hits[c] = cand[c].token == cfg.eos_token_id || cur_len + 1 >= s.max_length;
        all_hit = all_hit && hits[c];
      }

      // Finished hypotheses: the best nb of those kept and this step's finished top-nb
      // candidates (sum / length^penalty; −1e9 for what may not enter).
      const float penalty = float(std::pow(double(cur_len), double(s.length_penalty)));  // cur_len + 1 − prompt length 1
      bool all_finished = true;
      for (const auto& h : st.done) all_finished = all_finished && h.finished;
      std::vector<Hypothesis> merged = st.done;
      for (size_t c = 0; c < K; ++c) {
        const bool finished_now = hits[c] && c < nb;
        float score = cand[c].score / penalty;
        if (all_finished && s.early_stopping == EarlyStopping::True) score += -kLarge;
        if (!st.improvable) score += -kLarge;
        if (!finished_now) score += -kLarge;
        Hypothesis h;
        h.score = score;
        h.finished = finished_now;
        h.seq = st.running[cand[c].beam].seq;
        h.seq.push_back(cand[c].token);
        merged.push_back(std::move(h));
      }
      std::vector<size_t> order(merged.size());
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t c) { return merged[a].score > merged[c].score; });
      std::vector<Hypothesis> done;
      for (size_t j = 0; j < nb; ++j) done.push_back(std::move(merged[order[j]]));
      st.done = std::move(done);

      // The next running beams: the best nb continuations that did not just finish.
      std::vector<size_t> next(K);
      std::iota(next.begin(), next.end(), 0);
      std::vector<float> adjusted(K);
      for (size_t c = 0; c < K; ++c) adjusted[c] = cand[c].score + (hits[c] ? -kLarge : 0.0f);
      std::stable_sort(next.begin(), next.end(), [&](size_t a, size_t c) { return adjusted[a] > adjusted[c]; });
      std::vector<Beam> running(nb);
      std::vector<int> uses(nb, 0);
      for (size_t j = 0; j < nb; ++j) ++uses[cand[next[j]].beam];
      // Caches of beams nobody continues: their memory is reused by the copies below.
      std::vector<M2M100Model::SelfCache> spares;
      for (size_t b = 0; b < nb; ++b)
        if (uses[b] == 0 && st.running[b].alive) spares.push_back(std::move(st.running[b].cache));
      for (size_t j = 0; j < nb; ++j) {
        const Candidate& c = cand[next[j]];
        Beam& parent = st.running[c.beam];
        Beam& beam = running[j];
        beam.score = adjusted[next[j]];
        beam.alive = std::isfinite(beam.score) && parent.alive;
        beam.seq = parent.seq;
        beam.seq.push_back(c.token);
        if (!beam.alive) continue;
        // The parent's keys and values: moved to its last user, copied for the others (into
        // a spare cache's memory when there is one).
        if (--uses[c.beam] == 0) {
          beam.cache = std::move(parent.cache);
        } else {
          if (!spares.empty()) {
            beam.cache = std::move(spares.back());
            spares.pop_back();
          }
          model.copy_self_cache(parent.cache, beam.cache);
        }
      }
      st.running = std::move(running);

      // Can the running beams still beat the finished ones (transformers' heuristic)?
      const size_t next_len = cur_len + 1;
      const double best_len = s.early_stopping == EarlyStopping::Never && s.length_penalty > 0.0
                                  ? double(s.max_length - 1)
                                  : double(next_len - 1);
      const float best_possible = st.running[0].score / float(std::pow(best_len, double(lp)));
      float worst = std::numeric_limits<float>::infinity();
      for (const auto& h : st.done) worst = std::min(worst, h.score);
      bool improvable = false;
      for (const auto& h : st.done) improvable = improvable || best_possible > (h.finished ? worst : -kLarge);
      st.improvable = st.improvable && improvable;
      bool all_done_finished = true;
      for (const auto& h : st.done) all_done_finished = all_done_finished && h.finished;
      if (!st.improvable || (all_done_finished && s.early_stopping == EarlyStopping::True) || all_hit ||
          next_len >= s.max_length)
        finish(i);
    }
  }
}
}  // namespace

std::vector<int32_t> banned_ngram_tokens(const std::vector<int32_t>& seq, size_t n) { return banned_after(seq, n); }

std::vector<Seq2SeqResult> generate_seq2seq(const M2M100Model& model, const std::vector<std::vector<int32_t>>& sources,
                                            const Seq2SeqSettings& settings,
                                            const std::function<void(size_t, const Seq2SeqResult&)>& on_done) {
  check_settings(model, settings);
  std::vector<Seq2SeqResult> results(sources.size());
  const size_t batch = std::max<size_t>(1, settings.batch_size);
  for (size_t first = 0; first < sources.size(); first += batch) {
    std::vector<size_t> index;
    for (size_t i = first; i < std::min(sources.size(), first + batch); ++i) index.push_back(i);
    if (settings.num_beams == 1) greedy(model, sources, index, settings, results, on_done);
    else beam_search(model, sources, index, settings, results, on_done);
  }
  return results;
}

}  // namespace pivotmt
