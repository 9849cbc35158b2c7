#include "train/lora_llama.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "backends/backend.h"
#include "core/dtype.h"
#include "core/error.h"
#include "train/dropout_mask.h"
#include "io/checkpoint.h"
#include "models/llama_model.h"
#include "models/weights.h"

namespace pivotmt {

Checkpointing parse_checkpointing(const std::string& s) {
  if (s == "auto") return Checkpointing::Auto;
  if (s == "always") return Checkpointing::Always;
  if (s == "never") return Checkpointing::Never;
  throw Error(fmt::format("gradient checkpointing '{}': expected auto, always or never", s));
}

size_t TrainSequence::target_count() const {
  size_t n = 0;
  for (size_t t = 1; t < target.size(); ++t) n += target[t] != 0;
  return n;
}

Tensor& LoraLlama::grow(Tensor& t, size_t n) {
  if (t.empty() || t.numel() < n) t = dev_->buffer(n);
  return t;
}

struct LoraLlama::Layer {
  Tensor attn_norm, mlp_norm;  // [H] on the device
  FrozenMatrix proj[7];        // in llama_lora_modules order: q k v o gate up down (host copies: the CPU's)
  std::unique_ptr<train::DeviceFrozen> dev[7];
};

// One layer's activations for a sequence of T tokens (what its backward reads), on the
// device. Sized for at least T rows — the MLP's gate, up and product for all T rows when
// every layer's activations are kept (`mlp_kept`), else for one block —, kept between
// sequences (no allocation per pass); every buffer is written before it is read.
struct LoraLlama::Activations {
  Tensor a, rinv1, q, k, v, attn, lse, x1, tmp, b, rinv2, g, u, m;
  bool mlp_kept = false;  // g, u, m hold every row's (backward reads them), else a block's
  void size(LoraLlama& model, size_t T, bool keep_mlp) {
    mlp_kept = keep_mlp;
    const size_t mlp_rows = keep_mlp ? T : std::min(model.mlp_block_rows_, T);
    const ModelConfig& c = model.cfg_;
    const size_t H = size_t(c.hidden_size), F = size_t(c.intermediate_size);
    const size_t qd = size_t(c.num_heads * c.head_dim), kvd = size_t(c.num_kv_heads * c.head_dim);
    for (auto* t : {&a, &x1, &tmp, &b}) model.grow(*t, T * H);
    for (auto* t : {&q, &attn}) model.grow(*t, T * qd);
    for (auto* t : {&k, &this->v}) model.grow(*t, T * kvd);
    for (auto* t : {&g, &u, &m}) model.grow(*t, mlp_rows * F);
    model.grow(rinv1, T);
    model.grow(rinv2, T);
    model.grow(lse, size_t(c.num_heads) * T);
  }
  static size_t floats_per_token(const ModelConfig& c) {
    const size_t H = size_t(c.hidden_size), F = size_t(c.intermediate_size);
    return 4 * H + 2 * size_t(c.num_heads * c.head_dim) + 2 * size_t(c.num_kv_heads * c.head_dim) + 3 * F +
           size_t(c.num_heads) + 2;
  }
};

// A layer's gradient buffers (shared by all layers: backward runs one layer at a time;
// the MLP's for one block of `mlp_rows`).
struct LoraLlama::Grads {
  Tensor dx1, da, dq, dk, dv, dattn, db, dg, du, dm;
  void size(LoraLlama& model, size_t T, size_t mlp_rows) {
    const ModelConfig& c = model.cfg_;
    const size_t H = size_t(c.hidden_size), F = size_t(c.intermediate_size);
    const size_t qd = size_t(c.num_heads * c.head_dim), kvd = size_t(c.num_kv_heads * c.head_dim);
    for (auto* t : {&dx1, &da, &db}) model.grow(*t, T * H);
    for (auto* t : {&dq, &dattn}) model.grow(*t, T * qd);
    for (auto* t : {&dk, &dv}) model.grow(*t, T * kvd);
    for (auto* t : {&dg, &du, &dm}) model.grow(*t, mlp_rows * F);
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

// A host vector as a device tensor (uploaded).
Tensor to_device(train::TrainDevice& dev, const std::vector<float>& v) {
  Tensor t = dev.buffer(v.size());
  dev.upload(v.data(), v.size() * sizeof(float), t.data());
  return t;
}

}  // namespace

LoraLlama::LoraLlama(const std::string& dir, BaseWeights base, train::Kernels kernels, const Device& device,
                     train::BaseCompute compute)
    : dev_(train::make_train_device(device, kernels, compute)), grads_buf_(std::make_unique<Grads>()) {
  cfg_ = load_decoder_config(dir, "fine-tuning");
  Checkpoint ckpt(dir);
  verify_weights(cfg_, ckpt);
  layers_.resize(size_t(cfg_.num_layers));
  const auto modules = llama_lora_modules(cfg_);
  for (size_t l = 0; l < layers_.size(); ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    layers_[l].attn_norm = to_device(*dev_, ckpt.load_f32(p + "input_layernorm.weight"));
    layers_[l].mlp_norm = to_device(*dev_, ckpt.load_f32(p + "post_attention_layernorm.weight"));
    for (size_t i = 0; i < modules.size(); ++i) {
      layers_[l].proj[i] = load_frozen(ckpt, p + modules[i].path + ".weight", base);
      layers_[l].dev[i] = dev_->frozen(layers_[l].proj[i]);
      if (!on_host()) layers_[l].proj[i] = FrozenMatrix{};  // the device holds it now
    }
  }
  final_norm_ = to_device(*dev_, ckpt.load_f32("model.norm.weight"));
  // Embedding and output layer stay unquantised (bitsandbytes quantises only the
  // projections), in F32 as prepare_model_for_kbit_training casts them. On a GPU in F16 mode
  // an untied output layer is stored as F16: what each of its products would round it to
  // (the same bits), half the memory, no conversion per product. On a GPU an untied
  // embedding table stays in host memory: a sequence needs T of its V rows, gathered and
  // uploaded (T · H floats) — 0.5 GB of device memory saved for a 7B model.
  const bool tied = cfg_.tie_word_embeddings;
  const bool head_f16 = !on_host() && compute == train::BaseCompute::F16 && !tied;
  lm_head_ = load_frozen(ckpt, tied ? "model.embed_tokens.weight" : "lm_head.weight",
                         head_f16 ? BaseWeights::F16 : BaseWeights::F32);
  lm_head_dev_ = dev_->frozen(lm_head_);
  if (!tied) {
    embed_ = load_frozen(ckpt, "model.embed_tokens.weight", BaseWeights::F32);
    if (on_host()) embed_dev_ = dev_->frozen(embed_);
  }
  if (!on_host()) lm_head_ = FrozenMatrix{};  // the device holds it now
  inv_freq_ = rope_inv_freq(cfg_);
  // Auto checkpointing keeps all activations while they take at most a quarter of the
  // memory available now (the device's on a GPU).
  activation_budget_bytes_ =
      on_host() ? host_memory().available / 4 : cuda_device_info(device.index).free_memory / 4;
}

LoraLlama::~LoraLlama() = default;
LoraLlama::LoraLlama(LoraLlama&&) noexcept = default;

void LoraLlama::set_mlp_block_rows(size_t rows) {
  if (rows == 0 || rows % 4 != 0) throw Error(fmt::format("lora: MLP block rows must be a positive multiple of 4 (got {})", rows));
  mlp_block_rows_ = rows;
}

size_t LoraLlama::base_bytes() const {
  size_t b = lm_head_dev_->bytes + (embed_dev_ ? embed_dev_->bytes : 0);
  for (const auto& l : layers_)
    for (const auto& m : l.dev) b += m->bytes;
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
  opt_ = train::adamw_init(adapter_);
  moments_on_host_ = true;  // bind_lora zeroes the device's moments too
  bind_lora();
  zero_grad();
}

void LoraLlama::bind_lora() {
  const auto modules = llama_lora_modules(cfg_);
  lora_.assign(layers_.size(), std::vector<Lora>(modules.size()));
  if (on_host()) {
    // The tensors are views of the host vectors themselves.
    auto view = [](std::vector<float>& v) { return Tensor(Device{}, DType::F32, 1, v.size(), v.size(), nullptr, v.data()); };
    for (auto& [key, p] : adapter_.weights) {
      LoraPair& g = grads_.weights.at(key);
      lora_[key.first][lora_module_index(modules, key.second)] = {&p, &g, view(p.A), view(p.B), view(g.A), view(g.B)};
    }
    return;
  }
  // A GPU: parameters, gradients and AdamW's moments in four flat buffers of one layout
  // (modules in adapter_'s key order, A then B), so that the norm, clipping and AdamW are
  // one kernel each over all of them.
  flat_n_ = 0;
  for (const auto& [key, p] : adapter_.weights) flat_n_ += p.A.size() + p.B.size();
  auto flat = [&] { return Tensor(dev_->device(), DType::F32, std::max<size_t>(flat_n_, 1), 1); };
  params_ = flat();
  grads_flat_ = flat();
  moment1_ = flat();
  moment2_ = flat();
  dev_->zero(moment1_.as<float>(), flat_n_);
  dev_->zero(moment2_.as<float>(), flat_n_);
  size_t offset = 0;
  for (auto& [key, p] : adapter_.weights) {
    LoraPair& g = grads_.weights.at(key);
    const size_t a = p.A.size(), b = p.B.size();
    lora_[key.first][lora_module_index(modules, key.second)] = {
        &p, &g, params_.rows(offset, a), params_.rows(offset + a, b), grads_flat_.rows(offset, a),
        grads_flat_.rows(offset + a, b)};
    offset += a + b;
  }
  push_adapter();
}

template <class Fn>
void LoraLlama::for_each_lora(Fn&& fn) {
  for (auto& layer : lora_)
    for (auto& lo : layer)
      if (lo.w) fn(lo);
}

void LoraLlama::push_adapter() {
  adapter_on_host_ = true;
  if (on_host()) return;
  for_each_lora([&](Lora& lo) {
    dev_->upload(lo.w->A.data(), lo.w->A.size() * sizeof(float), lo.A.data());
    dev_->upload(lo.w->B.data(), lo.w->B.size() * sizeof(float), lo.B.data());
  });
}

void LoraLlama::pull_adapter() {
  if (adapter_on_host_) return;
  for_each_lora([&](Lora& lo) {
    dev_->download(lo.A.data(), lo.w->A.size() * sizeof(float), lo.w->A.data());
    dev_->download(lo.B.data(), lo.w->B.size() * sizeof(float), lo.w->B.data());
  });
  adapter_on_host_ = true;
}

LoraAdapter& LoraLlama::adapter() {
  pull_adapter();
  return adapter_;
}

LoraAdapter& LoraLlama::grads() {
  if (!grads_on_host_) {
    for_each_lora([&](Lora& lo) {
      dev_->download(lo.gA.data(), lo.g->A.size() * sizeof(float), lo.g->A.data());
      dev_->download(lo.gB.data(), lo.g->B.size() * sizeof(float), lo.g->B.data());
    });
    grads_on_host_ = true;
  }
  return grads_;
}

void LoraLlama::zero_grad() {
  for (auto& [key, p] : grads_.weights) {
    std::fill(p.A.begin(), p.A.end(), 0.0f);
    std::fill(p.B.begin(), p.B.end(), 0.0f);
  }
  if (!on_host()) dev_->zero(grads_flat_.as<float>(), flat_n_);
  grads_on_host_ = true;
}

double LoraLlama::grad_norm() {
  if (on_host()) return train::global_norm(grads_);
  return std::sqrt(dev_->sum_squares(grads_flat_.as<float>(), flat_n_));
}

void LoraLlama::optimizer_step(double norm, double max_norm, double lr, const train::AdamWConfig& c) {
  if (on_host()) {
    train::clip_gradients(grads_, norm, max_norm);
    train::adamw_step(adapter_, grads_, opt_, lr, c);
    return;
  }
  // The same floats as the CPU's functions above, applied where the adapter lives.
  const float coef = train::clip_coefficient(norm, max_norm);
  if (coef < 1.0f) dev_->scale(grads_flat_.as<float>(), flat_n_, coef);
  ++opt_.step;
  dev_->adamw(params_.as<float>(), grads_flat_.as<float>(), moment1_.as<float>(), moment2_.as<float>(), flat_n_,
              train::adamw_scalars(opt_.step, lr, c));
  adapter_on_host_ = false;
  grads_on_host_ = false;  // clipped on the device
  moments_on_host_ = false;
}

// Visits AdamW's moments of each module with the offset of its A in the flat buffers (the
// moments' maps have adapter_'s keys, so their order is the flat layout's).
template <class Fn>
void LoraLlama::for_each_moment(Fn&& fn) {
  size_t offset = 0;
  for (auto& [key, m] : opt_.m.weights) {
    LoraPair& v = opt_.v.weights.at(key);
    fn(m, v, offset);
    offset += m.A.size() + m.B.size();
  }
}

const train::AdamWState& LoraLlama::optimizer_state() {
  if (!moments_on_host_) {
    float *m1 = moment1_.as<float>(), *m2 = moment2_.as<float>();
    for_each_moment([&](LoraPair& m, LoraPair& v, size_t off) {
      const size_t a = m.A.size(), b = m.B.size();
      dev_->download(m1 + off, a * sizeof(float), m.A.data());
      dev_->download(m1 + off + a, b * sizeof(float), m.B.data());
      dev_->download(m2 + off, a * sizeof(float), v.A.data());
      dev_->download(m2 + off + a, b * sizeof(float), v.B.data());
    });
    moments_on_host_ = true;
  }
  return opt_;
}

void LoraLlama::set_optimizer_state(const train::AdamWState& st) {
  auto same_shape = [](const auto& map, const auto& key, const LoraPair& p) {
    const auto it = map.find(key);
    return it != map.end() && it->second.A.size() == p.A.size() && it->second.B.size() == p.B.size();
  };
  if (st.m.weights.size() != adapter_.weights.size() || st.v.weights.size() != adapter_.weights.size())
    throw Error(fmt::format("optimiser state: {} modules, the adapter has {}", st.m.weights.size(), adapter_.weights.size()));
  for (const auto& [key, p] : adapter_.weights)
    if (!same_shape(st.m.weights, key, p) || !same_shape(st.v.weights, key, p))
      throw Error(fmt::format("optimiser state: layer {} {} does not match the adapter", key.first, key.second));
  opt_ = st;
  moments_on_host_ = true;
  if (on_host()) return;
  float *m1 = moment1_.as<float>(), *m2 = moment2_.as<float>();
  for_each_moment([&](LoraPair& m, LoraPair& v, size_t off) {
    const size_t a = m.A.size(), b = m.B.size();
    dev_->upload(m.A.data(), a * sizeof(float), m1 + off);
    dev_->upload(m.B.data(), b * sizeof(float), m1 + off + a);
    dev_->upload(v.A.data(), a * sizeof(float), m2 + off);
    dev_->upload(v.B.data(), b * sizeof(float), m2 + off + a);
  });
}

namespace {

// The matrices' scratch (LoraLlama::weights_): up and down each have their own.
size_t weight_scratch_of(size_t module) { return module == 5 ? 1 : module == 6 ? 2 : 0; }

// The dropout mask of rows row0.. of a module's [T, in] input: dropout_mask.h draws four
// elements a value, so the elements from `first` on are the mask of seed + first / 4.
uint64_t mask_seed_from(uint64_t key, size_t layer, size_t module, size_t first) {
  if (first % 4 != 0) throw Error(fmt::format("lora: a block's dropout mask must start at a multiple of 4 (at {})", first));
  return train::mask_seed(key, layer, module) + first / 4;
}

}  // namespace

void LoraLlama::linear_forward(size_t layer, size_t module, const float* x, size_t T, float* y, uint64_t key,
                               bool dropout, size_t row0) {
  const train::DeviceFrozen& W = *layers_[layer].dev[module];
  const Lora& lora = lora_[layer][module];
  dev_->base_gemm(true, T, W.out, W.in, 1.0f, x, W.in, W, 0.0f, y, W.out, weights_[weight_scratch_of(module)]);  // y = x Wᵀ
  if (!lora.w) return;
  const size_t r = size_t(adapter_.config.r);
  const float* xin = x;
  if (dropout && dropout_ > 0) {
    dev_->dropout(x, T * W.in, mask_seed_from(key, layer, module, row0 * W.in), dropout_,
                  grow(lora_x_, T * W.in).as<float>());
    xin = lora_x_.as<float>();
  }
  float* h = grow(lora_h_, T * r).as<float>();
  dev_->gemm(false, true, T, r, W.in, 1.0f, xin, W.in, lora.A.as<float>(), W.in, 0.0f, h, r);
  dev_->gemm(false, true, T, W.out, r, scaling_, h, r, lora.B.as<float>(), r, 1.0f, y, W.out);
}

void LoraLlama::linear_backward(size_t layer, size_t module, const float* x, size_t T, const float* dy, float* dx,
                                uint64_t key, bool dropout, size_t row0) {
  const train::DeviceFrozen& W = *layers_[layer].dev[module];
  const Lora& lora = lora_[layer][module];
  dev_->base_gemm(false, T, W.in, W.out, 1.0f, dy, W.out, W, 1.0f, dx, W.in, weights_[weight_scratch_of(module)]);  // dx += dy W
  if (!lora.w) return;
  const size_t r = size_t(adapter_.config.r);
  const bool drop = dropout && dropout_ > 0;
  const uint64_t seed = mask_seed_from(key, layer, module, row0 * W.in);
  const float* xin = x;
  if (drop) {
    dev_->dropout(x, T * W.in, seed, dropout_, grow(lora_x_, T * W.in).as<float>());
    xin = lora_x_.as<float>();
  }
  float* h = grow(lora_h_, T * r).as<float>();
  float* dh = grow(lora_dh_, T * r).as<float>();
  float* dxd = grow(lora_dx_, T * W.in).as<float>();
  const float *A = lora.A.as<float>(), *B = lora.B.as<float>();
  dev_->gemm(false, true, T, r, W.in, 1.0f, xin, W.in, A, W.in, 0.0f, h, r);                    // h = xd Aᵀ
  dev_->gemm(true, false, W.out, r, T, scaling_, dy, W.out, h, r, 1.0f, lora.gB.as<float>(), r);  // dB += s dyᵀ h
  dev_->gemm(false, false, T, r, W.out, scaling_, dy, W.out, B, r, 0.0f, dh, r);                // dh = s dy B
  dev_->gemm(true, false, r, W.in, T, 1.0f, dh, r, xin, W.in, 1.0f, lora.gA.as<float>(), W.in);  // dA += dhᵀ xd
  dev_->gemm(false, false, T, W.in, r, 1.0f, dh, r, A, W.in, 0.0f, dxd, W.in);                  // dxd = dh A
  // dx += dropout'(dxd): the kept positions, scaled as in forward.
  dev_->add_dropped(dxd, T * W.in, seed, drop ? dropout_ : 0.0f, dx);
}

void LoraLlama::layer_forward(size_t l, const float* x, size_t T, Activations& a, uint64_t key, bool dropout, float* x_out,
                              bool mlp) {
  const auto& L = layers_[l];
  const size_t H = size_t(cfg_.hidden_size), nh = size_t(cfg_.num_heads), nkv = size_t(cfg_.num_kv_heads);
  const size_t d = size_t(cfg_.head_dim), F = size_t(cfg_.intermediate_size);
  const float eps = float(cfg_.norm_eps);
  const size_t window = cfg_.sliding_window ? size_t(*cfg_.sliding_window) : 0;
  auto f = [](const Tensor& t) { return t.as<float>(); };
  dev_->rmsnorm_forward(x, f(L.attn_norm), T, H, eps, f(a.a), f(a.rinv1));
  linear_forward(l, 0, f(a.a), T, f(a.q), key, dropout);
  linear_forward(l, 1, f(a.a), T, f(a.k), key, dropout);
  linear_forward(l, 2, f(a.a), T, f(a.v), key, dropout);
  dev_->rope_apply(f(a.q), T, nh * d, nh, d, false);
  dev_->rope_apply(f(a.k), T, nkv * d, nkv, d, false);
  dev_->attention_forward(f(a.q), f(a.k), f(a.v), T, nh, nkv, d, window, f(a.attn), f(a.lse));
  linear_forward(l, 3, f(a.attn), T, f(a.tmp), key, dropout);
  dev_->add(x, f(a.tmp), T * H, f(a.x1));
  dev_->rmsnorm_forward(f(a.x1), f(L.mlp_norm), T, H, eps, f(a.b), f(a.rinv2));
  if (!mlp) return;
  // MLP, a block of rows at a time: tmp = down(silu(gate(b)) * up(b)). The gate, up and
  // product stay in `a` for every row when it keeps them (no checkpointing), else they are
  // one block's, recomputed in backward.
  for (size_t r0 = 0; r0 < T; r0 += mlp_block_rows_) {
    const size_t rows = std::min(mlp_block_rows_, T - r0), at = a.mlp_kept ? r0 * F : 0;
    float *g = f(a.g) + at, *u = f(a.u) + at, *m = f(a.m) + at;
    linear_forward(l, 4, f(a.b) + r0 * H, rows, g, key, dropout, r0);
    linear_forward(l, 5, f(a.b) + r0 * H, rows, u, key, dropout, r0);
    dev_->silu_mul_forward(g, u, rows * F, m);
    linear_forward(l, 6, m, rows, f(a.tmp) + r0 * H, key, dropout, r0);
  }
  dev_->add(f(a.x1), f(a.tmp), T * H, x_out);
}

void LoraLlama::layer_backward(size_t l, const float* x, size_t T, Activations& a, Grads& gr, uint64_t key, bool dropout,
                               float* dx) {
  const auto& L = layers_[l];
  const size_t H = size_t(cfg_.hidden_size), nh = size_t(cfg_.num_heads), nkv = size_t(cfg_.num_kv_heads);
  const size_t d = size_t(cfg_.head_dim), F = size_t(cfg_.intermediate_size);
  const size_t window = cfg_.sliding_window ? size_t(*cfg_.sliding_window) : 0;
  auto f = [](const Tensor& t) { return t.as<float>(); };
  auto zero = [&](const Tensor& t, size_t n) { dev_->zero(f(t), n); };
  const size_t qd = nh * d, kvd = nkv * d;
  // MLP block: x_out = x1 + down(silu(gate(b)) * up(b)), b = norm(x1); a block of rows at a
  // time, its gate, up and product read from `a` when it keeps every row's, else recomputed.
  dev_->copy(dx, T * H, f(gr.dx1));
  zero(gr.db, T * H);
  for (size_t r0 = 0; r0 < T; r0 += mlp_block_rows_) {
    const size_t rows = std::min(mlp_block_rows_, T - r0), at = a.mlp_kept ? r0 * F : 0;
    float *g = f(a.g) + at, *u = f(a.u) + at, *m = f(a.m) + at;
    const float* b = f(a.b) + r0 * H;
    if (!a.mlp_kept) {
      linear_forward(l, 4, b, rows, g, key, dropout, r0);
      linear_forward(l, 5, b, rows, u, key, dropout, r0);
      dev_->silu_mul_forward(g, u, rows * F, m);
    }
    zero(gr.dm, rows * F);
    linear_backward(l, 6, m, rows, dx + r0 * H, f(gr.dm), key, dropout, r0);
    zero(gr.dg, rows * F);
    zero(gr.du, rows * F);
    dev_->silu_mul_backward(g, u, f(gr.dm), rows * F, f(gr.dg), f(gr.du));
    linear_backward(l, 4, b, rows, f(gr.dg), f(gr.db) + r0 * H, key, dropout, r0);
    linear_backward(l, 5, b, rows, f(gr.du), f(gr.db) + r0 * H, key, dropout, r0);
  }
  dev_->rmsnorm_backward(f(a.x1), f(L.mlp_norm), f(a.rinv2), f(gr.db), T, H, f(gr.dx1));
  // Attention block: x1 = x + o(attention(rope(q(a)), rope(k(a)), v(a))), a = norm(x).
  zero(gr.dattn, T * qd);
  linear_backward(l, 3, f(a.attn), T, f(gr.dx1), f(gr.dattn), key, dropout);
  zero(gr.dq, T * qd);
  zero(gr.dk, T * kvd);
  zero(gr.dv, T * kvd);
  dev_->attention_backward(f(a.q), f(a.k), f(a.v), f(a.attn), f(gr.dattn), f(a.lse), T, nh, nkv, d, window, f(gr.dq),
                           f(gr.dk), f(gr.dv));
  dev_->rope_apply(f(gr.dq), T, nh * d, nh, d, true);
  dev_->rope_apply(f(gr.dk), T, nkv * d, nkv, d, true);
  zero(gr.da, T * H);
  linear_backward(l, 0, f(a.a), T, f(gr.dq), f(gr.da), key, dropout);
  linear_backward(l, 1, f(a.a), T, f(gr.dk), f(gr.da), key, dropout);
  linear_backward(l, 2, f(a.a), T, f(gr.dv), f(gr.da), key, dropout);
  dev_->copy(f(gr.dx1), T * H, dx);
  dev_->rmsnorm_backward(x, f(L.attn_norm), f(a.rinv1), f(gr.da), T, H, dx);
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
  if (backward) grads_on_host_ = on_host();  // the device's gradients change
  // Keep every layer's activations (backward reads them) when they fit the memory budget;
  // otherwise keep one layer's and recompute each layer in backward (checkpointing). Both
  // give the same bits: the recomputation repeats the same operations.
  bool keep_all = false;
  if (backward && checkpointing_ != Checkpointing::Always) {
    const size_t bytes = L * T * Activations::floats_per_token(cfg_) * sizeof(float);
    keep_all = checkpointing_ == Checkpointing::Never || bytes <= activation_budget_bytes_;
  }
  // Each layer's input x_l [T, H], read by its recomputation and backward: all L + 1 on the
  // device; or, offloading (a GPU with checkpointing), two device slots — x_l in slot l % 2
  // — with x_0 .. x_{L-2} copied to pinned host memory beside the forward's compute and
  // back, one layer ahead, beside the backward's (x_{L-1} and x_L are still in the slots).
  bool slots_only = !keep_all && offload_inputs_ && dev_->offloads() && L >= 2;
  if (slots_only && backward && host_inputs_n_ < (L - 1) * T * H) {
    host_inputs_.reset();
    host_inputs_n_ = 0;
    try {
      host_inputs_ = dev_->pinned_floats((L - 1) * T * H);
      host_inputs_n_ = (L - 1) * T * H;
    } catch (const Error& e) {  // a host that cannot pin this much: the device keeps them
      fmt::print(stderr, "warning: {}; the layers' inputs stay in device memory ({:.1f} GB more)\n", e.what(),
                 double((L - 1) * T * H * sizeof(float)) / 1e9);
      offload_inputs_ = slots_only = false;
    }
  }
  const bool offload = slots_only && backward;
  float* xs = grow(xs_, (slots_only ? 2 : L + 1) * T * H).as<float>();
  auto input = [&](size_t l) { return xs + (slots_only ? l % 2 : l) * T * H; };
  float* host = offload ? host_inputs_.get() : nullptr;
  const size_t row_bytes = T * H * sizeof(float);
  std::vector<uint64_t> offloaded(L, 0);  // the copy ticket of x_l to the host
  if (cfg_.tie_word_embeddings || embed_dev_) {
    dev_->embed_rows(cfg_.tie_word_embeddings ? *lm_head_dev_ : *embed_dev_, tokens.data(), T, xs);
  } else {  // the table in host memory (a GPU): the sequence's rows gathered, then uploaded
    std::vector<float> rows(T * H);
    for (size_t t = 0; t < T; ++t)
      std::copy_n(embed_.f32.begin() + long(size_t(tokens[t]) * H), H, rows.begin() + long(t * H));
    dev_->upload(rows.data(), rows.size() * sizeof(float), xs);
  }
  dev_->set_rope(train::rope_tables(inv_freq_, T));
  if (acts_.size() < (keep_all ? L : 1)) acts_.resize(keep_all ? L : 1);
  for (size_t i = 0; i < (keep_all ? L : 1); ++i) acts_[i].size(*this, T, keep_all);
  if (offload) offloaded[0] = dev_->copy_behind(input(0), host, row_bytes, true);
  for (size_t l = 0; l < L; ++l) {
    // x_{l+1}'s slot held x_{l-1}: its copy to the host must be done before it is overwritten.
    if (offload && l >= 1) dev_->wait_copy(offloaded[l - 1]);
    layer_forward(l, input(l), T, acts_[keep_all ? l : 0], key, dropout, input(l + 1));
    if (offload && l + 1 <= L - 2) offloaded[l + 1] = dev_->copy_behind(input(l + 1), host + (l + 1) * T * H, row_bytes, true);
  }

  float* hn = grow(hn_, T * H).as<float>();
  float* rinv = grow(rinv_, T).as<float>();
  float* dhn = backward ? grow(dhn_, T * H).as<float>() : nullptr;
  const float* xL = input(L);
  dev_->rmsnorm_forward(xL, final_norm_.as<float>(), T, H, float(cfg_.norm_eps), hn, rinv);
  std::vector<int32_t> labels(T, -100);
  if (s)
    for (size_t t = 0; t + 1 < T; ++t)
      if (s->target[t + 1]) labels[t] = tokens[t + 1];
  // Logits a block of rows at a time (a [T, V] F32 matrix would be GBs for long sequences).
  const size_t chunk = std::max<size_t>(1, std::min<size_t>(T, (size_t(64) << 20) / (V * sizeof(float))));
  float* logits = grow(logits_, chunk * V).as<float>();
  if (logits_out) logits_out->resize(T * V);
  // The output layer is a frozen matrix like the base's: a GPU in F16 mode multiplies by it
  // on the tensor cores (F16 inputs, F32 sums, the activations and the logits' gradients
  // scaled by powers of two), as PyTorch's autocast runs lm_head; elsewhere in F32.
  const train::DeviceFrozen& head = *lm_head_dev_;
  double loss = 0;
  for (size_t r0 = 0; r0 < T; r0 += chunk) {
    const size_t rows = std::min(chunk, T - r0);
    dev_->base_gemm(true, rows, V, H, 1.0f, hn + r0 * H, H, head, 0.0f, logits, V, weights_[0]);  // hn headᵀ
    if (logits_out) dev_->download(logits, rows * V * sizeof(float), logits_out->data() + r0 * V);
    if (!s) continue;
    loss += dev_->cross_entropy(logits, &labels[r0], rows, V, scale);
    if (backward) dev_->base_gemm(false, rows, H, V, 1.0f, logits, V, head, 0.0f, dhn + r0 * H, H, weights_[0]);
  }
  if (!backward) return loss;

  float* dx = grow(dx_, T * H).as<float>();
  dev_->zero(dx, T * H);
  grads_buf_->size(*this, T, std::min(mlp_block_rows_, T));
  dev_->rmsnorm_backward(xL, final_norm_.as<float>(), rinv, dhn, T, H, dx);
  uint64_t fetched = 0;  // the copy ticket of x_l back from the host
  for (size_t l = L; l-- > 0;) {
    if (fetched) dev_->wait_copy(fetched);
    // x_{l-1} back into its slot, which held x_{l+1} (x_L for the last layer): read by the
    // work queued so far only.
    if (offload && l >= 1) fetched = dev_->copy_behind(host + (l - 1) * T * H, input(l - 1), row_bytes, false);
    if (!keep_all) layer_forward(l, input(l), T, acts_[0], key, dropout, nullptr, false);  // recompute
    layer_backward(l, input(l), T, acts_[keep_all ? l : 0], *grads_buf_, key, dropout, dx);
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
