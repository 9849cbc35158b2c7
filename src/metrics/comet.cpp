#include "metrics/comet.h"

#include <optional>
#include <string_view>
#include <unordered_map>

#include <fmt/format.h>

#include "backends/cpu/thread_pool.h"
#include "core/error.h"
#include "core/progress.h"

namespace pivotmt::comet {

namespace {
// The encoder, its errors naming the user's model when its weights were converted into a cache.
BertEncoder load_encoder(const std::string& model_dir, const std::string& encoder_dir, const std::string& name,
                         const Device& device, DType weights) {
  try {
    return BertEncoder(encoder_dir, model_dir, device, weights);
  } catch (const Error& e) {
    if (name.empty() || name == model_dir) throw;
    throw Error(fmt::format("COMET model {} (weights in {}): {}", name, model_dir, e.what()));
  }
}
}  // namespace

Model::Model(const std::string& model_dir, const std::string& encoder_dir, const std::string& name,
             const Device& device, DType weights)
    : name_(name.empty() ? model_dir : name),
      weights_(weights),
      encoder_(load_encoder(model_dir, encoder_dir, name, device, weights)),
      head_(encoder_.checkpoint(), encoder_.dimension()) {
  if (head_.layers() != size_t(encoder_.config().num_layers) + 1)
    throw FormatError(fmt::format("COMET model {}: the layer mix has {} weights, the encoder {} hidden states ({} layers + embeddings)",
                                  name_, head_.layers(), encoder_.config().num_layers + 1,
                                  encoder_.config().num_layers));
  // unbabel-comet: max_positions = max_position_embeddings − 2, tokenizer max_length = that − 2.
  const int64_t positions = encoder_.config().max_position_embeddings;
  if (positions < 6) throw FormatError(fmt::format("{}: {} positions are too few for COMET", encoder_dir, positions));
  max_tokens_ = std::min(size_t(positions - 4), encoder_.max_positions());
}

std::string Model::signature(const std::string& encoder, size_t truncated) const {
  std::string s = fmt::format("model:{}|encoder:{}|truncated:{}", name_, encoder, truncated);
  if (weights_ == DType::F16) s += "|weights:f16";
  return s;
}

std::vector<TokenId> Model::tokenize(const std::string& text, bool* cut) const {
  std::vector<TokenId> ids = encoder_.tokenizer().encode(text, true);
  const bool over = ids.size() > max_tokens_;
  if (over) {
    const TokenId last = ids.back();  // </s>
    ids.resize(max_tokens_ - 1);
    ids.push_back(last);
  }
  if (cut) *cut = over;
  return ids;
}

std::vector<float> Model::embed_reference(const std::vector<std::string>& texts, size_t* truncated) const {
  const size_t H = encoder_.dimension();
  std::vector<float> out(texts.size() * H);
  for (size_t s = 0; s < texts.size(); ++s) {
    bool cut = false;
    const auto ids = tokenize(texts[s], &cut);
    if (cut && truncated) ++*truncated;
    const auto states = encoder_.all_hidden_states(ids);
    const auto v = head_.sentence_embedding(states.data(), ids.size(), ids, pad_id());
    std::copy(v.begin(), v.end(), out.begin() + std::ptrdiff_t(s * H));
  }
  return out;
}

std::vector<float> Model::embed(const std::vector<std::string>& texts, size_t* truncated) const {
  const size_t H = encoder_.dimension();
  std::vector<float> out(texts.size() * H);
  // Each distinct text not in the cache is encoded once: todo_index maps it (a view into
  // `texts`) to its place in `todo`.
  std::vector<std::string> todo;
  std::unordered_map<std::string_view, size_t> todo_index;
  {
    std::lock_guard lock(cache_mutex_);
    for (const auto& t : texts)
      if (!cache_.count(t) && todo_index.emplace(t, todo.size()).second) todo.push_back(t);
  }
  std::vector<std::vector<TokenId>> ids(todo.size());
  std::vector<char> cut(todo.size(), 0);
  cpu::parallel_for(todo.size(), [&](size_t b, size_t e) {
    for (size_t s = b; s < e; ++s) {
      bool c = false;
      ids[s] = tokenize(todo[s], &c);
      cut[s] = c;
    }
  });
  // Layers whose mix weight is 0 (sparsemax gives exact zeros) add nothing: the encoder
  // stops after the last weighted one.
  const auto& w = head_.layer_weights();
  size_t last = 0;
  for (size_t k = 0; k < w.size(); ++k)
    if (w[k] != 0.0f) last = k;
  std::vector<size_t> lengths;
  size_t total_tokens = 0;
  for (const auto& v : ids) {
    lengths.push_back(v.size());
    total_tokens += v.size();
  }
  std::vector<float> fresh(todo.size() * H);
  std::optional<Progress> progress;
  if (total_tokens > 0) progress.emplace("COMET tokens", total_tokens, ProgressUnit::Items);
  size_t done_tokens = 0;
  for (const auto& batch : token_batches(lengths, BertEncoder::kBatchTokens)) {
    std::vector<std::vector<TokenId>> seqs;
    std::vector<size_t> starts{0};
    for (size_t s : batch) {
      seqs.push_back(ids[s]);
      starts.push_back(starts.back() + ids[s].size());
    }
    // Σ_k w_k · Σ_t H_k[t] per sentence, then gamma / T: the mix and the mean are both
    // linear, so this is COMET's gamma · mean_t Σ_k w_k H_k[t] in another order. Summed on
    // the encoder's device; COMET's pooling leaves a <pad> out of the sum.
    const std::vector<double> acc = encoder_.pooled_layer_mix(seqs, std::vector<double>(w.begin(), w.begin() + long(last) + 1), pad_id());
    for (size_t j = 0; j < batch.size(); ++j) {
      const double f = double(head_.gamma()) / double(seqs[j].size());
      for (size_t i = 0; i < H; ++i) fresh[batch[j] * H + i] = float(acc[j * H + i] * f);
    }
    done_tokens += starts.back();
    progress->set(done_tokens);
  }
  if (progress) progress->finish();
  std::lock_guard lock(cache_mutex_);
  for (size_t s = 0; s < todo.size() && cache_.size() < kCacheSentences; ++s)
    cache_.emplace(todo[s], Cached{std::vector<float>(&fresh[s * H], &fresh[(s + 1) * H]), cut[s] != 0});
  for (size_t s = 0; s < texts.size(); ++s) {
    const float* v;
    bool was_cut;
    if (auto it = todo_index.find(texts[s]); it != todo_index.end()) {
      v = &fresh[it->second * H];
      was_cut = cut[it->second] != 0;
    } else {
      const Cached& c = cache_.at(texts[s]);
      v = c.embedding.data();
      was_cut = c.truncated;
    }
    std::copy(v, v + H, out.begin() + std::ptrdiff_t(s * H));
    if (was_cut && truncated) ++*truncated;
  }
  return out;
}

Scores Model::score(const std::vector<std::string>& src, const std::vector<std::string>& mt,
                    const std::vector<std::string>& ref) const {
  if (src.size() != mt.size() || ref.size() != mt.size())
    throw Error(fmt::format("COMET: {} sources, {} translations and {} references (one of each per segment)", src.size(),
                            mt.size(), ref.size()));
  Scores out;
  if (mt.empty()) return out;
  // One call for all three lists: one progress line, and a sentence that is in two of them
  // encoded once.
  std::vector<std::string> all(src);
  all.insert(all.end(), mt.begin(), mt.end());
  all.insert(all.end(), ref.begin(), ref.end());
  const auto e = embed(all, &out.truncated);
  const size_t n = mt.size(), H = encoder_.dimension();
  const auto seg = head_.score(e.data(), e.data() + n * H, e.data() + 2 * n * H, n);
  out.segments.assign(seg.begin(), seg.end());
  for (double v : out.segments) out.system += v;
  out.system /= double(out.segments.size());
  return out;
}

}  // namespace pivotmt::comet
