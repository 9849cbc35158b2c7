#include "models/m2m100_model.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include <fmt/format.h>

#include "backends/cpu/thread_pool.h"
#include "core/error.h"
#include "io/checkpoint.h"
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
  const std::string type = j.value("model_type", std::string());
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
  c.scale_embedding = j.value("scale_embedding", false);
  c.activation = j.value("activation_function", std::string("relu"));
  if (c.activation != "relu" && c.activation != "gelu")
    throw UnsupportedError(fmt::format("{}: activation_function '{}' (supported: relu, gelu)", label, c.activation));
  c.pad_token_id = token_id(j, "pad_token_id", 1, label);
  c.bos_token_id = token_id(j, "bos_token_id", 0, label);
  c.eos_token_id = token_id(j, "eos_token_id", 2, label);
  c.decoder_start_token_id = token_id(j, "decoder_start_token_id", c.eos_token_id, label);
  if (j.contains("forced_eos_token_id") && !j["forced_eos_token_id"].is_null())
    c.forced_eos_token_id = token_id(j, "forced_eos_token_id", 2, label);
  c.tie_word_embeddings = j.value("tie_word_embeddings", true);
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

namespace {
// y[t] += b for T rows of b.size() values.
void add_bias(float* y, size_t T, const std::vector<float>& b) {
  const size_t n = b.size();
  cpu::parallel_for(T, [&](size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; ++t)
      for (size_t o = 0; o < n; ++o) y[t * n + o] += b[o];
  });
}

void add_rows(float* x, const float* y, size_t n) {
  cpu::parallel_for((n + 4095) / 4096, [&](size_t b0, size_t b1) {
    for (size_t i = b0 * 4096; i < std::min(n, b1 * 4096); ++i) x[i] += y[i];
  });
}
}  // namespace

cpu::Matrix M2M100Model::load_matrix(const std::vector<std::string>& names) const {
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
  cpu::Matrix m;
  if (weight_dtype_ == DType::I8) return cpu::quantize_int8(values.data(), out, in);
  m.out = out;
  m.in = in;
  m.dtype = weight_dtype_;
  if (weight_dtype_ == DType::F16) {
    m.f16.resize(values.size());
    convert_floats(DType::F32, values.data(), DType::F16, m.f16.data(), values.size());
  } else {
    m.f32 = std::move(values);
  }
  return m;
}

std::vector<float> M2M100Model::load_vector(const std::vector<std::string>& names) const {
  std::vector<float> out;
  for (const auto& name : names) {
    const auto& info = checkpoint_->at(name);
    if (info.shape.size() != 1)
      throw FormatError(fmt::format("{}: tensor {} should be a vector", checkpoint_->dir(), name));
    const auto v = checkpoint_->load_f32(name);
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

M2M100Model::M2M100Model(const std::string& dir, DType weights, OpsImpl impl, const std::string& weights_dir)
    : cfg_(load_m2m100_config(dir)), weight_dtype_(weights), impl_(impl) {
  if (weights != DType::F32 && weights != DType::F16 && weights != DType::I8)
    throw UnsupportedError(fmt::format("M2M100: weights as {} (supported: f32, f16, int8)", dtype_name(weights)));
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
  embed_tokens_ = load_matrix({embed_name});
  if (!cfg_.tie_word_embeddings) {
    check("lm_head.weight", {cfg_.vocab_size, d});
    lm_head_ = load_matrix({"lm_head.weight"});
  }
  embed_scale_ = cfg_.scale_embedding ? float(std::sqrt(double(d))) : 1.0f;

  auto attention = [&](const std::string& p, int64_t dim) {
    Attention a;
    for (const char* n : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
      check(p + n + ".weight", {dim, dim});
      check(p + n + ".bias", {dim});
    }
    a.qkv = load_matrix({p + "q_proj.weight", p + "k_proj.weight", p + "v_proj.weight"});
    a.qkv_b = load_vector({p + "q_proj.bias", p + "k_proj.bias", p + "v_proj.bias"});
    a.o = load_matrix({p + "out_proj.weight"});
    a.o_b = load_vector({p + "out_proj.bias"});
    return a;
  };
  auto ffn = [&](const std::string& p, int64_t F, cpu::Matrix& fc1, std::vector<float>& fc1_b, cpu::Matrix& fc2,
                 std::vector<float>& fc2_b) {
    check(p + "fc1.weight", {F, d});
    check(p + "fc1.bias", {F});
    check(p + "fc2.weight", {d, F});
    check(p + "fc2.bias", {d});
    fc1 = load_matrix({p + "fc1.weight"});
    fc1_b = load_vector({p + "fc1.bias"});
    fc2 = load_matrix({p + "fc2.weight"});
    fc2_b = load_vector({p + "fc2.bias"});
  };
  auto norm = [&](const std::string& p, std::vector<float>& w, std::vector<float>& b) {
    check(p + ".weight", {d});
    check(p + ".bias", {d});
    w = load_vector({p + ".weight"});
    b = load_vector({p + ".bias"});
  };
  for (int64_t l = 0; l < cfg_.encoder_layers; ++l) {
    const std::string p = fmt::format("model.encoder.layers.{}.", l);
    EncoderLayer L;
    L.self = attention(p + "self_attn.", d);
    norm(p + "self_attn_layer_norm", L.ln1_w, L.ln1_b);
    norm(p + "final_layer_norm", L.ln2_w, L.ln2_b);
    ffn(p, cfg_.encoder_ffn, L.fc1, L.fc1_b, L.fc2, L.fc2_b);
    encoder_.push_back(std::move(L));
  }
  norm("model.encoder.layer_norm", enc_ln_w_, enc_ln_b_);
  for (int64_t l = 0; l < cfg_.decoder_layers; ++l) {
    const std::string p = fmt::format("model.decoder.layers.{}.", l);
    DecoderLayer L;
    L.self = attention(p + "self_attn.", d);
    const std::string c = p + "encoder_attn.";
    for (const char* n : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
      check(c + n + ".weight", {d, d});
      check(c + n + ".bias", {d});
    }
    L.cross_q = load_matrix({c + "q_proj.weight"});
    L.cross_q_b = load_vector({c + "q_proj.bias"});
    L.cross_kv = load_matrix({c + "k_proj.weight", c + "v_proj.weight"});
    L.cross_kv_b = load_vector({c + "k_proj.bias", c + "v_proj.bias"});
    L.cross_o = load_matrix({c + "out_proj.weight"});
    L.cross_o_b = load_vector({c + "out_proj.bias"});
    norm(p + "self_attn_layer_norm", L.ln1_w, L.ln1_b);
    norm(p + "encoder_attn_layer_norm", L.ln_cross_w, L.ln_cross_b);
    norm(p + "final_layer_norm", L.ln2_w, L.ln2_b);
    ffn(p, cfg_.decoder_ffn, L.fc1, L.fc1_b, L.fc2, L.fc2_b);
    decoder_.push_back(std::move(L));
  }
  norm("model.decoder.layer_norm", dec_ln_w_, dec_ln_b_);
}

M2M100Model::~M2M100Model() = default;

size_t M2M100Model::weight_bytes() const {
  size_t total = embed_tokens_.bytes() + lm_head_.bytes();
  for (const auto& L : encoder_) total += L.self.qkv.bytes() + L.self.o.bytes() + L.fc1.bytes() + L.fc2.bytes();
  for (const auto& L : decoder_)
    total += L.self.qkv.bytes() + L.self.o.bytes() + L.cross_q.bytes() + L.cross_kv.bytes() + L.cross_o.bytes() +
             L.fc1.bytes() + L.fc2.bytes();
  return total;
}

// --- ops ---------------------------------------------------------------------------------

void M2M100Model::linear(const float* x, size_t T, const cpu::Matrix& w, const std::vector<float>& b, float* y) const {
  if (impl_ == OpsImpl::Reference) cpu::ref::linear(x, T, w, y);
  else cpu::fast::linear(x, T, w, y);
  if (!b.empty()) add_bias(y, T, b);
}

void M2M100Model::layer_norm(const float* x, size_t T, const std::vector<float>& w, const std::vector<float>& b,
                             float* y) const {
  const size_t d = size_t(cfg_.d_model);
  std::copy(x, x + T * d, y);
  // torch.nn.LayerNorm's default eps; M2M100 does not configure it.
  if (impl_ == OpsImpl::Reference) cpu::ref::layer_norm(y, T, d, w.data(), b.data(), 1e-5f);
  else cpu::fast::layer_norm(y, T, d, w.data(), b.data(), 1e-5f);
}

void M2M100Model::activation(float* x, size_t n) const {
  if (cfg_.activation == "gelu") {
    if (impl_ == OpsImpl::Reference) cpu::ref::gelu(x, n);
    else cpu::fast::gelu(x, n);
    return;
  }
  cpu::parallel_for((n + 4095) / 4096, [&](size_t b0, size_t b1) {
    for (size_t i = b0 * 4096; i < std::min(n, b1 * 4096); ++i) x[i] = std::max(x[i], 0.0f);
  });
}

void M2M100Model::embed(std::span<const int32_t> ids, size_t first_position, float* x) const {
  const size_t d = size_t(cfg_.d_model), T = ids.size();
  // Positions start after the padding index: the first real token is pad + 1 (fairseq).
  const size_t pad = size_t(cfg_.pad_token_id);
  const auto pos = sinusoidal_positions(pad + 1 + first_position, T, d, pad);
  for (size_t t = 0; t < T; ++t) {
    if (ids[t] < 0 || ids[t] >= cfg_.vocab_size)
      throw Error(fmt::format("M2M100: token id {} is outside the vocabulary ({})", ids[t], cfg_.vocab_size));
    float* row = x + t * d;
    embed_tokens_.row_to_f32(size_t(ids[t]), row);
    for (size_t i = 0; i < d; ++i) row[i] = row[i] * embed_scale_ + pos[t * d + i];
  }
}

// --- encoder -----------------------------------------------------------------------------

M2M100Model::Encoded M2M100Model::encode(const std::vector<std::vector<int32_t>>& sources) const {
  const size_t d = size_t(cfg_.d_model), nh = size_t(cfg_.encoder_heads), hd = d / nh, F = size_t(cfg_.encoder_ffn);
  Encoded enc;
  enc.starts.push_back(0);
  for (const auto& s : sources) {
    if (s.empty()) throw Error("M2M100: an empty source (a source holds at least its language code and </s>)");
    enc.starts.push_back(enc.starts.back() + s.size());
  }
  const size_t T = enc.starts.back();
  enc.states.resize(T * d);
  float* x = enc.states.data();
  for (size_t s = 0; s < sources.size(); ++s) embed(sources[s], 0, x + enc.starts[s] * d);
  std::vector<float> y(T * d), qkv(T * 3 * d), ctx(T * d), inter(T * F);
  for (const EncoderLayer& L : encoder_) {
    layer_norm(x, T, L.ln1_w, L.ln1_b, y.data());
    linear(y.data(), T, L.self.qkv, L.self.qkv_b, qkv.data());
    if (impl_ == OpsImpl::Reference) cpu::ref::encoder_attention(qkv.data(), enc.starts, nh, hd, ctx.data());
    else cpu::fast::encoder_attention(qkv.data(), enc.starts, nh, hd, ctx.data());
    linear(ctx.data(), T, L.self.o, L.self.o_b, y.data());
    add_rows(x, y.data(), T * d);
    layer_norm(x, T, L.ln2_w, L.ln2_b, y.data());
    linear(y.data(), T, L.fc1, L.fc1_b, inter.data());
    activation(inter.data(), inter.size());
    linear(inter.data(), T, L.fc2, L.fc2_b, y.data());
    add_rows(x, y.data(), T * d);
  }
  layer_norm(x, T, enc_ln_w_, enc_ln_b_, y.data());
  enc.states.swap(y);
  return enc;
}

std::vector<M2M100Model::CrossCache> M2M100Model::cross_caches(const Encoded& enc) const {
  const size_t d = size_t(cfg_.d_model), T = enc.starts.empty() ? 0 : enc.starts.back();
  std::vector<CrossCache> out(enc.sources());
  for (auto& c : out) {
    c.k.resize(decoder_.size());
    c.v.resize(decoder_.size());
  }
  std::vector<float> kv(T * 2 * d);
  for (size_t l = 0; l < decoder_.size(); ++l) {
    // One GEMM over every source's rows, then each source's keys and values split out.
    linear(enc.states.data(), T, decoder_[l].cross_kv, decoder_[l].cross_kv_b, kv.data());
    for (size_t s = 0; s < out.size(); ++s) {
      const size_t r0 = enc.starts[s], S = enc.starts[s + 1] - r0;
      out[s].length = S;
      out[s].k[l].resize(S * d);
      out[s].v[l].resize(S * d);
      for (size_t t = 0; t < S; ++t) {
        const float* row = kv.data() + (r0 + t) * 2 * d;
        std::copy(row, row + d, out[s].k[l].data() + t * d);
        std::copy(row + d, row + 2 * d, out[s].v[l].data() + t * d);
      }
    }
  }
  return out;
}

// --- decoder -----------------------------------------------------------------------------

M2M100Model::SelfCache M2M100Model::new_self_cache(size_t reserve_positions) const {
  SelfCache c;
  c.k.resize(decoder_.size());
  c.v.resize(decoder_.size());
  for (size_t l = 0; l < decoder_.size(); ++l) {
    c.k[l].reserve(reserve_positions * size_t(cfg_.d_model));
    c.v[l].reserve(reserve_positions * size_t(cfg_.d_model));
  }
  return c;
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
    if (r.cache->k.size() != decoder_.size()) throw Error("M2M100 decode: a self-attention cache of another model");
    if (r.tokens.empty()) throw Error("M2M100 decode: a row without new tokens");
    row0.push_back(row0.back() + r.tokens.size());
  }
  const size_t T = row0.back();
  ws.logits.clear();
  if (T == 0) return;
  ws.x.resize(T * d);
  ws.y.resize(T * d);
  ws.qkv.resize(T * 3 * d);
  ws.ctx.resize(T * d);
  ws.inter.resize(T * F);
  auto &x = ws.x, &y = ws.y, &qkv = ws.qkv, &ctx = ws.ctx, &inter = ws.inter;
  for (size_t r = 0; r < rows.size(); ++r) embed(rows[r].tokens, rows[r].cache->length, x.data() + row0[r] * d);

  // Self-attention: every row's new tokens against its own cache (causal); cross
  // attention: every token against its source's keys (no mask: a single query row placed
  // after all S keys sees them all).
  auto attend_self = [&](size_t l) {
    std::vector<cpu::fast::AttentionJob> jobs;
    for (size_t r = 0; r < rows.size(); ++r) {
      SelfCache& c = *rows[r].cache;
      const size_t n = rows[r].tokens.size();
      for (size_t t = 0; t < n; ++t) {
        const float* row = qkv.data() + (row0[r] + t) * 3 * d;
        c.k[l].insert(c.k[l].end(), row + d, row + 2 * d);
        c.v[l].insert(c.v[l].end(), row + 2 * d, row + 3 * d);
      }
      cpu::fast::AttentionJob job;
      job.q = qkv.data() + row0[r] * 3 * d;
      job.q_stride = 3 * d;
      job.k = c.k[l].data();
      job.v = c.v[l].data();
      job.T = n;
      job.L = c.length + n;
      job.out = ctx.data() + row0[r] * d;
      job.out_stride = d;
      jobs.push_back(job);
    }
    if (impl_ == OpsImpl::Reference) {
      for (const auto& j : jobs) cpu::ref::attention(j.q, j.q_stride, j.k, j.v, j.T, j.L, nh, nh, hd, 0, j.out);
    } else {
      cpu::fast::attention_many(jobs, nh, nh, hd, 0);
    }
  };
  auto attend_cross = [&](size_t l) {
    std::vector<cpu::fast::AttentionJob> jobs;
    for (size_t r = 0; r < rows.size(); ++r) {
      const CrossCache& c = *rows[r].cross;
      for (size_t t = 0; t < rows[r].tokens.size(); ++t) {
        cpu::fast::AttentionJob job;
        job.q = y.data() + (row0[r] + t) * d;
        job.q_stride = d;
        job.k = c.k[l].data();
        job.v = c.v[l].data();
        job.T = 1;
        job.L = c.length;
        job.out = ctx.data() + (row0[r] + t) * d;
        job.out_stride = d;
        jobs.push_back(job);
      }
    }
    if (impl_ == OpsImpl::Reference) {
      for (const auto& j : jobs) cpu::ref::attention(j.q, j.q_stride, j.k, j.v, 1, j.L, nh, nh, hd, 0, j.out);
    } else {
      cpu::fast::attention_many(jobs, nh, nh, hd, 0);
    }
  };

  for (size_t l = 0; l < decoder_.size(); ++l) {
    const DecoderLayer& L = decoder_[l];
    layer_norm(x.data(), T, L.ln1_w, L.ln1_b, y.data());
    linear(y.data(), T, L.self.qkv, L.self.qkv_b, qkv.data());
    attend_self(l);
    linear(ctx.data(), T, L.self.o, L.self.o_b, y.data());
    add_rows(x.data(), y.data(), T * d);

    layer_norm(x.data(), T, L.ln_cross_w, L.ln_cross_b, ctx.data());
    linear(ctx.data(), T, L.cross_q, L.cross_q_b, y.data());
    attend_cross(l);
    linear(ctx.data(), T, L.cross_o, L.cross_o_b, y.data());
    add_rows(x.data(), y.data(), T * d);

    layer_norm(x.data(), T, L.ln2_w, L.ln2_b, y.data());
    linear(y.data(), T, L.fc1, L.fc1_b, inter.data());
    activation(inter.data(), inter.size());
    linear(inter.data(), T, L.fc2, L.fc2_b, y.data());
    add_rows(x.data(), y.data(), T * d);
  }
  for (const auto& r : rows) r.cache->length += r.tokens.size();

  // Logits only for the rows asked: a decode step reads each row's last token.
  size_t n_out = T;
  if (last_only) {
    n_out = rows.size();
    for (size_t r = 0; r < rows.size(); ++r)
      std::copy(x.data() + (row0[r + 1] - 1) * d, x.data() + row0[r + 1] * d, ctx.data() + r * d);
    std::swap(x, ctx);
  }
  layer_norm(x.data(), n_out, dec_ln_w_, dec_ln_b_, y.data());
  ws.logits.resize(n_out * V);
  linear(y.data(), n_out, cfg_.tie_word_embeddings ? embed_tokens_ : lm_head_, {}, ws.logits.data());
}

}  // namespace pivotmt
