#include "metrics/ter_edit.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <string>
#include <tuple>

#include "core/error.h"

namespace pivotmt::metrics {
namespace {

constexpr int kMaxShiftSize = 10;
constexpr int kMaxShiftDist = 50;
constexpr int kBeamWidth = 25;
constexpr size_t kMaxCacheSize = 10000;
constexpr int kMaxShiftCandidates = 1000;
constexpr int64_t kInfinity = 10'000'000'000'000'000;  // int(1e16)

enum Op : char { kIns = 'i', kDel = 'd', kNop = ' ', kSub = 's', kUndef = 'x' };

struct Cell {
  int64_t cost;
  char op;
};
using Row = std::vector<Cell>;
using Words = std::vector<uint32_t>;

// Edit distance to a fixed reference with a prefix cache: rows of the DP matrix depend
// only on the hypothesis prefix (all hypotheses scored here are permutations of one
// another, so the beam is the same), so shifted variants reuse the rows of their common
// prefix. The cache only saves time; results never depend on it.
class BeamEditDistance {
 public:
  explicit BeamEditDistance(const Words& ref) : ref_(ref) {
    initial_.resize(ref.size() + 1);
    for (size_t j = 0; j <= ref.size(); ++j) initial_[j] = {int64_t(j), kIns};
    nodes_.emplace_back();  // root
  }

  // Returns the distance and, when `trace` is given, the edit operations (rows: hyp).
  int64_t operator()(const Words& hyp, std::string* trace) {
    // Follow the cache as far as the hypothesis prefix goes.
    std::vector<const Row*> rows = {&initial_};
    uint32_t node = 0;
    for (uint32_t w : hyp) {
      const auto next = child(node, w);
      if (!next) break;
      node = *next;
      rows.push_back(&nodes_[node].row);
    }
    const size_t start = rows.size() - 1;
    const size_t n_h = hyp.size(), n_r = ref_.size();
    std::vector<Row> fresh(n_h - start, Row(n_r + 1, Cell{kInfinity, kUndef}));
    for (auto& r : fresh) rows.push_back(&r);

    const double ratio = n_h ? double(n_r) / double(n_h) : 1.0;
    const int64_t beam = kBeamWidth < ratio / 2 ? int64_t(std::ceil(ratio / 2 + kBeamWidth)) : kBeamWidth;
    for (size_t i = start + 1; i <= n_h; ++i) {
      Row& row = fresh[i - start - 1];
      const Row& up = *rows[i - 1];
      const int64_t diag = int64_t(std::floor(double(i) * ratio));
      const size_t min_j = size_t(std::max<int64_t>(0, diag - beam));
      size_t max_j = size_t(std::min<int64_t>(int64_t(n_r) + 1, diag + beam));
      if (i == n_h) max_j = n_r + 1;
      for (size_t j = min_j; j < max_j; ++j) {
        if (j == 0) {
          row[0] = {up[0].cost + 1, kDel};
          continue;
        }
        const bool same = hyp[i - 1] == ref_[j - 1];
        // Tercom prefers no-op/substitution, then (in the flipped trace) insertion, then
        // deletion: the first strictly better option wins.
        const Cell options[3] = {{up[j - 1].cost + (same ? 0 : 1), same ? kNop : kSub},
                                 {up[j].cost + 1, kDel},
                                 {row[j - 1].cost + 1, kIns}};
        for (const auto& o : options)
          if (row[j].cost > o.cost) row[j] = o;
      }
    }
    if (trace) {
      trace->clear();
      size_t i = n_h, j = n_r;
      while (i > 0 || j > 0) {
        const char op = (*rows[i])[j].op;
        trace->push_back(op);
        if (op == kSub || op == kNop) {
          --i;
          --j;
        } else if (op == kIns) {
          --j;
        } else if (op == kDel) {
          --i;
        } else {
          throw Error("TER: edit distance trace left the beam (internal error)");
        }
      }
      std::reverse(trace->begin(), trace->end());
    }
    const int64_t distance = (*rows[n_h])[n_r].cost;
    add_to_cache(hyp, start, node, fresh);
    return distance;
  }

 private:
  struct Node {
    std::vector<std::pair<uint32_t, uint32_t>> children;  // word -> node index
    Row row;
  };

  std::optional<uint32_t> child(uint32_t node, uint32_t word) const {
    for (const auto& [w, n] : nodes_[node].children)
      if (w == word) return n;
    return std::nullopt;
  }

  void add_to_cache(const Words& hyp, size_t start, uint32_t node, std::vector<Row>& fresh) {
    for (size_t k = 0; k < fresh.size(); ++k) {
      if (nodes_.size() - 1 >= kMaxCacheSize) return;
      const uint32_t word = hyp[start + k];
      nodes_.push_back(Node{{}, std::move(fresh[k])});
      const auto index = static_cast<uint32_t>(nodes_.size() - 1);
      nodes_[node].children.emplace_back(word, index);
      node = index;
    }
  }

  const Words& ref_;
  Row initial_;
  std::vector<Node> nodes_;
};

// Python slicing words[a:b] with clamping.
void append_slice(Words& out, const Words& w, int64_t a, int64_t b) {
  const int64_t n = int64_t(w.size());
  a = std::clamp<int64_t>(a, 0, n);
  b = std::clamp<int64_t>(b, 0, n);
  if (b > a) out.insert(out.end(), w.begin() + a, w.begin() + b);
}

Words perform_shift(const Words& w, int64_t start, int64_t length, int64_t target) {
  Words out;
  out.reserve(w.size());
  if (target < start) {
    append_slice(out, w, 0, target);
    append_slice(out, w, start, start + length);
    append_slice(out, w, target, start);
    append_slice(out, w, start + length, int64_t(w.size()));
  } else if (target > start + length) {
    append_slice(out, w, 0, start);
    append_slice(out, w, start + length, target);
    append_slice(out, w, start, start + length);
    append_slice(out, w, target, int64_t(w.size()));
  } else {
    append_slice(out, w, 0, start);
    append_slice(out, w, start + length, length + target);
    append_slice(out, w, start, start + length);
    append_slice(out, w, length + target, int64_t(w.size()));
  }
  return out;
}

struct ShiftResult {
  int64_t delta = 0;
  Words words;
};

// One round of Tercom's greedy shift search; `checked` counts candidates across rounds.
ShiftResult best_shift(const Words& h, const Words& r, BeamEditDistance& ed, int& checked) {
  std::string trace;
  const int64_t pre_score = ed(h, &trace);
  // Flip insertions and deletions: the alignment is read as rewriting ref into hyp.
  std::map<int64_t, int64_t> align;
  std::vector<int> hyp_err, ref_err;
  int64_t pos_h = -1, pos_r = -1;
  for (char op : trace) {
    if (op == kNop || op == kSub) {
      ++pos_h;
      ++pos_r;
      align[pos_r] = pos_h;
      hyp_err.push_back(op == kSub);
      ref_err.push_back(op == kSub);
    } else if (op == kDel) {  // flipped: an insertion
      ++pos_h;
      hyp_err.push_back(1);
    } else {  // kIns, flipped: a deletion
      ++pos_r;
      align[pos_r] = pos_h;
      ref_err.push_back(1);
    }
  }
  auto any_error = [](const std::vector<int>& err, int64_t from, int64_t len) {
    const int64_t end = std::min<int64_t>(from + len, int64_t(err.size()));
    for (int64_t k = std::max<int64_t>(0, from); k < end; ++k)
      if (err[size_t(k)]) return true;
    return false;
  };

  bool have_best = false;
  std::tuple<int64_t, int64_t, int64_t, int64_t> best_key{};
  Words best_words;
  const int64_t n_h = int64_t(h.size()), n_r = int64_t(r.size());
  for (int64_t start_h = 0; start_h < n_h; ++start_h) {
    for (int64_t start_r = 0; start_r < n_r; ++start_r) {
      if (std::llabs(start_r - start_h) > kMaxShiftDist) continue;
      int64_t length = 0;
      while (h[size_t(start_h + length)] == r[size_t(start_r + length)] && length < kMaxShiftSize) {
        ++length;
        // Candidate (start_h, start_r, length).
        bool skip = !any_error(hyp_err, start_h, length) || !any_error(ref_err, start_r, length);
        if (!skip) {
          const int64_t aligned = align.at(start_r);
          skip = start_h <= aligned && aligned < start_h + length;
        }
        if (!skip) {
          int64_t prev_idx = -1;
          for (int64_t offset = -1; offset < length; ++offset) {
            int64_t idx;
            if (start_r + offset == -1) {
              idx = 0;
            } else if (auto it = align.find(start_r + offset); it != align.end()) {
              idx = it->second + 1;  // insert before, where Tercom inserts after
            } else {
              break;
            }
            if (idx == prev_idx) continue;
            prev_idx = idx;
            Words shifted = perform_shift(h, start_h, length, idx);
            const auto key = std::make_tuple(pre_score - ed(shifted, nullptr), length, -start_h, -idx);
            ++checked;
            if (!have_best || key > best_key) {
              have_best = true;
              best_key = key;
              best_words = std::move(shifted);
            }
          }
        }
        if (checked >= kMaxShiftCandidates) goto done;
        if (n_h == start_h + length || n_r == start_r + length) break;
      }
    }
  }
done:
  if (!have_best) return {0, h};
  return {std::get<0>(best_key), std::move(best_words)};
}
}  // namespace

TerEdits translation_edit_rate(const std::vector<uint32_t>& hyp, const std::vector<uint32_t>& ref) {
  if (ref.empty()) return {int64_t(hyp.size()), 0};
  BeamEditDistance ed(ref);
  int64_t shifts = 0;
  Words input = hyp;
  int checked = 0;
  while (true) {
    ShiftResult s = best_shift(input, ref, ed, checked);
    if (checked >= kMaxShiftCandidates) break;  // the cap wins even over a good shift
    if (s.delta <= 0) break;
    ++shifts;
    input = std::move(s.words);
  }
  return {shifts + ed(input, nullptr), int64_t(ref.size())};
}

}  // namespace pivotmt::metrics
