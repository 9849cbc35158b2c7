#include "train/lora_llama.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backends/backend.h"
#include "backends/cpu/thread_pool.h"
#include "backends/random_fill.h"
#include "core/dtype.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "models/llama_model.h"
#include "models/weights.h"

namespace pivotmt {

using train::gemm;

const char* base_weights_name(BaseWeights b) {
  switch (b) {
    case BaseWeights::F32: return "f32";
    case BaseWeights::F16: return "f16";
    case BaseWeights::NF4: return "nf4";
  }
  return "?";
}

Checkpointing parse_checkpointing(const std::string& s) {
  if (s == "auto") return Checkpointing::Auto;
  if (s == "always") return Checkpointing::Always;
  if (s == "never") return Checkpointing::Never;
  throw Error(fmt::format("gradient checkpointing '{}': expected auto, always or never", s));
}

BaseWeights parse_base_weights(const std::string& s) {
  if (s == "f32") return BaseWeights::F32;
  if (s == "f16") return BaseWeights::F16;
  if (s == "nf4") return BaseWeights::NF4;
  throw Error(fmt::format("base weights '{}': expected f32, f16 or nf4", s));
}

const float* FrozenMatrix::as_f32(std::vector<float>& scratch) const {
  if (storage == BaseWeights::F32) return f32.data();
  if (scratch.size() < out * in) scratch.resize(out * in);
  rows_f32(0, out, scratch.data());
  return scratch.data();
}

void FrozenMatrix::rows_f32(size_t r0, size_t r1, float* dst) const {
  switch (storage) {
    case BaseWeights::F32: std::memcpy(dst, f32.data() + r0 * in, (r1 - r0) * in * sizeof(float)); break;
    case BaseWeights::F16: convert_floats(DType::F16, f16.data() + r0 * in, DType::F32, dst, (r1 - r0) * in); break;
    case BaseWeights::NF4: nf4::dequantize(q, r0 * in, r1 * in, dst); break;
  }
}

size_t FrozenMatrix::bytes() const {
  return storage == BaseWeights::F32 ? out * in * 4 : storage == BaseWeights::F16 ? out * in * 2 : q.bytes();
}

size_t TrainSequence::target_count() const {
  size_t n = 0;
  for (size_t t = 1; t < target.size(); ++t) n += target[t] != 0;
  return n;
}

namespace {
void grow(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}
}  // namespace

struct LoraLlama::Layer {
  std::vector<float> attn_norm, mlp_norm;
  FrozenMatrix proj[7];  // in llama_lora_modules order: q k v o gate up down
};

// One layer's activations for a sequence of T tokens (what its backward reads).
struct LoraLlama::Activations {
  std::vector<float> a, rinv1, q, k, v, attn, lse, x1, tmp, b, rinv2, g, u, m;
  // Sized for at least T rows, kept between sequences (no allocation per pass); every
  // buffer is written before it is read.
  void size(const ModelConfig& c, size_t T) {
    const size_t H = size_t(c.hidden_size), F = size_t(c.intermediate_size);
    const size_t qd = size_t(c.num_heads * c.head_dim), kvd = size_t(c.num_kv_heads * c.head_dim);
    for (auto* v : {&a, &x1, &tmp, &b}) grow(*v, T * H);
    for (auto* v : {&q, &attn}) grow(*v, T * qd);
    for (auto* v : {&k, &this->v}) grow(*v, T * kvd);
    for (auto* v : {&g, &u, &m}) grow(*v, T * F);
    grow(rinv1, T);
    grow(rinv2, T);
    grow(lse, size_t(c.num_heads) * T);
  }
  static size_t floats_per_token(const ModelConfig& c) {
    const size_t H = size_t(c.hidden_size), F = size_t(c.intermediate_size);
    return 4 * H + 2 * size_t(c.num_heads * c.head_dim) + 2 * size_t(c.num_kv_heads * c.head_dim) + 3 * F +
           size_t(c.num_heads) + 2;
  }
};

// A layer's gradient buffers (shared by all layers: backward runs one layer at a time).
struct LoraLlama::Grads {
  std::vector<float> dx1, da, dq, dk, dv, dattn, db, dg, du, dm;
  void size(const ModelConfig& c, size_t T) {
    const size_t H = size_t(c.hidden_size), F = size_t(c.intermediate_size);
    const size_t qd = size_t(c.num_heads * c.head_dim), kvd = size_t(c.num_kv_heads * c.head_dim);
    for (auto* v : {&dx1, &da, &db}) grow(*v, T * H);
    for (auto* v : {&dq, &dattn}) grow(*v, T * qd);
    for (auto* v : {&dk, &dv}) grow(*v, T * kvd);
    for (auto* v : {&dg, &du, &dm}) grow(*v, T * F);
  }
};

namespace {

FrozenMatrix load_frozen(const Checkpoint& ckpt, const std::string& name, BaseWeights storage) {
  const auto& info = ckpt.at(name);
  FrozenMatrix m;
  m.out = size_t(info.shape.at(0));
  m.in = info.shape.size() > 1 ? size_t(info.shape[1]) : 1;
  m.storage = storage;
  auto values = ckpt.load_f32(name);
  switch (storage) {
    case BaseWeights::F32: m.f32 = std::move(values); break;
    case BaseWeights::F16:
      m.f16.resize(values.size());
      convert_floats(DType::F32, values.data(), DType::F16, m.f16.data(), values.size());
      break;
    case BaseWeights::NF4: m.q = nf4::quantize(values, true); break;
  }
  return m;
}

// Dropout masks drawn from (key, layer, module, element) alone: the same mask when a
// layer is recomputed in backward, or when a resumed run replays a step.
uint64_t mask_seed(uint64_t key, size_t layer, size_t module) {
  return random_fill::splitmix64(key ^ random_fill::splitmix64(0x4c6f5241ull + layer * 16 + module));
}
// Keep element i unless its 16-bit uniform falls below `threshold` = round(p · 65536) (the
// dropout probability in steps of 1/65536); four elements per splitmix64 draw.
bool keep(uint64_t seed, size_t i, uint32_t threshold) {
  return uint32_t((random_fill::splitmix64(seed + i / 4) >> (16 * (i % 4))) & 0xffff) >= threshold;
}
uint32_t drop_threshold(float p) { return uint32_t(std::lround(double(p) * 65536.0)); }

void add_rows(const float* a, const float* b, size_t n, float* out) {  // out = a + b
  cpu::parallel_for(n, [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; ++i) out[i] = a[i] + b[i];
  });
}

}  // namespace

LoraLlama::LoraLlama(const std::string& dir, BaseWeights base, train::Kernels kernels)
    : kernels_(kernels), grads_buf_(std::make_unique<Grads>()) {
  cfg_ = load_decoder_config(dir, "fine-tuning");
  Checkpoint ckpt(dir);
  verify_weights(cfg_, ckpt);
  layers_.resize(size_t(cfg_.num_layers));
  const auto modules = llama_lora_modules(cfg_);
  for (size_t l = 0; l < layers_.size(); ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    layers_[l].attn_norm = ckpt.load_f32(p + "input_layernorm.weight");
    layers_[l].mlp_norm = ckpt.load_f32(p + "post_attention_layernorm.weight");
    for (size_t i = 0; i < modules.size(); ++i)
      layers_[l].proj[i] = load_frozen(ckpt, p + modules[i].path + ".weight", base);
  }
  final_norm_ = ckpt.load_f32("model.norm.weight");
  // Embedding and output layer stay unquantised (bitsandbytes quantises only the
  // projections), in F32 as prepare_model_for_kbit_training casts them.
  lm_head_ = load_frozen(ckpt, cfg_.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight", BaseWeights::F32);
  if (!cfg_.tie_word_embeddings) embed_ = load_frozen(ckpt, "model.embed_tokens.weight", BaseWeights::F32);
  inv_freq_ = rope_inv_freq(cfg_);
  // Auto checkpointing keeps all activations while they take at most a quarter of the
  // memory available now.
  activation_budget_bytes_ = host_memory().available / 4;
}

LoraLlama::~LoraLlama() = default;
LoraLlama::LoraLlama(LoraLlama&&) noexcept = default;

size_t LoraLlama::base_bytes() const {
  size_t b = lm_head_.bytes() + embed_.bytes();
  for (const auto& l : layers_)
    for (const auto& m : l.proj) b += m.bytes();
  return b;
}

void LoraLlama::set_adapter(const LoraAdapter& a) {
  const auto modules = llama_lora_modules(cfg_);
  for (const auto& [key, p] : a.weights) {
    if (key.first >= layers_.size()) throw Error(fmt::format("adapter: layer {} beyond the model's {}", key.first, layers_.size()));
    const size_t index = lora_module_index(modules, key.second);
    if (index == modules.size()) throw Error(fmt::format("adapter: unknown module {}", key.second));
    const auto it = modules.begin() + long(index);
    if (p.A.size() != size_t(a.config.r) * it->in || p.B.size() != it->out * size_t(a.config.r))
      throw Error(fmt::format("adapter: layer {} {} has the wrong shape for r = {}", key.first, key.second, a.config.r));
  }
  adapter_ = a;
  grads_ = a;
  scaling_ = a.config.scaling();
  dropout_ = float(a.config.dropout);
  zero_grad();
  bind_lora();
}

void LoraLlama::bind_lora() {
  const auto modules = llama_lora_modules(cfg_);
  lora_.assign(layers_.size(), std::vector<Lora>(modules.size()));
  for (auto& [key, p] : adapter_.weights) {
    const size_t m = lora_module_index(modules, key.second);
    lora_[key.first][m] = {&p, &grads_.weights.at(key)};
  }
}

void LoraLlama::zero_grad() {
  for (auto& [key, p] : grads_.weights) {
    std::fill(p.A.begin(), p.A.end(), 0.0f);
    std::fill(p.B.begin(), p.B.end(), 0.0f);
  }
}

namespace {

// xd = dropout(x) for the LoRA branch: x / (1 - p) where the mask keeps, else 0.
void dropped(const float* x, size_t n, uint64_t seed, float p, float* xd) {
  const uint32_t threshold = drop_threshold(p);
  const float s = 1.0f / (1.0f - p);
  cpu::parallel_for(n, [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; ++i) xd[i] = keep(seed, i, threshold) ? x[i] * s : 0.0f;
  });
}

}  // namespace

void LoraLlama::linear_forward(const FrozenMatrix& W, const Lora& lora, size_t layer, size_t module, const float* x,
                               size_t T, float* y, uint64_t key, bool dropout) {
  const float* w = W.as_f32(scratch_w_);
  gemm(kernels_, false, true, T, W.out, W.in, 1.0f, x, W.in, w, W.in, 0.0f, y, W.out);
  if (!lora.w) return;
  const size_t r = size_t(adapter_.config.r);
  const float* xin = x;
  if (dropout && dropout_ > 0) {
    grow(lora_x_, T * W.in);
    dropped(x, T * W.in, mask_seed(key, layer, module), dropout_, lora_x_.data());
    xin = lora_x_.data();
  }
  grow(lora_h_, T * r);
  gemm(kernels_, false, true, T, r, W.in, 1.0f, xin, W.in, lora.w->A.data(), W.in, 0.0f, lora_h_.data(), r);
  gemm(kernels_, false, true, T, W.out, r, scaling_, lora_h_.data(), r, lora.w->B.data(), r, 1.0f, y, W.out);
}

void LoraLlama::linear_backward(const FrozenMatrix& W, const Lora& lora, size_t layer, size_t module, const float* x,
                                size_t T, const float* dy, float* dx, uint64_t key, bool dropout) {
  const float* w = W.as_f32(scratch_w_);
  gemm(kernels_, false, false, T, W.in, W.out, 1.0f, dy, W.out, w, W.in, 1.0f, dx, W.in);  // dx += dy W
  if (!lora.w) return;
  const size_t r = size_t(adapter_.config.r);
  const bool drop = dropout && dropout_ > 0;
  const uint64_t seed = mask_seed(key, layer, module);
  const float* xin = x;
  if (drop) {
    grow(lora_x_, T * W.in);
    dropped(x, T * W.in, seed, dropout_, lora_x_.data());
    xin = lora_x_.data();
  }
  grow(lora_h_, T * r);
  grow(lora_dh_, T * r);
  grow(lora_dx_, T * W.in);
  float *h = lora_h_.data(), *dh = lora_dh_.data(), *dxd = lora_dx_.data();
  gemm(kernels_, false, true, T, r, W.in, 1.0f, xin, W.in, lora.w->A.data(), W.in, 0.0f, h, r);             // h = xd Aᵀ
  gemm(kernels_, true, false, W.out, r, T, scaling_, dy, W.out, h, r, 1.0f, lora.g->B.data(), r);           // dB += s dyᵀ h
  gemm(kernels_, false, false, T, r, W.out, scaling_, dy, W.out, lora.w->B.data(), r, 0.0f, dh, r);         // dh = s dy B
  gemm(kernels_, true, false, r, W.in, T, 1.0f, dh, r, xin, W.in, 1.0f, lora.g->A.data(), W.in);            // dA += dhᵀ xd
  gemm(kernels_, false, false, T, W.in, r, 1.0f, dh, r, lora.w->A.data(), W.in, 0.0f, dxd, W.in);           // dxd = dh A
  // dx += dropout'(dxd): the kept positions, scaled as in forward.
  const uint32_t threshold = drop_threshold(dropout_);
  const float s = drop ? 1.0f / (1.0f - dropout_) : 1.0f;
  cpu::parallel_for(T * W.in, [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; ++i)
      if (!drop || keep(seed, i, threshold)) dx[i] += dxd[i] * s;
  });
}

void LoraLlama::layer_forward(size_t l, const float* x, size_t T, Activations& a, uint64_t key, bool dropout, float* x_out) {
  const auto& L = layers_[l];
  const size_t H = size_t(cfg_.hidden_size), nh = size_t(cfg_.num_heads), nkv = size_t(cfg_.num_kv_heads);
  const size_t d = size_t(cfg_.head_dim), F = size_t(cfg_.intermediate_size);
  const float eps = float(cfg_.norm_eps);
  const size_t window = cfg_.sliding_window ? size_t(*cfg_.sliding_window) : 0;
  const auto& lo = lora_.at(l);
  train::rmsnorm_forward(x, L.attn_norm.data(), T, H, eps, a.a.data(), a.rinv1.data());
  linear_forward(L.proj[0], lo[0], l, 0, a.a.data(), T, a.q.data(), key, dropout);
  linear_forward(L.proj[1], lo[1], l, 1, a.a.data(), T, a.k.data(), key, dropout);
  linear_forward(L.proj[2], lo[2], l, 2, a.a.data(), T, a.v.data(), key, dropout);
  train::rope_apply(a.q.data(), T, nh * d, nh, d, rope_, false);
  train::rope_apply(a.k.data(), T, nkv * d, nkv, d, rope_, false);
  train::attention_forward(kernels_, a.q.data(), a.k.data(), a.v.data(), T, nh, nkv, d, window, a.attn.data(), a.lse.data());
  linear_forward(L.proj[3], lo[3], l, 3, a.attn.data(), T, a.tmp.data(), key, dropout);
  add_rows(x, a.tmp.data(), T * H, a.x1.data());
  train::rmsnorm_forward(a.x1.data(), L.mlp_norm.data(), T, H, eps, a.b.data(), a.rinv2.data());
  linear_forward(L.proj[4], lo[4], l, 4, a.b.data(), T, a.g.data(), key, dropout);
  linear_forward(L.proj[5], lo[5], l, 5, a.b.data(), T, a.u.data(), key, dropout);
  train::silu_mul_forward(a.g.data(), a.u.data(), T * F, a.m.data());
  linear_forward(L.proj[6], lo[6], l, 6, a.m.data(), T, a.tmp.data(), key, dropout);
  add_rows(a.x1.data(), a.tmp.data(), T * H, x_out);
}

void LoraLlama::layer_backward(size_t l, const float* x, size_t T, Activations& a, Grads& gr, uint64_t key, bool dropout,
                               float* dx) {
  const auto& L = layers_[l];
  const size_t H = size_t(cfg_.hidden_size), nh = size_t(cfg_.num_heads), nkv = size_t(cfg_.num_kv_heads);
  const size_t d = size_t(cfg_.head_dim), F = size_t(cfg_.intermediate_size);
  const size_t window = cfg_.sliding_window ? size_t(*cfg_.sliding_window) : 0;
  const auto& lo = lora_.at(l);
  auto zero = [T](std::vector<float>& v, size_t width) { std::fill(v.begin(), v.begin() + long(T * width), 0.0f); };
  const size_t qd = nh * d, kvd = nkv * d;
  // MLP block: x_out = x1 + down(silu(gate(b)) * up(b)), b = norm(x1).
  std::copy(dx, dx + T * H, gr.dx1.begin());
  zero(gr.dm, F);
  linear_backward(L.proj[6], lo[6], l, 6, a.m.data(), T, dx, gr.dm.data(), key, dropout);
  zero(gr.dg, F);
  zero(gr.du, F);
  train::silu_mul_backward(a.g.data(), a.u.data(), gr.dm.data(), T * F, gr.dg.data(), gr.du.data());
  zero(gr.db, H);
  linear_backward(L.proj[4], lo[4], l, 4, a.b.data(), T, gr.dg.data(), gr.db.data(), key, dropout);
  linear_backward(L.proj[5], lo[5], l, 5, a.b.data(), T, gr.du.data(), gr.db.data(), key, dropout);
  train::rmsnorm_backward(a.x1.data(), L.mlp_norm.data(), a.rinv2.data(), gr.db.data(), T, H, gr.dx1.data());
  // Attention block: x1 = x + o(attention(rope(q(a)), rope(k(a)), v(a))), a = norm(x).
  zero(gr.dattn, qd);
  linear_backward(L.proj[3], lo[3], l, 3, a.attn.data(), T, gr.dx1.data(), gr.dattn.data(), key, dropout);
  zero(gr.dq, qd);
  zero(gr.dk, kvd);
  zero(gr.dv, kvd);
  train::attention_backward(kernels_, a.q.data(), a.k.data(), a.v.data(), a.attn.data(), gr.dattn.data(), a.lse.data(), T,
                            nh, nkv, d, window, gr.dq.data(), gr.dk.data(), gr.dv.data());
  train::rope_apply(gr.dq.data(), T, nh * d, nh, d, rope_, true);
  train::rope_apply(gr.dk.data(), T, nkv * d, nkv, d, rope_, true);
  zero(gr.da, H);
  linear_backward(L.proj[0], lo[0], l, 0, a.a.data(), T, gr.dq.data(), gr.da.data(), key, dropout);
  linear_backward(L.proj[1], lo[1], l, 1, a.a.data(), T, gr.dk.data(), gr.da.data(), key, dropout);
  linear_backward(L.proj[2], lo[2], l, 2, a.a.data(), T, gr.dv.data(), gr.da.data(), key, dropout);
  std::copy(gr.dx1.begin(), gr.dx1.begin() + long(T * H), dx);
  train::rmsnorm_backward(x, L.attn_norm.data(), a.rinv1.data(), gr.da.data(), T, H, dx);
}

double LoraLlama::run(const TrainSequence* s, const std::vector<int32_t>& tokens, float scale, bool backward,
                      uint64_t key, std::vector<float>* logits_out) {
  if (lora_.empty()) throw Error("LoraLlama: no adapter set");
  const size_t T = tokens.size(), H = size_t(cfg_.hidden_size), V = size_t(cfg_.vocab_size), L = layers_.size();
  if (T == 0) return 0;
  for (size_t t = 0; t < T; ++t)
    if (tokens[t] < 0 || size_t(tokens[t]) >= V)
      throw Error(fmt::format("token {} at position {} is outside the vocabulary ({} ids)", tokens[t], t, V));
  const bool dropout = backward;
  // Each layer's input, kept for the recomputation in backward: [L + 1][T, H].
  grow(xs_, (L + 1) * T * H);
  std::vector<float>& xs = xs_;
  const FrozenMatrix& table = cfg_.tie_word_embeddings ? lm_head_ : embed_;
  for (size_t t = 0; t < T; ++t) table.rows_f32(size_t(tokens[t]), size_t(tokens[t]) + 1, &xs[t * H]);
  rope_ = train::rope_tables(inv_freq_, T);
  // Keep every layer's activations (backward reads them) when they fit the memory budget;
  // otherwise keep one layer's and recompute each layer in backward (checkpointing). Both
  // give the same bits: the recomputation repeats the same operations.
  bool keep_all = false;
  if (backward && checkpointing_ != Checkpointing::Always) {
    const size_t bytes = L * T * Activations::floats_per_token(cfg_) * sizeof(float);
    keep_all = checkpointing_ == Checkpointing::Never || bytes <= activation_budget_bytes_;
  }
  if (acts_.size() < (keep_all ? L : 1)) acts_.resize(keep_all ? L : 1);
  for (size_t i = 0; i < (keep_all ? L : 1); ++i) acts_[i].size(cfg_, T);
  for (size_t l = 0; l < L; ++l)
    layer_forward(l, &xs[l * T * H], T, acts_[keep_all ? l : 0], key, dropout, &xs[(l + 1) * T * H]);

  std::vector<float> hn(T * H), rinv(T), dhn(backward ? T * H : 0);
  const float* xL = &xs[L * T * H];
  train::rmsnorm_forward(xL, final_norm_.data(), T, H, float(cfg_.norm_eps), hn.data(), rinv.data());
  std::vector<int32_t> labels(T, -100);
  if (s)
    for (size_t t = 0; t + 1 < T; ++t)
      if (s->target[t + 1]) labels[t] = tokens[t + 1];
  // Logits a block of rows at a time (a [T, V] F32 matrix would be GBs for long sequences).
  const size_t chunk = std::max<size_t>(1, std::min<size_t>(T, (size_t(64) << 20) / (V * sizeof(float))));
  std::vector<float> logits(chunk * V);
  if (logits_out) logits_out->resize(T * V);
  double loss = 0;
  for (size_t r0 = 0; r0 < T; r0 += chunk) {
    const size_t rows = std::min(chunk, T - r0);
    gemm(kernels_, false, true, rows, V, H, 1.0f, &hn[r0 * H], H, lm_head_.f32.data(), H, 0.0f, logits.data(), V);
    if (logits_out) std::copy(logits.begin(), logits.begin() + long(rows * V), logits_out->begin() + long(r0 * V));
    if (!s) continue;
    loss += train::cross_entropy(logits.data(), &labels[r0], rows, V, scale);
    if (backward) gemm(kernels_, false, false, rows, H, V, 1.0f, logits.data(), V, lm_head_.f32.data(), H, 0.0f, &dhn[r0 * H], H);
  }
  if (!backward) return loss;

  std::vector<float> dx(T * H, 0.0f), out;
  grads_buf_->size(cfg_, T);
  train::rmsnorm_backward(xL, final_norm_.data(), rinv.data(), dhn.data(), T, H, dx.data());
  for (size_t l = L; l-- > 0;) {
    if (!keep_all) {
      out.resize(T * H);
      layer_forward(l, &xs[l * T * H], T, acts_[0], key, dropout, out.data());  // recompute (checkpointing)
    }
    layer_backward(l, &xs[l * T * H], T, acts_[keep_all ? l : 0], *grads_buf_, key, dropout, dx.data());
  }
  return loss;
}

double LoraLlama::forward_backward(const TrainSequence& s, float scale, uint64_t dropout_key) {
  if (s.target.size() != s.tokens.size()) throw Error("training sequence: one target flag per token expected");
  return run(&s, s.tokens, scale, true, dropout_key, nullptr);
}

double LoraLlama::loss(const TrainSequence& s) {
  if (s.target.size() != s.tokens.size()) throw Error("training sequence: one target flag per token expected");
  return run(&s, s.tokens, 0.0f, false, 0, nullptr);
}

std::vector<float> LoraLlama::logits(const std::vector<int32_t>& tokens) {
  std::vector<float> out;
  run(nullptr, tokens, 0.0f, false, 0, &out);
  return out;
}

}  // namespace pivotmt
