#include "models/bert_model.h"

#include <cmath>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "backends/cpu/thread_pool.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "io/json_file.h"
#include "models/weights.h"

namespace pivotmt {
namespace fs = std::filesystem;

namespace {
// [out, in] matrices stacked along out (Q, K and V into one projection).
cpu::Matrix stacked_f32(const Checkpoint& ckpt, const std::vector<std::string>& names) {
  cpu::Matrix m;
  m.dtype = DType::F32;
  for (const auto& name : names) {
    const auto& info = ckpt.at(name);
    if (info.shape.size() != 2)
      throw FormatError(fmt::format("{}: expected a matrix, the checkpoint holds {} dimensions", name, info.shape.size()));
    if (m.in != 0 && size_t(info.shape[1]) != m.in)
      throw FormatError(fmt::format("{}: {} columns, but {} has {}", name, info.shape[1], names.front(), m.in));
    m.in = size_t(info.shape[1]);
    m.out += size_t(info.shape[0]);
    const auto values = ckpt.load_f32(name);
    m.f32.insert(m.f32.end(), values.begin(), values.end());
  }
  return m;
}

std::vector<float> concat_f32(const Checkpoint& ckpt, const std::vector<std::string>& names) {
  std::vector<float> out;
  for (const auto& name : names) {
    const auto values = ckpt.load_f32(name);
    out.insert(out.end(), values.begin(), values.end());
  }
  return out;
}

// y[t] += b for each of T rows (both paths: plain additions, threaded over rows).
void add_bias(float* y, size_t T, const std::vector<float>& b) {
  const size_t n = b.size();
  cpu::parallel_for(T, [&](size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; ++t)
      for (size_t o = 0; o < n; ++o) y[t * n + o] += b[o];
  });
}

}  // namespace

BertEncoder::BertEncoder(const std::string& dir, const std::string& weights_dir) {
  cfg_ = load_model_config(dir);
  if (cfg_.arch != Architecture::Bert)
    throw UnsupportedError(fmt::format("{}: a sentence encoder must be a BERT model, this is {}", dir, architecture_name(cfg_.arch)));
  checkpoint_ = std::make_unique<Checkpoint>(weights_dir.empty() ? dir : weights_dir);
  const Checkpoint& ckpt = *checkpoint_;
  verify_weights(cfg_, ckpt);
  const std::string p = bert_prefix(ckpt);
  word_ = ckpt.load_f32(p + "embeddings.word_embeddings.weight");
  position_ = ckpt.load_f32(p + "embeddings.position_embeddings.weight");
  token_type_ = ckpt.load_f32(p + "embeddings.token_type_embeddings.weight");
  emb_ln_w_ = ckpt.load_f32(p + "embeddings.LayerNorm.weight");
  emb_ln_b_ = ckpt.load_f32(p + "embeddings.LayerNorm.bias");
  for (int64_t l = 0; l < cfg_.num_layers; ++l) {
    const std::string lp = fmt::format("{}encoder.layer.{}.", p, l);
    Layer L;
    const std::string a = lp + "attention.self.";
    L.qkv = stacked_f32(ckpt, {a + "query.weight", a + "key.weight", a + "value.weight"});
    L.qkv_b = concat_f32(ckpt, {a + "query.bias", a + "key.bias", a + "value.bias"});
    L.o = stacked_f32(ckpt, {lp + "attention.output.dense.weight"});
    L.inter = stacked_f32(ckpt, {lp + "intermediate.dense.weight"});
    L.out = stacked_f32(ckpt, {lp + "output.dense.weight"});
    L.o_b = ckpt.load_f32(lp + "attention.output.dense.bias");
    L.inter_b = ckpt.load_f32(lp + "intermediate.dense.bias");
    L.out_b = ckpt.load_f32(lp + "output.dense.bias");
    L.ln1_w = ckpt.load_f32(lp + "attention.output.LayerNorm.weight");
    L.ln1_b = ckpt.load_f32(lp + "attention.output.LayerNorm.bias");
    L.ln2_w = ckpt.load_f32(lp + "output.LayerNorm.weight");
    L.ln2_b = ckpt.load_f32(lp + "output.LayerNorm.bias");
    layers_.push_back(std::move(L));
  }
  // RoBERTa / XLM-R tokenizer classes name their special tokens themselves (a folder with
  // tokenizer.json alone still has <pad>, <unk>, <mask> as special tokens in transformers).
  const bool roberta = cfg_.model_type == "roberta" || cfg_.model_type == "xlm-roberta";
  tokenizer_ = roberta ? load_tokenizer(dir, {{"tokenizer_class", cfg_.model_type == "roberta" ? "RobertaTokenizer" : "XLMRobertaTokenizer"},
                                              {"bos_token", "<s>"},
                                              {"eos_token", "</s>"},
                                              {"sep_token", "</s>"},
                                              {"cls_token", "<s>"},
                                              {"unk_token", "<unk>"},
                                              {"pad_token", "<pad>"},
                                              {"mask_token", "<mask>"}})
                       : load_tokenizer(dir);
  max_tokens_ = size_t(cfg_.max_position_embeddings - cfg_.position_offset);
  const fs::path sbert = fs::path(dir) / "sentence_bert_config.json";
  if (fs::exists(sbert)) {
    const auto j = read_json_file(sbert.string());
    if (j.contains("max_seq_length") && j["max_seq_length"].is_number_integer())
      max_tokens_ = std::min(max_tokens_, j["max_seq_length"].get<size_t>());
  }
  // tokenizer.json may carry its own truncation (all-MiniLM: 128 word pieces); the tighter
  // limit wins, as the hub's tokenizer applies it before the model sees the ids.
  const fs::path tj = fs::path(dir) / "tokenizer.json";
  if (fs::exists(tj)) {
    const auto j = read_json_file(tj.string());
    if (j.contains("truncation") && j["truncation"].is_object() && j["truncation"].contains("max_length") &&
        j["truncation"]["max_length"].is_number_integer())
      max_tokens_ = std::min(max_tokens_, j["truncation"]["max_length"].get<size_t>());
  }
  // modules.json: Pooling (mean by default) and whether a Normalize module follows.
  const fs::path modules = fs::path(dir) / "modules.json";
  normalize_ = false;
  if (fs::exists(modules)) {
    for (const auto& m : read_json_file(modules.string())) {
      const std::string type = m.value("type", "");
      if (type.ends_with("Normalize")) normalize_ = true;
      if (type.ends_with("Pooling")) {
        const fs::path cfg = fs::path(dir) / m.value("path", "1_Pooling") / "config.json";
        if (fs::exists(cfg)) {
          const auto c = read_json_file(cfg.string());
          if (c.value("pooling_mode_cls_token", false)) pooling_ = Pooling::Cls;
          else if (c.value("pooling_mode_max_tokens", false)) pooling_ = Pooling::Max;
          else if (c.value("pooling_mode_mean_sqrt_len_tokens", false)) pooling_ = Pooling::MeanSqrtLen;
          else pooling_ = Pooling::Mean;
        }
      }
    }
  }
}

BertEncoder::~BertEncoder() = default;

std::vector<TokenId> BertEncoder::tokenize(const std::string& text) const {
  std::vector<TokenId> ids = tokenizer_->encode(text, true);
  if (ids.size() > max_tokens_ && max_tokens_ >= 2) {  // keep [CLS] ... [SEP]
    const TokenId sep = ids.back();
    ids.resize(max_tokens_ - 1);
    ids.push_back(sep);
  }
  return ids;
}

std::vector<float> BertEncoder::hidden_states(const std::vector<TokenId>& ids) const {
  std::vector<float> all = all_hidden_states(ids);
  const size_t last = all.size() - ids.size() * dimension();
  return std::vector<float>(all.begin() + std::ptrdiff_t(last), all.end());
}

void BertEncoder::embed_tokens(const std::vector<TokenId>& ids, float* x) const {
  const size_t T = ids.size(), H = dimension(), offset = size_t(cfg_.position_offset);
  if (T == 0) throw Error("BERT: no tokens");
  if (T > max_positions())
    throw Error(fmt::format("{}: {} tokens exceed the model's {} positions", cfg_.model_type, T, max_positions()));
  // RoBERTa / XLM-R number positions cumsum(id != pad) · (id != pad) + pad (transformers'
  // create_position_ids_from_input_ids): a token whose id is the padding id — a literal
  // "<pad>" in the text too — sits at position `pad`, and the positions after it do not
  // advance. BERT numbers them 0, 1, 2, ...
  const bool roberta = offset > 0 && cfg_.pad_token_id;
  const int64_t pad = roberta ? *cfg_.pad_token_id : 0;
  size_t counted = 0;
  for (size_t t = 0; t < T; ++t) {
    if (ids[t] < 0 || int64_t(ids[t]) >= cfg_.vocab_size)
      throw Error(fmt::format("{}: token id {} out of range (vocabulary {})", cfg_.model_type, ids[t], cfg_.vocab_size));
    const size_t position = !roberta ? t + offset : int64_t(ids[t]) == pad ? size_t(pad) : size_t(pad) + ++counted;
    for (size_t i = 0; i < H; ++i)
      x[t * H + i] = word_[size_t(ids[t]) * H + i] + position_[position * H + i] + token_type_[i];
  }
}

std::vector<float> BertEncoder::all_hidden_states(const std::vector<TokenId>& ids) const {
  const size_t T = ids.size(), H = dimension(), nh = size_t(cfg_.num_heads), d = size_t(cfg_.head_dim),
               F = size_t(cfg_.intermediate_size);
  const float eps = float(cfg_.norm_eps);
  std::vector<float> x(T * H);
  embed_tokens(ids, x.data());
  std::vector<float> all((size_t(cfg_.num_layers) + 1) * T * H);
  std::vector<float> qkv(T * 3 * H), ctx(T * H), tmp(T * H), inter(T * F);
  const std::vector<size_t> starts{0, T};
  cpu::ref::layer_norm(x.data(), T, H, emb_ln_w_.data(), emb_ln_b_.data(), eps);
  std::copy(x.begin(), x.end(), all.begin());
  size_t layer = 0;
  for (const auto& L : layers_) {
    cpu::ref::linear(x.data(), T, L.qkv, qkv.data());
    add_bias(qkv.data(), T, L.qkv_b);
    cpu::ref::encoder_attention(qkv.data(), starts, nh, d, ctx.data());
    cpu::ref::linear(ctx.data(), T, L.o, tmp.data());
    cpu::ref::residual_layer_norm(x.data(), tmp.data(), L.o_b.data(), T, H, L.ln1_w.data(), L.ln1_b.data(), eps);
    cpu::ref::linear(x.data(), T, L.inter, inter.data());
    add_bias(inter.data(), T, L.inter_b);
    cpu::ref::gelu(inter.data(), inter.size());
    cpu::ref::linear(inter.data(), T, L.out, tmp.data());
    cpu::ref::residual_layer_norm(x.data(), tmp.data(), L.out_b.data(), T, H, L.ln2_w.data(), L.ln2_b.data(), eps);
    std::copy(x.begin(), x.end(), all.begin() + std::ptrdiff_t(++layer * T * H));
  }
  return all;
}

void BertEncoder::encode_batch(const std::vector<std::vector<TokenId>>& seqs, size_t layers,
                               const std::function<void(size_t, const float*)>& on_state) const {
  const size_t H = dimension(), nh = size_t(cfg_.num_heads), d = size_t(cfg_.head_dim),
               F = size_t(cfg_.intermediate_size);
  if (layers > layers_.size())
    throw Error(fmt::format("BERT: {} layers asked of a {}-layer encoder", layers, layers_.size()));
  const float eps = float(cfg_.norm_eps);
  std::vector<size_t> starts{0};
  for (const auto& ids : seqs) starts.push_back(starts.back() + ids.size());
  const size_t T = starts.back();
  if (T == 0) return;
  std::vector<float> x(T * H), qkv(T * 3 * H), ctx(T * H), tmp(T * H), inter(T * F);
  for (size_t s = 0; s < seqs.size(); ++s) embed_tokens(seqs[s], x.data() + starts[s] * H);
  cpu::fast::layer_norm(x.data(), T, H, emb_ln_w_.data(), emb_ln_b_.data(), eps);
  on_state(0, x.data());
  for (size_t l = 0; l < layers; ++l) {
    const Layer& L = layers_[l];
    cpu::fast::linear(x.data(), T, L.qkv, qkv.data());
    add_bias(qkv.data(), T, L.qkv_b);
    cpu::fast::encoder_attention(qkv.data(), starts, nh, d, ctx.data());
    cpu::fast::linear(ctx.data(), T, L.o, tmp.data());
    cpu::fast::residual_layer_norm(x.data(), tmp.data(), L.o_b.data(), T, H, L.ln1_w.data(), L.ln1_b.data(), eps);
    cpu::fast::linear(x.data(), T, L.inter, inter.data());
    add_bias(inter.data(), T, L.inter_b);
    cpu::fast::gelu(inter.data(), inter.size());
    cpu::fast::linear(inter.data(), T, L.out, tmp.data());
    cpu::fast::residual_layer_norm(x.data(), tmp.data(), L.out_b.data(), T, H, L.ln2_w.data(), L.ln2_b.data(), eps);
    on_state(l + 1, x.data());
  }
}

std::vector<std::vector<size_t>> token_batches(const std::vector<size_t>& lengths, size_t budget) {
  std::vector<std::vector<size_t>> batches;
  size_t tokens = 0;
  for (size_t i = 0; i < lengths.size(); ++i) {
    if (batches.empty() || tokens + lengths[i] > budget) {
      if (batches.empty() || !batches.back().empty()) batches.emplace_back();
      tokens = 0;
    }
    batches.back().push_back(i);
    tokens += lengths[i];
  }
  return batches;
}

std::vector<float> BertEncoder::embed(const std::vector<std::string>& texts) const {
  const size_t H = dimension();
  std::vector<float> out(texts.size() * H);
  std::vector<std::vector<TokenId>> ids(texts.size());
  cpu::parallel_for(texts.size(), [&](size_t b, size_t e) {
    for (size_t s = b; s < e; ++s) ids[s] = tokenize(texts[s]);
  });
  std::vector<size_t> lengths;
  for (const auto& v : ids) lengths.push_back(v.size());
  for (const auto& batch : token_batches(lengths, kBatchTokens)) {
    std::vector<std::vector<TokenId>> seqs;
    for (size_t s : batch) seqs.push_back(std::move(ids[s]));
    encode_batch(seqs, layers_.size(), [&](size_t layer, const float* h) {
      if (layer != layers_.size()) return;
      size_t row = 0;
      for (size_t j = 0; j < batch.size(); ++j) {
        const size_t T = seqs[j].size();
        const float* hs = h + row * H;
        row += T;
        float* dst = &out[batch[j] * H];
        for (size_t i = 0; i < H; ++i) {
          float v = pooling_ == Pooling::Max ? -INFINITY : 0.0f;
          if (pooling_ == Pooling::Cls) v = hs[i];
          else
            for (size_t t = 0; t < T; ++t) v = pooling_ == Pooling::Max ? std::max(v, hs[t * H + i]) : v + hs[t * H + i];
          if (pooling_ == Pooling::Mean) v /= float(T);
          if (pooling_ == Pooling::MeanSqrtLen) v /= std::sqrt(float(T));
          dst[i] = v;
        }
        if (normalize_) {
          double norm = 0;
          for (size_t i = 0; i < H; ++i) norm += double(dst[i]) * dst[i];
          const float inv = float(1.0 / std::max(std::sqrt(norm), 1e-12));
          for (size_t i = 0; i < H; ++i) dst[i] *= inv;
        }
      }
    });
  }
  return out;
}

}  // namespace pivotmt
