#include "models/m2m100_model.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <fmt/format.h>

#include "core/error.h"
#include "io/checkpoint.h"
#include "io/json_fields.h"
#include "io/json_file.h"

#include <nlohmann/json.hpp>
#include <fmt/ranges.h>

namespace pivotmt {
namespace fs = std::filesystem;

// --- config.json -------------------------------------------------------------------------

namespace {
int64_t positive(const nlohmann::json& j, const char* key, const std::string& label) {
  if (!j.contains(key) || !j[key].is_number_integer())
    throw FormatError(fmt::format("{}: '{}' missing or not an integer", label, key));
  const auto v = j[key].get<int64_t>();
  if (v <= 0 || v > (int64_t(1) << 24)) throw FormatError(fmt::format("{}: '{}' = {} is out of range", label, key, v));
  return v;
}

int32_t token_id(const nlohmann::json& j, const char* key, int32_t fallback, const std::string& label) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  if (!j[key].is_number_integer()) throw FormatError(fmt::format("{}: '{}' is not an integer", label, key));
  const auto v = j[key].get<int64_t>();
  if (v < 0 || v > (int64_t(1) << 30)) throw FormatError(fmt::format("{}: '{}' = {} is out of range", label, key, v));
  return int32_t(v);
}
}  // namespace

namespace {
M2M100Config parse_m2m100_fields(const nlohmann::json& j, const std::string& label);
}

M2M100Config parse_m2m100_config(const nlohmann::json& j, const std::string& label) {
  try {
    return parse_m2m100_fields(j, label);
  } catch (const nlohmann::json::exception& e) {  // a field of the wrong type
    throw FormatError(fmt::format("{}: {}", label, e.what()));
  }
}

namespace {
M2M100Config parse_m2m100_fields(const nlohmann::json& j, const std::string& label) {
  if (!j.is_object()) throw FormatError(fmt::format("{}: expected a JSON object", label));
  const std::string type = field_string(j, "model_type", label, "");
  if (type != "m2m_100")
    throw UnsupportedError(fmt::format("{}: model_type '{}' is not an M2M100 / NLLB-200 model (expected \"m2m_100\")",
                                       label, type));
  M2M100Config c;
  c.vocab_size = positive(j, "vocab_size", label);
  c.d_model = positive(j, "d_model", label);
  c.encoder_layers = positive(j, "encoder_layers", label);
  c.decoder_layers = positive(j, "decoder_layers", label);
  c.encoder_heads = positive(j, "encoder_attention_heads", label);
  c.decoder_heads = positive(j, "decoder_attention_heads", label);
  c.encoder_ffn = positive(j, "encoder_ffn_dim", label);
  c.decoder_ffn = positive(j, "decoder_ffn_dim", label);
  c.max_position_embeddings = positive(j, "max_position_embeddings", label);
  for (int64_t heads : {c.encoder_heads, c.decoder_heads})
    if (c.d_model % heads != 0)
      throw FormatError(fmt::format("{}: d_model {} is not a multiple of the attention heads ({})", label, c.d_model, heads));
  if (c.d_model % 2 != 0) throw FormatError(fmt::format("{}: d_model {} is odd; the sinusoidal positions need pairs", label, c.d_model));
  c.scale_embedding = field_bool(j, "scale_embedding", label, false);
  c.activation = field_string(j, "activation_function", label, "relu");
  if (c.activation != "relu" && c.activation != "gelu")
    throw UnsupportedError(fmt::format("{}: activation_function '{}' (supported: relu, gelu)", label, c.activation));
  c.pad_token_id = token_id(j, "pad_token_id", 1, label);
  c.bos_token_id = token_id(j, "bos_token_id", 0, label);
  c.eos_token_id = token_id(j, "eos_token_id", 2, label);
  c.decoder_start_token_id = token_id(j, "decoder_start_token_id", c.eos_token_id, label);
  if (j.contains("forced_eos_token_id") && !j["forced_eos_token_id"].is_null())
    c.forced_eos_token_id = token_id(j, "forced_eos_token_id", 2, label);
  c.tie_word_embeddings = field_bool(j, "tie_word_embeddings", label, true);
  for (int32_t id : {c.pad_token_id, c.bos_token_id, c.eos_token_id, c.decoder_start_token_id})
    if (id >= c.vocab_size) throw FormatError(fmt::format("{}: token id {} is outside the vocabulary ({})", label, id, c.vocab_size));
  return c;
}
}  // namespace

M2M100Config load_m2m100_config(const std::string& dir) {
  const auto path = (fs::path(dir) / "config.json").string();
  return parse_m2m100_config(read_json_file(path), path);
}

bool is_m2m100_model(const std::string& dir) {
  const auto path = fs::path(dir) / "config.json";
  if (!fs::is_regular_file(path)) return false;
  const auto j = read_json_file(path.string());
  return j.is_object() && j.contains("model_type") && j["model_type"].is_string() && j["model_type"] == "m2m_100";
}

std::vector<float> sinusoidal_positions(size_t first, size_t n, size_t d, size_t padding_idx) {
  // As torch computes M2M100SinusoidalPositionalEmbedding.get_embedding: the frequency
  // step in double, rounded to F32 when it multiplies the F32 index; exp, products, sin
  // and cos in F32.
  const size_t half = d / 2;
  const float step = float(-std::log(10000.0) / double(half - 1));
  std::vector<float> freq(half);
  for (size_t i = 0; i < half; ++i) freq[i] = float(std::exp(double(float(i) * step)));
  std::vector<float> out(n * d, 0.0f);
  for (size_t r = 0; r < n; ++r) {
    const size_t p = first + r;
    if (p == padding_idx) continue;
    float* row = out.data() + r * d;
    for (size_t i = 0; i < half; ++i) {
      const float a = float(p) * freq[i];
      row[i] = float(std::sin(double(a)));
      row[half + i] = float(std::cos(double(a)));
    }
  }
  return out;
}

// --- weights -----------------------------------------------------------------------------

std::unique_ptr<EncoderLinear> M2M100Model::load_linear(const std::vector<std::string>& names,
                                                        const std::vector<std::string>& biases) const {
  std::vector<float> values;
  size_t out = 0, in = 0;
  for (const auto& name : names) {
    const auto& info = checkpoint_->at(name);
    if (info.shape.size() != 2 || info.shape[0] <= 0 || info.shape[1] <= 0)
      throw FormatError(fmt::format("{}: tensor {} should be a matrix", checkpoint_->dir(), name));
    if (in != 0 && size_t(info.shape[1]) != in)
      throw FormatError(fmt::format("{}: {} has {} columns, {} has {}", checkpoint_->dir(), name, info.shape[1], names.front(), in));
    in = size_t(info.shape[1]);
    out += size_t(info.shape[0]);
    const auto v = checkpoint_->load_f32(name);
    values.insert(values.end(), v.begin(), v.end());
  }
  std::vector<float> bias;
  for (const auto& name : biases) {
    const auto& info = checkpoint_->at(name);
    if (info.shape.size() != 1)
      throw FormatError(fmt::format("{}: tensor {} should be a vector", checkpoint_->dir(), name));
    const auto v = checkpoint_->load_f32(name);
    bias.insert(bias.end(), v.begin(), v.end());
  }
  return ops_->make_linear(std::move(values), out, in, std::move(bias), weight_dtype_);
}

M2M100Model::Norm M2M100Model::load_norm(const std::string& p) const {
  const size_t d = size_t(cfg_.d_model);
  Norm n;
  for (auto [suffix, t] : {std::pair{".weight", &n.w}, std::pair{".bias", &n.b}}) {
    const auto& info = checkpoint_->at(p + suffix);
    if (info.shape != std::vector<int64_t>{int64_t(d)})
      throw FormatError(fmt::format("{}: tensor {}{} has shape [{}], config.json implies [{}]", checkpoint_->dir(), p,
                                    suffix, fmt::join(info.shape, ", "), d));
    *t = ops_->upload(checkpoint_->load_f32(p + suffix), 1, d);
  }
  return n;
}

M2M100Model::M2M100Model(const std::string& dir, DType weights, OpsImpl impl, const std::string& weights_dir,
                         const Device& device)
    : cfg_(load_m2m100_config(dir)), weight_dtype_(weights) {
  if (weights != DType::F32 && weights != DType::F16 && weights != DType::I8)
    throw UnsupportedError(fmt::format("M2M100: weights as {} (supported: f32, f16, int8)", dtype_name(weights)));
  ops_ = make_encoder_ops(device, impl);
  checkpoint_ = std::make_unique<Checkpoint>(weights_dir.empty() ? dir : weights_dir);
  const int64_t d = cfg_.d_model;
  auto check = [&](const std::string& name, std::vector<int64_t> shape) {
    const auto& info = checkpoint_->at(name);
    if (info.shape != shape)
      throw FormatError(fmt::format("{}: tensor {} has shape [{}], config.json implies [{}]", dir, name,
                                    fmt::join(info.shape, ", "), fmt::join(shape, ", ")));
  };
  std::string embed_name;
  for (const char* n : {"model.shared.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"})
    if (checkpoint_->find(n)) {
      embed_name = n;
      break;
    }
  if (embed_name.empty())
    throw FormatError(fmt::format("{}: no token embeddings (model.shared.weight); is this an M2M100 checkpoint?", dir));
  check(embed_name, {cfg_.vocab_size, d});
  embed_tokens_ = load_linear({embed_name}, {});
  if (!cfg_.tie_word_embeddings) {
    check("lm_head.weight", {cfg_.vocab_size, d});
    lm_head_ = load_linear({"lm_head.weight"}, {});
  }
  embed_scale_ = cfg_.scale_embedding ? float(std::sqrt(double(d))) : 1.0f;

  auto attention = [&](const std::string& p) {
    Attention a;
    for (const char* n : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
      check(p + n + ".weight", {d, d});
      check(p + n + ".bias", {d});
    }
    a.qkv = load_linear({p + "q_proj.weight", p + "k_proj.weight", p + "v_proj.weight"},
                        {p + "q_proj.bias", p + "k_proj.bias", p + "v_proj.bias"});
    a.o = load_linear({p + "out_proj.weight"}, {p + "out_proj.bias"});
    return a;
  };
  auto ffn = [&](const std::string& p, int64_t F, std::unique_ptr<EncoderLinear>& fc1,
                 std::unique_ptr<EncoderLinear>& fc2) {
    check(p + "fc1.weight", {F, d});
    check(p + "fc1.bias", {F});
    check(p + "fc2.weight", {d, F});
    check(p + "fc2.bias", {d});
    fc1 = load_linear({p + "fc1.weight"}, {p + "fc1.bias"});
    fc2 = load_linear({p + "fc2.weight"}, {p + "fc2.bias"});
  };
  for (int64_t l = 0; l < cfg_.encoder_layers; ++l) {
    const std::string p = fmt::format("model.encoder.layers.{}.", l);
    EncoderLayer L;
    L.self = attention(p + "self_attn.");
    L.ln1 = load_norm(p + "self_attn_layer_norm");
    L.ln2 = load_norm(p + "final_layer_norm");
    ffn(p, cfg_.encoder_ffn, L.fc1, L.fc2);
    encoder_.push_back(std::move(L));
  }
  enc_ln_ = load_norm("model.encoder.layer_norm");
  for (int64_t l = 0; l < cfg_.decoder_layers; ++l) {
    const std::string p = fmt::format("model.decoder.layers.{}.", l);
    DecoderLayer L;
    L.self = attention(p + "self_attn.");
    const std::string c = p + "encoder_attn.";
    for (const char* n : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
      check(c + n + ".weight", {d, d});
      check(c + n + ".bias", {d});
    }
    L.cross_q = load_linear({c + "q_proj.weight"}, {c + "q_proj.bias"});
    L.cross_kv = load_linear({c + "k_proj.weight", c + "v_proj.weight"}, {c + "k_proj.bias", c + "v_proj.bias"});
    L.cross_o = load_linear({c + "out_proj.weight"}, {c + "out_proj.bias"});
    L.ln1 = load_norm(p + "self_attn_layer_norm");
    L.ln_cross = load_norm(p + "encoder_attn_layer_norm");
    L.ln2 = load_norm(p + "final_layer_norm");
    ffn(p, cfg_.decoder_ffn, L.fc1, L.fc2);
    decoder_.push_back(std::move(L));
  }
  dec_ln_ = load_norm("model.decoder.layer_norm");
  // Room for max_position_embeddings positions after fairseq's offset; grown on demand.
  positions(size_t(cfg_.max_position_embeddings + cfg_.pad_token_id + 1));
}

M2M100Model::~M2M100Model() = default;

size_t M2M100Model::weight_bytes() const {
  size_t total = embed_tokens_->bytes + (lm_head_ ? lm_head_->bytes : 0);
  for (const auto& L : encoder_) total += L.self.qkv->bytes + L.self.o->bytes + L.fc1->bytes + L.fc2->bytes;
  for (const auto& L : decoder_)
    total += L.self.qkv->bytes + L.self.o->bytes + L.cross_q->bytes + L.cross_kv->bytes + L.cross_o->bytes +
             L.fc1->bytes + L.fc2->bytes;
  return total;
}

// --- ops ---------------------------------------------------------------------------------

void M2M100Model::layer_norm(const Tensor& x, const Norm& n, const Tensor& y) const {
  ops_->copy(x, 0, 0, y, 0, 0, x.rows(), x.cols());
  // torch.nn.LayerNorm's default eps; M2M100 does not configure it.
  ops_->layer_norm(y, n.w, n.b, 1e-5f);
}

void M2M100Model::activation(const Tensor& x) const {
  if (cfg_.activation == "gelu") ops_->gelu(x);
  else ops_->relu(x);
}

void M2M100Model::feed_forward(const Tensor& x, const Norm& norm, const EncoderLinear& fc1, const EncoderLinear& fc2,
                               const Tensor& y, const Tensor& inter) const {
  layer_norm(x, norm, y);
  ops_->linear(y, fc1, inter);
  activation(inter);
  ops_->linear(inter, fc2, y);
  ops_->add(x, y);
}

const Tensor& M2M100Model::positions(size_t n) const {
  if (positions_.empty() || positions_.rows() < n) {
    const size_t rows = std::max(n, positions_.empty() ? size_t(0) : 2 * positions_.rows());
    const size_t d = size_t(cfg_.d_model);
    positions_ = ops_->upload(sinusoidal_positions(0, rows, d, size_t(cfg_.pad_token_id)), rows, d);
  }
  return positions_;
}

namespace {
// A tensor's first `rows` rows, reallocated (contents dropped) when it has fewer.
Tensor& sized(EncoderOps& ops, Tensor& t, size_t rows, size_t cols, Tensor& view) {
  if (t.empty() || t.rows() < rows || t.cols() != cols) t = ops.empty(std::max<size_t>(rows, 1), cols);
  view = t.rows(0, rows);
  return view;
}
}  // namespace

// --- encoder -----------------------------------------------------------------------------

M2M100Model::Encoded M2M100Model::encode(const std::vector<std::vector<int32_t>>& sources) const {
  const size_t d = size_t(cfg_.d_model), nh = size_t(cfg_.encoder_heads), hd = d / nh, F = size_t(cfg_.encoder_ffn);
  Encoded enc;
  enc.starts.push_back(0);
  std::vector<int32_t> ids, position_ids;
  // Positions start after the padding index: the first real token is pad + 1 (fairseq).
  const size_t first = size_t(cfg_.pad_token_id) + 1;
  for (const auto& s : sources) {
    if (s.empty()) throw Error("M2M100: an empty source (a source holds at least its language code and </s>)");
    enc.starts.push_back(enc.starts.back() + s.size());
    for (size_t t = 0; t < s.size(); ++t) {
      if (s[t] < 0 || s[t] >= cfg_.vocab_size)
        throw Error(fmt::format("M2M100: token id {} is outside the vocabulary ({})", s[t], cfg_.vocab_size));
      ids.push_back(s[t]);
      position_ids.push_back(int32_t(first + t));
    }
  }
  const size_t T = enc.starts.back();
  Tensor x = ops_->empty(T, d), y = ops_->empty(T, d), qkv = ops_->empty(T, 3 * d), ctx = ops_->empty(T, d),
         inter = ops_->empty(T, F);
  if (T > 0) ops_->embed(*embed_tokens_, ids, embed_scale_, positions(first + T), position_ids, x);
  for (const EncoderLayer& L : encoder_) {
    layer_norm(x, L.ln1, y);
    ops_->linear(y, *L.self.qkv, qkv);
    ops_->attention(qkv, enc.starts, nh, hd, ctx);
    ops_->linear(ctx, *L.self.o, y);
    ops_->add(x, y);
    feed_forward(x, L.ln2, *L.fc1, *L.fc2, y, inter);
  }
  layer_norm(x, enc_ln_, y);
  enc.states = y;
  return enc;
}

std::vector<M2M100Model::CrossCache> M2M100Model::cross_caches(const Encoded& enc) const {
  const size_t d = size_t(cfg_.d_model), T = enc.starts.empty() ? 0 : enc.starts.back(), L = decoder_.size();
  std::vector<CrossCache> out(enc.sources());
  for (size_t s = 0; s < out.size(); ++s) {
    out[s].length = enc.starts[s + 1] - enc.starts[s];
    out[s].kv = ops_->empty(std::max<size_t>(2 * L * out[s].length, 1), d);
  }
  const Tensor kv = ops_->empty(std::max<size_t>(T, 1), 2 * d);
  for (size_t l = 0; l < L; ++l) {
    // One GEMM over every source's rows, then each source's keys and values copied out.
    if (T > 0) ops_->linear(enc.states, *decoder_[l].cross_kv, kv.rows(0, T));
    for (size_t s = 0; s < out.size(); ++s) {
      const size_t r0 = enc.starts[s], S = out[s].length;
      ops_->copy(kv, r0, 0, out[s].kv, 2 * l * S, 0, S, d);
      ops_->copy(kv, r0, d, out[s].kv, (2 * l + 1) * S, 0, S, d);
    }
  }
  return out;
}

// --- decoder -----------------------------------------------------------------------------

M2M100Model::SelfCache M2M100Model::new_self_cache(size_t reserve_positions) const {
  SelfCache c;
  grow(c, std::max<size_t>(reserve_positions, 16));
  return c;
}

namespace {
// A cache's 2 · layers blocks as the rows of a [2 · layers, capacity · d] tensor (a view
// of its storage, valid while the cache's tensor lives).
Tensor blocks_of(const Tensor& kv, size_t capacity, size_t d) {
  const size_t blocks = kv.rows() / capacity;
  return Tensor(kv.device(), DType::F32, blocks, capacity * d, capacity * d, nullptr, kv.data());
}
}  // namespace

void M2M100Model::grow(SelfCache& c, size_t capacity) const {
  const size_t d = size_t(cfg_.d_model), blocks = 2 * decoder_.size();
  SelfCache bigger;
  bigger.capacity = capacity;
  bigger.kv = ops_->empty(blocks * capacity, d);
  if (c.length > 0) {
    ops_->copy(blocks_of(c.kv, c.capacity, d), 0, 0, blocks_of(bigger.kv, capacity, d), 0, 0, blocks, c.length * d);
    bigger.length = c.length;
  }
  c = std::move(bigger);
}

void M2M100Model::copy_self_cache(const SelfCache& src, SelfCache& dst) const {
  const size_t d = size_t(cfg_.d_model), blocks = 2 * decoder_.size();
  if (dst.kv.empty() || dst.capacity < src.length) {
    dst = SelfCache();
    grow(dst, src.capacity);
  }
  if (src.length > 0)
    ops_->copy(blocks_of(src.kv, src.capacity, d), 0, 0, blocks_of(dst.kv, dst.capacity, d), 0, 0, blocks,
               src.length * d);
  dst.length = src.length;
}

std::vector<float> M2M100Model::decode(const std::vector<DecoderRow>& rows, bool last_only) const {
  Workspace ws;
  decode(rows, last_only, ws);
  return std::move(ws.logits);
}

void M2M100Model::decode(const std::vector<DecoderRow>& rows, bool last_only, Workspace& ws) const {
  const size_t d = size_t(cfg_.d_model), nh = size_t(cfg_.decoder_heads), hd = d / nh, F = size_t(cfg_.decoder_ffn),
               V = size_t(cfg_.vocab_size);
  std::vector<size_t> row0{0};
  for (const auto& r : rows) {
    if (!r.cache || !r.cross) throw Error("M2M100 decode: a row without its caches");
    if (r.cache->kv.empty() || r.cache->kv.rows() != 2 * decoder_.size() * r.cache->capacity)
      throw Error("M2M100 decode: a self-attention cache of another model");
    if (r.cross->kv.empty() || r.cross->kv.rows() < 2 * decoder_.size() * r.cross->length || r.cross->length == 0)
      throw Error("M2M100 decode: a cross-attention cache of another model");
    if (r.tokens.empty()) throw Error("M2M100 decode: a row without new tokens");
    row0.push_back(row0.back() + r.tokens.size());
  }
  const size_t T = row0.back();
  ws.logits.clear();
  if (T == 0) return;
  // Every row's tokens at its positions (after fairseq's offset), its caches grown to hold them.
  const size_t first = size_t(cfg_.pad_token_id) + 1;
  std::vector<int32_t> ids, position_ids;
  std::vector<CachedRows> self_spans, cross_spans;
  size_t last_position = 0;
  for (const auto& r : rows) {
    SelfCache& c = *r.cache;
    const size_t n = r.tokens.size();
    if (c.length + n > c.capacity) grow(c, std::max(c.length + n, 2 * c.capacity));
    for (size_t t = 0; t < n; ++t) {
      if (r.tokens[t] < 0 || r.tokens[t] >= cfg_.vocab_size)
        throw Error(fmt::format("M2M100: token id {} is outside the vocabulary ({})", r.tokens[t], cfg_.vocab_size));
      ids.push_back(r.tokens[t]);
      position_ids.push_back(int32_t(first + c.length + t));
    }
    last_position = std::max(last_position, first + c.length + n);
    // Self-attention: the row's new tokens against its own cache (causal); cross attention:
    // every token against all its source's keys.
    self_spans.push_back({n, &c.kv, c.capacity, c.length + n, true});
    cross_spans.push_back({n, &r.cross->kv, r.cross->length, r.cross->length, false});
  }
  Tensor x, y, qkv, ctx, inter;
  sized(*ops_, ws.x, T, d, x);
  sized(*ops_, ws.y, T, d, y);
  sized(*ops_, ws.qkv, T, 3 * d, qkv);
  sized(*ops_, ws.ctx, T, d, ctx);
  sized(*ops_, ws.inter, T, F, inter);
  const bool on_host = ops_->device().kind == DeviceKind::CPU;
  Tensor logits = Tensor();
  if (!on_host) sized(*ops_, ws.device_logits, last_only ? rows.size() : T, V, logits);
  // A decode step's ops as one unit (a GPU replays its CUDA graph for this row count); an
  // op that throws ends it with what was recorded run as launches.
  struct Step {
    EncoderOps& ops;
    bool open;
    ~Step() {
      if (open) ops.abort_step();
    }
  } step{*ops_, last_only};
  if (last_only) ops_->begin_step(T);
  ops_->embed(*embed_tokens_, ids, embed_scale_, positions(last_position), position_ids, x);

  for (size_t l = 0; l < decoder_.size(); ++l) {
    const DecoderLayer& L = decoder_[l];
    layer_norm(x, L.ln1, y);
    ops_->linear(y, *L.self.qkv, qkv);
    ops_->write_cache(qkv.cols(d, 2 * d), self_spans, l);
    ops_->cached_attention(qkv.cols(0, d), self_spans, l, nh, hd, ctx);
    ops_->linear(ctx, *L.self.o, y);
    ops_->add(x, y);

    layer_norm(x, L.ln_cross, ctx);
    ops_->linear(ctx, *L.cross_q, y);
    ops_->cached_attention(y, cross_spans, l, nh, hd, ctx);
    ops_->linear(ctx, *L.cross_o, y);
    ops_->add(x, y);

    feed_forward(x, L.ln2, *L.fc1, *L.fc2, y, inter);
  }
  for (const auto& r : rows) r.cache->length += r.tokens.size();

  // Logits only for the rows asked: a decode step reads each row's last token.
  size_t n_out = T;
  Tensor last = x;
  if (last_only) {
    n_out = rows.size();
    for (size_t r = 0; r < rows.size(); ++r) ops_->copy(x, row0[r + 1] - 1, 0, ctx, r, 0, 1, d);
    last = ctx.rows(0, n_out);
  }
  const Tensor normed = y.rows(0, n_out);
  layer_norm(last, dec_ln_, normed);
  // The CPU computes into ws.logits itself; a device keeps them there (sized before the
  // step: a buffer allocated mid-step would move under its graph), copied to the host only
  // when asked (the beam search reads top_k instead).
  if (on_host || ws.host_logits) ws.logits.resize(n_out * V);
  if (on_host) logits = ops_->host_view(ws.logits.data(), n_out, V);
  ops_->linear(normed, lm_head_ ? *lm_head_ : *embed_tokens_, logits);
  if (last_only) {
    step.open = false;
    ops_->end_step();
  }
  ws.last_logits = logits;
  if (!on_host && ws.host_logits) ops_->download(logits, ws.logits);
}

void M2M100Model::top_k(const Workspace& ws, size_t k, std::vector<RowTop>& out) const {
  if (ws.last_logits.empty()) throw Error("M2M100 top_k: no decode step's logits in the workspace");
  ops_->top_k(ws.last_logits, std::min(k, ws.last_logits.cols()), out);
}

}  // namespace pivotmt
