#include "models/llama_model.h"

#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "core/error.h"
#include "io/checkpoint.h"
#include "models/weights.h"

namespace pivotmt {

size_t KvCache::bytes() const {
  size_t b = 0;
  for (const auto& x : k) b += x.capacity() * 4;
  for (const auto& x : v) b += x.capacity() * 4;
  return b;
}

cpu::Rope make_rope(const ModelConfig& c) {
  cpu::Rope r;
  const size_t d = size_t(c.head_dim);
  for (size_t i = 0; i < d / 2; ++i) {
    // 1 / theta^(2i/d), float32 like torch's arange(0, d, 2).float() / d.
    const float exponent = float(2 * i) / float(d);
    r.inv_freq.push_back(1.0f / std::pow(float(c.rope_theta), exponent));
  }
  if (c.rope_scaling) {
    const auto& s = *c.rope_scaling;
    const double old_len = double(s.original_max_position_embeddings);
    const double low_wavelen = old_len / s.low_freq_factor, high_wavelen = old_len / s.high_freq_factor;
    for (auto& f : r.inv_freq) {
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        f = float(f / s.factor);
      } else {
        const double smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
        f = float((1.0 - smooth) * f / s.factor + smooth * f);
      }
    }
  }
  return r;
}

namespace {
cpu::Matrix load_matrix(const Checkpoint& ckpt, const std::string& name, DType storage) {
  const auto& info = ckpt.at(name);
  cpu::Matrix m;
  m.out = size_t(info.shape.at(0));
  m.in = info.shape.size() > 1 ? size_t(info.shape[1]) : 1;
  m.dtype = storage;
  if (storage == DType::I8) {
    const auto f = ckpt.load_f32(name);
    return cpu::quantize_int8(f.data(), m.out, m.in);
  }
  const auto raw = ckpt.raw(name);
  const size_t align = storage == DType::F32 ? 4 : 2;
  if (info.dtype == storage && reinterpret_cast<uintptr_t>(raw.data()) % align == 0) {
    m.borrowed = raw.data();  // stored as wanted: use the mapped pages in place
    return m;
  }
  if (storage == DType::F32) {
    m.f32 = ckpt.load_f32(name);
  } else {
    m.f16.resize(m.out * m.in);
    ckpt.load_into(name, DType::F16, std::as_writable_bytes(std::span(m.f16)));
  }
  return m;
}
}  // namespace

LlamaModel::LlamaModel(const std::string& dir, LoadOptions options) : options_(options) {
  cfg_ = load_model_config(dir);
  if (!cfg_.is_decoder()) throw UnsupportedError(fmt::format("{}: {} is not a decoder model", dir, architecture_name(cfg_.arch)));
  if (options.weights != DType::F32 && options.weights != DType::F16 && options.weights != DType::I8)
    throw UnsupportedError("weights can be stored as F32, F16 or INT8 (I8)");
  checkpoint_ = std::make_unique<Checkpoint>(dir);
  const Checkpoint& ckpt = *checkpoint_;
  verify_weights(cfg_, ckpt);
  // INT8 applies to the projections and the output layer; the embedding table is only
  // gathered from, so it stays F16.
  embed_ = load_matrix(ckpt, "model.embed_tokens.weight", options.weights == DType::I8 ? DType::F16 : options.weights);
  if (!cfg_.tie_word_embeddings) lm_head_ = load_matrix(ckpt, "lm_head.weight", options.weights);
  final_norm_ = ckpt.load_f32("model.norm.weight");
  for (int64_t l = 0; l < cfg_.num_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    Layer layer;
    layer.attn_norm = ckpt.load_f32(p + "input_layernorm.weight");
    layer.mlp_norm = ckpt.load_f32(p + "post_attention_layernorm.weight");
    layer.q = load_matrix(ckpt, p + "self_attn.q_proj.weight", options.weights);
    layer.k = load_matrix(ckpt, p + "self_attn.k_proj.weight", options.weights);
    layer.v = load_matrix(ckpt, p + "self_attn.v_proj.weight", options.weights);
    layer.o = load_matrix(ckpt, p + "self_attn.o_proj.weight", options.weights);
    layer.gate = load_matrix(ckpt, p + "mlp.gate_proj.weight", options.weights);
    layer.up = load_matrix(ckpt, p + "mlp.up_proj.weight", options.weights);
    layer.down = load_matrix(ckpt, p + "mlp.down_proj.weight", options.weights);
    layers_.push_back(std::move(layer));
  }
  rope_ = make_rope(cfg_);
}

LlamaModel::~LlamaModel() = default;

KvCache LlamaModel::new_cache() const {
  KvCache c;
  c.k.resize(size_t(cfg_.num_layers));
  c.v.resize(size_t(cfg_.num_layers));
  return c;
}

KvCache LlamaModel::prefix_of(const KvCache& from, size_t n) const {
  if (n > from.length) throw Error(fmt::format("prefix of {} positions from a cache of {}", n, from.length));
  const size_t width = size_t(cfg_.num_kv_heads) * size_t(cfg_.head_dim);  // floats per position
  KvCache c = new_cache();
  for (size_t l = 0; l < c.k.size(); ++l) {
    c.k[l].assign(from.k[l].begin(), from.k[l].begin() + long(n * width));
    c.v[l].assign(from.v[l].begin(), from.v[l].begin() + long(n * width));
  }
  c.length = n;
  return c;
}

void LlamaModel::truncate(KvCache& cache, size_t n) const {
  if (n >= cache.length) return;
  const size_t width = size_t(cfg_.num_kv_heads) * size_t(cfg_.head_dim);
  for (size_t l = 0; l < cache.k.size(); ++l) {
    cache.k[l].resize(n * width);
    cache.v[l].resize(n * width);
    cache.k[l].shrink_to_fit();
    cache.v[l].shrink_to_fit();
  }
  cache.length = n;
}

void LlamaModel::reserve(KvCache& cache, size_t positions) const {
  const size_t width = size_t(cfg_.num_kv_heads) * size_t(cfg_.head_dim);
  for (size_t l = 0; l < cache.k.size(); ++l) {
    cache.k[l].reserve(positions * width);
    cache.v[l].reserve(positions * width);
  }
}

size_t LlamaModel::kv_bytes_per_position() const {
  return 2 * size_t(cfg_.num_layers) * size_t(cfg_.num_kv_heads) * size_t(cfg_.head_dim) * sizeof(float);
}

size_t LlamaModel::streamed_bytes_per_token() const {
  const size_t row = embed_.bytes() / size_t(cfg_.vocab_size);
  return cfg_.tie_word_embeddings ? weight_bytes() : weight_bytes() - embed_.bytes() + row;
}

size_t LlamaModel::weight_bytes() const {
  size_t b = embed_.bytes() + lm_head_.bytes() + final_norm_.size() * 4;
  for (const auto& l : layers_)
    b += l.q.bytes() + l.k.bytes() + l.v.bytes() + l.o.bytes() + l.gate.bytes() + l.up.bytes() + l.down.bytes() +
         (l.attn_norm.size() + l.mlp_norm.size()) * 4;
  return b;
}

void LlamaModel::linear(const float* x, size_t T, const cpu::Matrix& w, float* y) const {
  if (options_.ops == OpsImpl::Reference) cpu::ref::linear(x, T, w, y);
  else cpu::fast::linear(x, T, w, y);
}

std::vector<float> LlamaModel::forward(std::vector<Input>& batch) {
  const bool ref = options_.ops == OpsImpl::Reference;
  const size_t H = size_t(cfg_.hidden_size), d = size_t(cfg_.head_dim), nh = size_t(cfg_.num_heads),
               nkv = size_t(cfg_.num_kv_heads), F = size_t(cfg_.intermediate_size), V = size_t(cfg_.vocab_size);
  const size_t window = cfg_.sliding_window ? size_t(*cfg_.sliding_window) : 0;
  size_t T = 0;
  for (const auto& in : batch) {
    if (in.tokens.empty()) throw Error("forward: a sequence with no new tokens");
    for (TokenId t : in.tokens)
      if (t < 0 || int64_t(t) >= cfg_.vocab_size)
        throw Error(fmt::format("token id {} is outside the vocabulary (0..{})", t, cfg_.vocab_size - 1));
    T += in.tokens.size();
  }
  // Activations: x [T, H]; positions [T].
  // xn doubles as the output of the o / down projections (its normed input is consumed
  // by then): one [T, H] buffer less at long prefills.
  // The MLP runs over chunks of rows, so its [rows, F] buffers stay small at long prefills.
  constexpr size_t kMlpRows = 256;
  const size_t mlp_rows = std::min(T, kMlpRows);
  std::vector<float> x(T * H), xn(T * H), q(T * nh * d), k(T * nkv * d), v(T * nkv * d), attn(T * nh * d),
      g(mlp_rows * F), u(mlp_rows * F), down(mlp_rows * H);
  std::vector<float>& proj = xn;
  std::vector<int64_t> positions(T);
  size_t row = 0;
  for (const auto& in : batch)
    for (size_t i = 0; i < in.tokens.size(); ++i, ++row) {
      positions[row] = int64_t(in.cache->length + i);
      const size_t id = size_t(in.tokens[i]);
      embed_.row_to_f32(id, &x[row * H]);
    }

  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& L = layers_[l];
    (ref ? cpu::ref::rmsnorm : cpu::fast::rmsnorm)(x.data(), L.attn_norm.data(), T, H, float(cfg_.norm_eps), xn.data());
    linear(xn.data(), T, L.q, q.data());
    linear(xn.data(), T, L.k, k.data());
    linear(xn.data(), T, L.v, v.data());
    (ref ? cpu::ref::rope : cpu::fast::rope)(q.data(), T, nh, d, positions.data(), rope_);
    (ref ? cpu::ref::rope : cpu::fast::rope)(k.data(), T, nkv, d, positions.data(), rope_);
    size_t r0 = 0;
    for (auto& in : batch) {
      const size_t n = in.tokens.size(), len = in.cache->length + n;
      auto& kc = in.cache->k[l];
      auto& vc = in.cache->v[l];
      kc.insert(kc.end(), k.begin() + long(r0 * nkv * d), k.begin() + long((r0 + n) * nkv * d));
      vc.insert(vc.end(), v.begin() + long(r0 * nkv * d), v.begin() + long((r0 + n) * nkv * d));
      (ref ? cpu::ref::attention : cpu::fast::attention)(&q[r0 * nh * d], kc.data(), vc.data(), n, len, nh, nkv, d,
                                                         window, &attn[r0 * nh * d]);
      r0 += n;
    }
    linear(attn.data(), T, L.o, proj.data());
    for (size_t i = 0; i < T * H; ++i) x[i] += proj[i];
    (ref ? cpu::ref::rmsnorm : cpu::fast::rmsnorm)(x.data(), L.mlp_norm.data(), T, H, float(cfg_.norm_eps), xn.data());
    for (size_t r = 0; r < T; r += mlp_rows) {
      const size_t n = std::min(mlp_rows, T - r);
      linear(&xn[r * H], n, L.gate, g.data());
      linear(&xn[r * H], n, L.up, u.data());
      (ref ? cpu::ref::silu_mul : cpu::fast::silu_mul)(g.data(), u.data(), n * F);
      linear(g.data(), n, L.down, down.data());
      for (size_t i = 0; i < n * H; ++i) x[r * H + i] += down[i];
    }
  }
  for (auto& in : batch) in.cache->length += in.tokens.size();

  // Final norm and output layer on the rows that need logits.
  std::vector<size_t> rows;
  row = 0;
  for (const auto& in : batch) {
    if (in.all_logits)
      for (size_t i = 0; i < in.tokens.size(); ++i) rows.push_back(row + i);
    else
      rows.push_back(row + in.tokens.size() - 1);
    row += in.tokens.size();
  }
  std::vector<float> h(rows.size() * H), hn(rows.size() * H), logits(rows.size() * V);
  for (size_t i = 0; i < rows.size(); ++i) std::memcpy(&h[i * H], &x[rows[i] * H], H * 4);
  (ref ? cpu::ref::rmsnorm : cpu::fast::rmsnorm)(h.data(), final_norm_.data(), rows.size(), H, float(cfg_.norm_eps), hn.data());
  linear(hn.data(), rows.size(), cfg_.tie_word_embeddings ? embed_ : lm_head_, logits.data());
  return logits;
}

}  // namespace pivotmt
