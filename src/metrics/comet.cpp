#include "metrics/comet.h"

#include <atomic>
#include <exception>
#include <mutex>

#include <fmt/format.h>

#include "backends/cpu/thread_pool.h"
#include "core/error.h"

namespace pivotmt::comet {

Model::Model(const std::string& model_dir, const std::string& encoder_dir)
    : encoder_(encoder_dir, model_dir), head_(encoder_.checkpoint(), encoder_.dimension()) {
  if (head_.layers() != size_t(encoder_.config().num_layers) + 1)
    throw FormatError(fmt::format("{}: the layer mix has {} weights, the encoder {} hidden states ({} layers + embeddings)",
                                  model_dir, head_.layers(), encoder_.config().num_layers + 1,
                                  encoder_.config().num_layers));
  // unbabel-comet: max_positions = max_position_embeddings − 2, tokenizer max_length = that − 2.
  const int64_t positions = encoder_.config().max_position_embeddings;
  if (positions < 6) throw FormatError(fmt::format("{}: {} positions are too few for COMET", encoder_dir, positions));
  max_tokens_ = std::min(size_t(positions - 4), encoder_.max_positions());
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

std::vector<float> Model::embed(const std::vector<std::string>& texts, size_t* truncated) const {
  const size_t H = encoder_.dimension();
  std::vector<float> out(texts.size() * H);
  std::atomic<size_t> cut_count{0};
  std::exception_ptr failure;
  std::mutex m;
  cpu::parallel_for(texts.size(), [&](size_t b, size_t e) {
    try {
      for (size_t s = b; s < e; ++s) {
        bool cut = false;
        const auto ids = tokenize(texts[s], &cut);
        if (cut) ++cut_count;
        const auto states = encoder_.all_hidden_states(ids);
        const auto v = head_.sentence_embedding(states.data(), ids.size());
        std::copy(v.begin(), v.end(), out.begin() + std::ptrdiff_t(s * H));
      }
    } catch (...) {
      std::lock_guard lock(m);
      if (!failure) failure = std::current_exception();
    }
  });
  if (failure) std::rethrow_exception(failure);
  if (truncated) *truncated += cut_count.load();
  return out;
}

Scores Model::score(const std::vector<std::string>& src, const std::vector<std::string>& mt,
                    const std::vector<std::string>& ref) const {
  if (src.size() != mt.size() || ref.size() != mt.size())
    throw Error(fmt::format("COMET: {} sources, {} translations and {} references (one of each per segment)", src.size(),
                            mt.size(), ref.size()));
  Scores out;
  if (mt.empty()) return out;
  const auto s = embed(src, &out.truncated), t = embed(mt, &out.truncated), r = embed(ref, &out.truncated);
  const auto seg = head_.score(s.data(), t.data(), r.data(), mt.size());
  out.segments.assign(seg.begin(), seg.end());
  for (double v : out.segments) out.system += v;
  out.system /= double(out.segments.size());
  return out;
}

}  // namespace pivotmt::comet
