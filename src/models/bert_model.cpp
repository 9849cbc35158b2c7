#include "models/bert_model.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <mutex>

#include <fmt/format.h>

#include "backends/cpu/thread_pool.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "io/json_file.h"
#include "models/weights.h"

namespace pivotmt {
namespace fs = std::filesystem;

namespace {
cpu::Matrix f32_matrix(const Checkpoint& ckpt, const std::string& name) {
  const auto& info = ckpt.at(name);
  cpu::Matrix m;
  m.out = size_t(info.shape.at(0));
  m.in = size_t(info.shape.at(1));
  m.dtype = DType::F32;
  m.f32 = ckpt.load_f32(name);
  return m;
}

void layer_norm(float* x, size_t T, size_t H, const float* w, const float* b, float eps) {
  for (size_t t = 0; t < T; ++t) {
    float* r = x + t * H;
    double mean = 0, var = 0;
    for (size_t i = 0; i < H; ++i) mean += r[i];
    mean /= double(H);
    for (size_t i = 0; i < H; ++i) var += (r[i] - mean) * (r[i] - mean);
    var /= double(H);
    const float inv = float(1.0 / std::sqrt(var + double(eps)));
    for (size_t i = 0; i < H; ++i) r[i] = float(r[i] - mean) * inv * w[i] + b[i];
  }
}

// y = x W^T + b (one sequence: few rows, the single-thread reference-grade path is enough
// when sentences themselves run in parallel).
void affine(const float* x, size_t T, const cpu::Matrix& w, const std::vector<float>& b, float* y) {
  cpu::ref::linear(x, T, w, y);
  for (size_t t = 0; t < T; ++t)
    for (size_t o = 0; o < w.out; ++o) y[t * w.out + o] += b[o];
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
    L.q = f32_matrix(ckpt, lp + "attention.self.query.weight");
    L.k = f32_matrix(ckpt, lp + "attention.self.key.weight");
    L.v = f32_matrix(ckpt, lp + "attention.self.value.weight");
    L.o = f32_matrix(ckpt, lp + "attention.output.dense.weight");
    L.inter = f32_matrix(ckpt, lp + "intermediate.dense.weight");
    L.out = f32_matrix(ckpt, lp + "output.dense.weight");
    L.q_b = ckpt.load_f32(lp + "attention.self.query.bias");
    L.k_b = ckpt.load_f32(lp + "attention.self.key.bias");
    L.v_b = ckpt.load_f32(lp + "attention.self.value.bias");
    L.o_b = ckpt.load_f32(lp + "attention.output.dense.bias");
    L.inter_b = ckpt.load_f32(lp + "intermediate.dense.bias");
    L.out_b = ckpt.load_f32(lp + "output.dense.bias");
    L.ln1_w = ckpt.load_f32(lp + "attention.output.LayerNorm.weight");
    L.ln1_b = ckpt.load_f32(lp + "attention.output.LayerNorm.bias");
    L.ln2_w = ckpt.load_f32(lp + "output.LayerNorm.weight");
    L.ln2_b = ckpt.load_f32(lp + "output.LayerNorm.bias");
    layers_.push_back(std::move(L));
  }
  tokenizer_ = load_tokenizer(dir);
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

std::vector<float> BertEncoder::all_hidden_states(const std::vector<TokenId>& ids) const {
  const size_t T = ids.size(), H = size_t(cfg_.hidden_size), nh = size_t(cfg_.num_heads), d = size_t(cfg_.head_dim),
               F = size_t(cfg_.intermediate_size);
  if (T == 0) throw Error("BERT: no tokens");
  if (T > max_positions())
    throw Error(fmt::format("{}: {} tokens exceed the model's {} positions", cfg_.model_type, T, max_positions()));
  const float eps = float(cfg_.norm_eps);
  std::vector<float> all((size_t(cfg_.num_layers) + 1) * T * H);
  std::vector<float> x(T * H), q(T * H), k(T * H), v(T * H), ctx(T * H), tmp(T * H), inter(T * F);
  const size_t offset = size_t(cfg_.position_offset);
  for (size_t t = 0; t < T; ++t) {
    if (ids[t] < 0 || int64_t(ids[t]) >= cfg_.vocab_size)
      throw Error(fmt::format("{}: token id {} out of range (vocabulary {})", cfg_.model_type, ids[t], cfg_.vocab_size));
    for (size_t i = 0; i < H; ++i)
      x[t * H + i] = word_[size_t(ids[t]) * H + i] + position_[(t + offset) * H + i] + token_type_[i];
  }
  layer_norm(x.data(), T, H, emb_ln_w_.data(), emb_ln_b_.data(), eps);
  std::copy(x.begin(), x.end(), all.begin());
  size_t layer = 0;
  const float scale = 1.0f / std::sqrt(float(d));
  std::vector<float> scores(T);
  for (const auto& L : layers_) {
    affine(x.data(), T, L.q, L.q_b, q.data());
    affine(x.data(), T, L.k, L.k_b, k.data());
    affine(x.data(), T, L.v, L.v_b, v.data());
    for (size_t h = 0; h < nh; ++h)
      for (size_t t = 0; t < T; ++t) {  // bidirectional: every token sees every token
        float mx = -INFINITY;
        for (size_t j = 0; j < T; ++j) {
          float s = 0;
          for (size_t i = 0; i < d; ++i) s += q[t * H + h * d + i] * k[j * H + h * d + i];
          scores[j] = s * scale;
          mx = std::max(mx, scores[j]);
        }
        float sum = 0;
        for (size_t j = 0; j < T; ++j) sum += (scores[j] = std::exp(scores[j] - mx));
        for (size_t i = 0; i < d; ++i) {
          float acc = 0;
          for (size_t j = 0; j < T; ++j) acc += scores[j] * v[j * H + h * d + i];
          ctx[t * H + h * d + i] = acc / sum;
        }
      }
    affine(ctx.data(), T, L.o, L.o_b, tmp.data());
    for (size_t i = 0; i < T * H; ++i) x[i] += tmp[i];
    layer_norm(x.data(), T, H, L.ln1_w.data(), L.ln1_b.data(), eps);
    affine(x.data(), T, L.inter, L.inter_b, inter.data());
    for (auto& z : inter) z = 0.5f * z * (1.0f + std::erf(z / std::sqrt(2.0f)));  // exact GELU
    affine(inter.data(), T, L.out, L.out_b, tmp.data());
    for (size_t i = 0; i < T * H; ++i) x[i] += tmp[i];
    layer_norm(x.data(), T, H, L.ln2_w.data(), L.ln2_b.data(), eps);
    std::copy(x.begin(), x.end(), all.begin() + std::ptrdiff_t(++layer * T * H));
  }
  return all;
}

std::vector<float> BertEncoder::embed(const std::vector<std::string>& texts) const {
  const size_t H = dimension();
  std::vector<float> out(texts.size() * H);
  std::exception_ptr failure;
  std::mutex m;
  cpu::parallel_for(texts.size(), [&](size_t b, size_t e) {
    try {
      for (size_t s = b; s < e; ++s) {
        const auto ids = tokenize(texts[s]);
        const auto h = hidden_states(ids);
        const size_t T = ids.size();
        float* dst = &out[s * H];
        for (size_t i = 0; i < H; ++i) {
          float v = pooling_ == Pooling::Max ? -INFINITY : 0.0f;
          if (pooling_ == Pooling::Cls) v = h[i];
          else
            for (size_t t = 0; t < T; ++t) v = pooling_ == Pooling::Max ? std::max(v, h[t * H + i]) : v + h[t * H + i];
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
    } catch (...) {
      std::lock_guard lock(m);
      if (!failure) failure = std::current_exception();
    }
  });
  if (failure) std::rethrow_exception(failure);
  return out;
}

}  // namespace pivotmt
