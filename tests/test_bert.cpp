// The sentence encoder against transformers' BertModel on the tiny-minilm fixture (its
// golden.safetensors: token ids from the slow BERT tokenizer, last hidden states, and
// mean-pooled L2-normalised embeddings, float32), for 19 sentences in English, Hindi,
// MSA, accented Latin, CJK and the empty string.
#include <gtest/gtest.h>

#include <cmath>
#include <algorithm>
#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/safetensors.h"
#include "models/bert_model.h"
#include "test_util.h"

namespace pivotmt {
namespace {

template <typename T>
std::vector<T> tensor(const SafetensorsFile& f, const std::string& name) {
  return test::read_tensor<T>(f, name);
}

TEST(BertEncoder, MatchesTransformers) {
  const std::string dir = test::fixture("models/tiny-minilm");
  const BertEncoder encoder(dir);
  const SafetensorsFile golden(dir + "/golden.safetensors");
  const auto sentences = nlohmann::json::parse(golden.metadata().at("sentences")).get<std::vector<std::string>>();
  ASSERT_EQ(sentences.size(), 19u);
  const auto embeddings = encoder.embed(sentences);
  const size_t H = encoder.dimension();
  for (size_t s = 0; s < sentences.size(); ++s) {
    const std::string p = "s" + std::to_string(s) + ".";
    const auto ids64 = tensor<int64_t>(golden, p + "input_ids");
    const auto ids = encoder.tokenize(sentences[s]);
    ASSERT_EQ(std::vector<int64_t>(ids.begin(), ids.end()), ids64) << "sentence " << s << ": " << sentences[s];
    const auto hidden = encoder.hidden_states(ids);
    const auto want = tensor<float>(golden, p + "last_hidden_state");
    double worst = 0;
    for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, double(std::fabs(hidden[i] - want[i])));
    EXPECT_LT(worst, 1e-5) << "sentence " << s;
    const auto e = tensor<float>(golden, p + "embedding");
    double dot = 0, na = 0, nb = 0;
    for (size_t i = 0; i < H; ++i) {
      dot += double(embeddings[s * H + i]) * e[i];
      na += double(embeddings[s * H + i]) * embeddings[s * H + i];
      nb += double(e[i]) * e[i];
    }
    EXPECT_GE(dot / std::sqrt(na * nb), 0.9999) << "sentence " << s;
    EXPECT_NEAR(na, 1.0, 1e-5);  // normalised, as modules.json asks
  }
}


// XLM-RoBERTa (COMET's encoder) against transformers' XLMRobertaModel: a tiny random model
// (tests/goldens/make_xlmr_golden.py) with the real Unigram vocabulary of
// tests/goldens/unigram: the tokenizer's ids with <s> ... </s>, RoBERTa's positions from
// pad + 1, and every hidden state (embeddings + each layer) within 1e-5.
TEST(BertEncoder, XlmRobertaHiddenStatesMatchTransformers) {
  const std::string goldens = std::string(PIVOTMT_SOURCE_DIR) + "/tests/goldens/";
  const test::TempDir dir;  // config, tokenizer and weights in one folder, as on the hub
  for (const char* f : {"config.json", "tokenizer.json"}) std::filesystem::copy_file(goldens + "unigram/" + f, dir.str(f));
  std::filesystem::copy_file(goldens + "xlmr/model.safetensors", dir.str("model.safetensors"));
  const BertEncoder encoder(dir.str());
  EXPECT_EQ(encoder.config().position_offset, 2);
  EXPECT_EQ(encoder.max_positions(), 128u);
  const SafetensorsFile golden(goldens + "xlmr/golden.safetensors");
  const auto sentences = nlohmann::json::parse(golden.metadata().at("sentences")).get<std::vector<std::string>>();
  ASSERT_GE(sentences.size(), 10u);
  const size_t H = encoder.dimension(), layers = size_t(encoder.config().num_layers) + 1;
  for (size_t s = 0; s < sentences.size(); ++s) {
    const std::string p = "s" + std::to_string(s) + ".";
    const auto ids = encoder.tokenize(sentences[s]);
    ASSERT_EQ(std::vector<int64_t>(ids.begin(), ids.end()), tensor<int64_t>(golden, p + "input_ids")) << sentences[s];
    const auto all = encoder.all_hidden_states(ids);
    const auto want = tensor<float>(golden, p + "hidden_states");
    ASSERT_EQ(all.size(), layers * ids.size() * H);
    ASSERT_EQ(want.size(), all.size());
    for (size_t i = 0; i < want.size(); ++i)
      ASSERT_NEAR(all[i], want[i], 1e-5) << "sentence " << s << ", layer " << i / (ids.size() * H);
    const auto last = encoder.hidden_states(ids);
    ASSERT_TRUE(std::equal(last.begin(), last.end(), all.end() - std::ptrdiff_t(last.size())));
  }
  // COMET's layout: the config and tokenizer in one directory, the weights in another under
  // "encoder.model." beside tensors of the head: the same states.
  const test::TempDir weights;
  {
    const SafetensorsFile plain(dir.str("model.safetensors"));
    std::vector<TensorData> renamed;
    for (const auto& t : plain.tensors()) {
      const auto bytes = plain.data(t);
      renamed.push_back({{"encoder.model." + t.name, t.dtype, t.shape}, std::vector<std::byte>(bytes.begin(), bytes.end())});
    }
    const float gamma = 1.0f;
    const auto* g = reinterpret_cast<const std::byte*>(&gamma);
    renamed.push_back({{"layerwise_attention.gamma", DType::F32, {1}}, std::vector<std::byte>(g, g + 4)});
    write_safetensors(weights.str("model.safetensors"), renamed);
  }
  std::filesystem::remove(dir.str("model.safetensors"));
  const BertEncoder comet_layout(dir.str(), weights.str());
  const auto ids = encoder.tokenize(sentences.back());
  EXPECT_EQ(comet_layout.all_hidden_states(ids), encoder.all_hidden_states(ids));

  // Past the position table: a clear error, not a read beyond it.
  std::vector<TokenId> too_long(encoder.max_positions() + 1, 5);
  EXPECT_THROW(encoder.all_hidden_states(too_long), Error);
}

// The fast path (sequences packed without padding, cpu::fast ops) against transformers'
// states for every sentence of the golden in one batch; each sequence's states the same
// (to float rounding: the row count picks the GEMM kernel) alone as among others; the layer
// count honoured.
TEST(BertEncoder, PackedBatchMatchesTransformersAndIgnoresBatchMates) {
  const std::string goldens = std::string(PIVOTMT_SOURCE_DIR) + "/tests/goldens/";
  const test::TempDir dir;
  for (const char* f : {"config.json", "tokenizer.json"}) std::filesystem::copy_file(goldens + "unigram/" + f, dir.str(f));
  std::filesystem::copy_file(goldens + "xlmr/model.safetensors", dir.str("model.safetensors"));
  const BertEncoder encoder(dir.str());
  const SafetensorsFile golden(goldens + "xlmr/golden.safetensors");
  const auto sentences = nlohmann::json::parse(golden.metadata().at("sentences")).get<std::vector<std::string>>();
  std::vector<std::vector<TokenId>> seqs;
  for (const auto& s : sentences) seqs.push_back(encoder.tokenize(s));
  const size_t H = encoder.dimension(), L = encoder.num_layers();
  std::vector<std::vector<float>> states(L + 1);
  size_t rows = 0;
  for (const auto& s : seqs) rows += s.size();
  encoder.encode_batch(seqs, L, [&](size_t l, const float* h) { states.at(l).assign(h, h + rows * H); });
  size_t row0 = 0;
  for (size_t s = 0; s < seqs.size(); ++s) {
    const size_t T = seqs[s].size();
    const auto want = tensor<float>(golden, "s" + std::to_string(s) + ".hidden_states");
    for (size_t l = 0; l <= L; ++l)
      for (size_t i = 0; i < T * H; ++i)
        ASSERT_NEAR(states[l][row0 * H + i], want[(l * T) * H + i], 1e-5) << "sentence " << s << ", layer " << l;
    row0 += T;
  }
  // The second sentence alone, and after the last one: the same states.
  const size_t s1 = 1, T1 = seqs[s1].size();
  for (const auto& batch : {std::vector<std::vector<TokenId>>{seqs[s1]}, std::vector<std::vector<TokenId>>{seqs.back(), seqs[s1]}}) {
    std::vector<float> last;
    size_t seen = 0;
    encoder.encode_batch(batch, L, [&](size_t l, const float* h) {
      ++seen;
      if (l == L) last.assign(h + (batch.size() - 1) * batch[0].size() * H, h + (batch.size() - 1) * batch[0].size() * H + T1 * H);
    });
    EXPECT_EQ(seen, L + 1);
    const size_t first = seqs[0].size();  // sentence 1 starts after sentence 0 in the big batch
    ASSERT_EQ(last.size(), T1 * H);
    for (size_t i = 0; i < last.size(); ++i)
      ASSERT_NEAR(last[i], states[L][first * H + i], 1e-6 * std::max(1.0f, std::fabs(last[i])))
          << "sentence 1's states depend on its batch mates";
  }
  size_t calls = 0;
  encoder.encode_batch(seqs, 1, [&](size_t, const float*) { ++calls; });
  EXPECT_EQ(calls, 2u);  // embeddings + one layer
  EXPECT_THROW(encoder.encode_batch(seqs, L + 1, [](size_t, const float*) {}), Error);
}

TEST(BertEncoder, TokenBatchesKeepOrderAndBudget) {
  EXPECT_EQ(token_batches({3, 4, 5, 9, 1, 1}, 8), (std::vector<std::vector<size_t>>{{0, 1}, {2}, {3}, {4, 5}}));
  EXPECT_EQ(token_batches({}, 8), std::vector<std::vector<size_t>>{});
  EXPECT_EQ(token_batches({20}, 8), (std::vector<std::vector<size_t>>{{0}}));
}

}  // namespace
}  // namespace pivotmt
