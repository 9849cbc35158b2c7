#include "models/llama_model.h"

#include <chrono>
#include <cmath>

#include <fmt/format.h>

#include "backends/backend.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "models/weights.h"
#include "train/lora.h"

namespace pivotmt {

std::vector<float> rope_inv_freq(const ModelConfig& c) {
  std::vector<float> inv_freq;
  const size_t d = size_t(c.head_dim);
  for (size_t i = 0; i < d / 2; ++i) {
    // 1 / theta^(2i/d), float32 like torch's arange(0, d, 2).float() / d.
    const float exponent = float(2 * i) / float(d);
    inv_freq.push_back(1.0f / std::pow(float(c.rope_theta), exponent));
  }
  if (c.rope_scaling) {
    const auto& s = *c.rope_scaling;
    const double old_len = double(s.original_max_position_embeddings);
    const double low_wavelen = old_len / s.low_freq_factor, high_wavelen = old_len / s.high_freq_factor;
    for (auto& f : inv_freq) {
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
  return inv_freq;
}

LlamaModel::LlamaModel(const std::string& dir, LoadOptions options) : options_(options) {
  const auto t0 = std::chrono::steady_clock::now();
  cfg_ = load_model_config(dir);
  if (!cfg_.is_decoder()) throw UnsupportedError(fmt::format("{}: {} is not a decoder model", dir, architecture_name(cfg_.arch)));
  if (options.weights != DType::F32 && options.weights != DType::F16 && options.weights != DType::I8 &&
      options.weights != DType::NF4 && options.weights != DType::GGML)
    throw UnsupportedError("weights can be stored as F32, F16, INT8 (I8), NF4 or a GGUF file's blocks");
  // A GPU keeps room beside its KV pool for the largest pass's activations: [T, ·] rows of
  // the residual, normed, QKV and attention buffers, the MLP chunk and the logits rows.
  const size_t H = size_t(cfg_.hidden_size), qkv_cols = size_t(cfg_.num_heads + 2 * cfg_.num_kv_heads) * size_t(cfg_.head_dim);
  const size_t rows = std::max<size_t>(options.max_prefill_tokens, 256);
  const size_t activation_bytes = 2 * (rows * (3 * H + qkv_cols + size_t(cfg_.num_heads * cfg_.head_dim)) +
                                       256 * 4 * size_t(cfg_.intermediate_size)) +
                                  256 * 4 * size_t(cfg_.vocab_size);
  ops_ = make_ops(options.device, {.impl = options.ops,
                                   .kv_capacity_bytes = options.kv_capacity_bytes,
                                   .activation_reserve_bytes = activation_bytes,
                                   .int8_activations = options.int8_activations,
                                   .cuda_graphs = options.cuda_graphs});
  Ops& ops = *ops_;
  if (options.random_weights_seed) {
    make_random_weights(*options.random_weights_seed);
  } else {
    load_weights(dir);
  }
  if (!options.adapter.empty()) attach_adapter(options.adapter);
  ops.configure({.layers = size_t(cfg_.num_layers),
                 .heads = size_t(cfg_.num_heads),
                 .kv_heads = size_t(cfg_.num_kv_heads),
                 .head_dim = size_t(cfg_.head_dim),
                 .window = cfg_.sliding_window ? size_t(*cfg_.sliding_window) : 0,
                 .inv_freq = rope_inv_freq(cfg_)});
  ops.synchronize();
  load_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void LlamaModel::load_weights(const std::string& dir) {
  checkpoint_ = std::make_unique<Checkpoint>(dir);
  const Checkpoint& ckpt = *checkpoint_;
  verify_weights(cfg_, ckpt);
  Ops& ops = *ops_;
  const LoadOptions& options = options_;
  if (ops.device().kind == DeviceKind::CUDA) {  // refuse before loading most of a model that cannot fit
    size_t f16_bytes = 0;
    for (const auto& name : ckpt.tensor_names()) f16_bytes += size_t(ckpt.at(name).numel()) * 2;
    const auto info = cuda_device_info(ops.device().index);
    if (f16_bytes > info.free_memory)
      throw Error(fmt::format("{}: the model needs {:.2f} GiB of F16 weights; {} has {:.2f} GiB free of {:.2f} GiB",
                              dir, double(f16_bytes) / (1 << 30), ops.describe(), double(info.free_memory) / (1 << 30),
                              double(info.total_memory) / (1 << 30)));
  }
  // INT8 applies to the projections and the output layer; the embedding table is only
  // gathered from, so it stays F16. NF4 (bitsandbytes' 4-bit) applies to the projections
  // only, as bitsandbytes quantises them: embedding and output layer stay F16.
  const DType w = options.weights;
  embed_ = ops.load_linear(ckpt, {"model.embed_tokens.weight"}, w == DType::I8 || w == DType::NF4 ? DType::F16 : w);
  if (!cfg_.tie_word_embeddings) lm_head_ = ops.load_linear(ckpt, {"lm_head.weight"}, w == DType::NF4 ? DType::F16 : w);
  final_norm_ = ops.load_vector(ckpt, "model.norm.weight");
  for (int64_t l = 0; l < cfg_.num_layers; ++l) {
    const std::string p = fmt::format("model.layers.{}.", l);
    Layer layer;
    layer.attn_norm = ops.load_vector(ckpt, p + "input_layernorm.weight");
    layer.mlp_norm = ops.load_vector(ckpt, p + "post_attention_layernorm.weight");
    layer.qkv = ops.load_linear(ckpt, {p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight", p + "self_attn.v_proj.weight"}, w);
    layer.o = ops.load_linear(ckpt, {p + "self_attn.o_proj.weight"}, w);
    layer.gate_up = ops.load_linear(ckpt, {p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"}, w);
    layer.down = ops.load_linear(ckpt, {p + "mlp.down_proj.weight"}, w);
    layers_.push_back(std::move(layer));
  }
}

void LlamaModel::make_random_weights(uint64_t seed) {
  Ops& ops = *ops_;
  const DType w = options_.weights;
  const size_t H = size_t(cfg_.hidden_size), F = size_t(cfg_.intermediate_size), V = size_t(cfg_.vocab_size),
               d = size_t(cfg_.head_dim), q = size_t(cfg_.num_heads) * d, kv = size_t(cfg_.num_kv_heads) * d;
  constexpr float kScale = 0.035f;  // U(-a, a) has std a / sqrt(3) ≈ 0.02, make-model's default
  uint64_t tensor = 0;
  auto next = [&] { return seed * 1000003ull + tensor++; };
  embed_ = ops.random_linear(V, H, w == DType::I8 || w == DType::NF4 ? DType::F16 : w, next(), kScale);
  if (!cfg_.tie_word_embeddings) lm_head_ = ops.random_linear(V, H, w == DType::NF4 ? DType::F16 : w, next(), kScale);
  final_norm_ = ops.random_vector(H, next(), kScale, 1.0f);
  for (int64_t l = 0; l < cfg_.num_layers; ++l) {
    Layer layer;
    layer.attn_norm = ops.random_vector(H, next(), kScale, 1.0f);
    layer.mlp_norm = ops.random_vector(H, next(), kScale, 1.0f);
    layer.qkv = ops.random_linear(q + 2 * kv, H, w, next(), kScale);
    layer.o = ops.random_linear(H, q, w, next(), kScale);
    layer.gate_up = ops.random_linear(2 * F, H, w, next(), kScale);
    layer.down = ops.random_linear(H, F, w, next(), kScale);
    layers_.push_back(std::move(layer));
  }
}

void LlamaModel::attach_adapter(const std::string& adapter_dir) {
  const LoraAdapter adapter = load_lora(adapter_dir, cfg_);
  const float scaling = adapter.config.scaling();
  const size_t r = size_t(adapter.config.r);
  for (const auto& [key, pair] : adapter.weights) {
    Layer& layer = layers_.at(key.first);
    const std::string& m = key.second;
    // Where each PEFT module sits in the fused projections.
    LinearWeights& w = m == "q_proj" || m == "k_proj" || m == "v_proj" ? *layer.qkv
                       : m == "o_proj"                                  ? *layer.o
                       : m == "gate_proj" || m == "up_proj"             ? *layer.gate_up
                                                                        : *layer.down;
    const size_t part = m == "k_proj" || m == "up_proj" ? 1 : m == "v_proj" ? 2 : 0;
    ops_->add_lora(w, part, pair.A, pair.B, r, scaling);
  }
}

LlamaModel::~LlamaModel() = default;

size_t LlamaModel::streamed_bytes_per_token() const {
  const size_t row = embed_->bytes() / size_t(cfg_.vocab_size);
  return cfg_.tie_word_embeddings ? weight_bytes() : weight_bytes() - embed_->bytes() + row;
}

size_t LlamaModel::weight_bytes() const {
  size_t b = embed_->bytes() + (lm_head_ ? lm_head_->bytes() : 0) + final_norm_.numel() * dtype_size(final_norm_.dtype());
  for (const auto& l : layers_)
    b += l.qkv->bytes() + l.o->bytes() + l.gate_up->bytes() + l.down->bytes() +
         (l.attn_norm.numel() + l.mlp_norm.numel()) * dtype_size(l.attn_norm.dtype());
  return b;
}

// The MLP runs over chunks of rows, so its [rows, 2F] buffers stay small at long prefills
// (512 rows: one call per projection for a 512-token prompt; the CPU tiles ran the small
// model's gate/up at ~199 GFLOP/s in 256-row calls and ~209 in one 512-row call).
constexpr size_t kMlpRows = 512;

void LlamaModel::ensure_workspace(size_t rows, size_t logit_rows) {
  const size_t H = size_t(cfg_.hidden_size), d = size_t(cfg_.head_dim), nh = size_t(cfg_.num_heads),
               nkv = size_t(cfg_.num_kv_heads), F = size_t(cfg_.intermediate_size), V = size_t(cfg_.vocab_size);
  if (rows > ws_.rows) {
    // Grow to a power of two: a few reallocations over a run, not one per new maximum.
    size_t n = 1;
    while (n < rows) n *= 2;
    ws_.x = ws_.xn = ws_.qkv = ws_.attn = ws_.gate_up = ws_.mlp = ws_.down = Tensor();  // free before allocating
    ws_.x = ops_->empty(n, H);
    ws_.xn = ops_->empty(n, H);  // also the o projection's output (its normed input is consumed by then)
    ws_.qkv = ops_->empty(n, (nh + 2 * nkv) * d);
    ws_.attn = ops_->empty(n, nh * d);
    const size_t m = std::min(n, kMlpRows);
    ws_.gate_up = ops_->empty(m, 2 * F);
    ws_.mlp = ops_->empty(m, F);
    ws_.down = ops_->empty(m, H);
    ws_.rows = n;
  }
  if (logit_rows > ws_.logit_rows) {
    size_t n = 1;
    while (n < logit_rows) n *= 2;
    ws_.h = ws_.hn = ws_.logits = Tensor();
    ws_.h = ops_->empty(n, H);
    ws_.hn = ops_->empty(n, H);
    // [n, V] F32 rows, their stride padded as the device prefers (a GPU: a multiple of 4).
    const size_t pad = std::max<size_t>(1, ops_->row_stride_multiple(DType::F32)), padded = (V + pad - 1) / pad * pad;
    ws_.logits = padded == V ? ops_->empty(n, V, DType::F32) : ops_->empty(n, padded, DType::F32).cols(0, V);
    ws_.logit_rows = n;
  }
}

Tensor LlamaModel::run(std::vector<Input>& batch) {
  const float eps = float(cfg_.norm_eps);
  std::vector<int32_t> tokens;
  std::vector<SeqRows> seqs;
  std::vector<size_t> logit_rows;  // rows of x whose logits are wanted
  for (auto& in : batch) {
    if (in.tokens.empty()) throw Error("forward: a sequence with no new tokens");
    for (TokenId t : in.tokens)
      if (t < 0 || int64_t(t) >= cfg_.vocab_size)
        throw Error(fmt::format("token id {} is outside the vocabulary (0..{})", t, cfg_.vocab_size - 1));
    const size_t row0 = tokens.size(), n = in.tokens.size();
    if (in.all_logits)
      for (size_t i = 0; i < n; ++i) logit_rows.push_back(row0 + i);
    else
      logit_rows.push_back(row0 + n - 1);
    tokens.insert(tokens.end(), in.tokens.begin(), in.tokens.end());
    seqs.push_back({in.cache, row0, n});
    if (!ops_->grow(*in.cache, in.cache->length + n))
      throw Error(fmt::format("{}: KV memory is full ({} bytes): no room for {} more positions of a sequence "
                              "(fewer sequences at a time, or a larger kv capacity)",
                              ops_->describe(), ops_->kv_capacity_bytes(), n));
  }
  const size_t T = tokens.size();
  ensure_workspace(T, logit_rows.size());
  Ops& ops = *ops_;
  ops.begin_forward(tokens, seqs);
  try {
    // x [T, H] the residual stream; xn [T, H] normed input, then the o projection's output.
    const Tensor x = ws_.x.rows(0, T), xn = ws_.xn.rows(0, T), qkv = ws_.qkv.rows(0, T), attn = ws_.attn.rows(0, T);
    ops.embed(*embed_, x);
    ops.rmsnorm(x, layers_.front().attn_norm, eps, xn);
    for (size_t l = 0; l < layers_.size(); ++l) {
      const Layer& L = layers_[l];
      ops.linear(xn, *L.qkv, qkv);         // [T, (nh + 2 nkv) d]
      ops.rope_attention(l, qkv, attn);    // RoPE on the q and k heads, then attention: [T, nh d]
      ops.linear(attn, *L.o, xn);
      ops.add_rmsnorm(x, xn, L.mlp_norm, eps, xn);  // x += o; xn = norm(x)
      for (size_t r = 0; r < T; r += kMlpRows) {
        const size_t n = std::min(kMlpRows, T - r);
        const Tensor gate_up = ws_.gate_up.rows(0, n), mlp = ws_.mlp.rows(0, n), down = ws_.down.rows(0, n);
        ops.linear(xn.rows(r, n), *L.gate_up, gate_up);  // [n, 2F]
        ops.silu_mul(gate_up, mlp);                      // [n, F]
        ops.linear(mlp, *L.down, down);                  // [n, H]
        // x += down, and (but after the last layer) the next layer's input norm of these
        // rows: their xn rows were consumed by this chunk's gate/up projection above.
        if (l + 1 < layers_.size())
          ops.add_rmsnorm(x.rows(r, n), down, layers_[l + 1].attn_norm, eps, xn.rows(r, n));
        else
          ops.add(x.rows(r, n), down);
      }
    }
    // Final norm and output layer on the rows that need logits.
    const size_t R = logit_rows.size();
    const Tensor h = ws_.h.rows(0, R), hn = ws_.hn.rows(0, R), logits = ws_.logits.rows(0, R);
    ops.gather_rows(x, logit_rows, h);
    ops.rmsnorm(h, final_norm_, eps, hn);
    ops.linear(hn, cfg_.tie_word_embeddings ? *embed_ : *lm_head_, logits);  // [R, V] F32
    ops.end_forward();
    return logits;
  } catch (...) {
    ops.abort_forward();
    throw;
  }
}

std::vector<float> LlamaModel::forward(std::vector<Input>& batch) { return ops_->to_host_f32(run(batch)); }

std::vector<TokenId> LlamaModel::forward_greedy(std::vector<Input>& batch) { return ops_->argmax_rows(run(batch)); }

std::vector<TokenId> LlamaModel::forward_sample(std::vector<Input>& batch, std::span<const RowSampling> rows) {
  return ops_->sample_rows(run(batch), rows);
}

}  // namespace pivotmt
