#include "models/bert_model.h"

#include <cmath>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "backends/cpu/thread_pool.h"
#include "core/error.h"
#include "io/checkpoint.h"
#include "io/json_fields.h"
#include "io/json_file.h"
#include "models/weights.h"

namespace pivotmt {
namespace fs = std::filesystem;

namespace {
// [out, in] matrices stacked along out (Q, K and V into one projection), with the biases
// named (stacked alike) or none; the weights stored as `storage`.
std::unique_ptr<EncoderLinear> stacked(EncoderOps& ops, const Checkpoint& ckpt, const std::vector<std::string>& names,
                                       const std::vector<std::string>& biases, DType storage) {
  std::vector<float> w, b;
  size_t out = 0, in = 0;
  for (const auto& name : names) {
    const auto& info = ckpt.at(name);
    if (info.shape.size() != 2)
      throw FormatError(fmt::format("{}: expected a matrix, the checkpoint holds {} dimensions", name, info.shape.size()));
    if (in != 0 && size_t(info.shape[1]) != in)
      throw FormatError(fmt::format("{}: {} columns, but {} has {}", name, info.shape[1], names.front(), in));
    in = size_t(info.shape[1]);
    out += size_t(info.shape[0]);
    const auto values = ckpt.load_f32(name);
    w.insert(w.end(), values.begin(), values.end());
  }
  for (const auto& name : biases) {
    const auto values = ckpt.load_f32(name);
    b.insert(b.end(), values.begin(), values.end());
  }
  if (!biases.empty() && b.size() != out)
    throw FormatError(fmt::format("{}: {} values for the {} rows of {}", biases.front(), b.size(), out, names.front()));
  return ops.make_linear(std::move(w), out, in, std::move(b), storage);
}

Tensor vector_f32(EncoderOps& ops, const Checkpoint& ckpt, const std::string& name) {
  const auto values = ckpt.load_f32(name);
  return ops.upload(values, 1, values.size());
}

}  // namespace

BertEncoder::BertEncoder(const std::string& dir, const std::string& weights_dir, const Device& device, DType weights) {
  if (weights != DType::F32 && weights != DType::F16)
    throw UnsupportedError(fmt::format("{}: encoder weights as {} (f32 or f16)", dir, dtype_name(weights)));
  cfg_ = load_model_config(dir);
  if (cfg_.arch != Architecture::Bert)
    throw UnsupportedError(fmt::format("{}: a sentence encoder must be a BERT model, this is {}", dir, architecture_name(cfg_.arch)));
  checkpoint_ = std::make_unique<Checkpoint>(weights_dir.empty() ? dir : weights_dir);
  const Checkpoint& ckpt = *checkpoint_;
  verify_weights(cfg_, ckpt);
  ops_ = make_encoder_ops(device, OpsImpl::Fast);
  if (device.kind == DeviceKind::CPU) reference_ops_ = make_encoder_ops(device, OpsImpl::Reference);
  EncoderOps& ops = *ops_;
  const std::string p = bert_prefix(ckpt);
  {
    const size_t H = dimension();
    auto word = ckpt.load_f32(p + "embeddings.word_embeddings.weight");
    auto position_type = ckpt.load_f32(p + "embeddings.position_embeddings.weight");
    const auto token_type = ckpt.load_f32(p + "embeddings.token_type_embeddings.weight");
    if (word.size() % H != 0 || position_type.size() % H != 0 || token_type.size() < H)
      throw FormatError(fmt::format("{}: embedding tables of {}, {} and {} values for hidden size {}", dir, word.size(),
                                    position_type.size(), token_type.size(), H));
    const size_t V = word.size() / H, P = position_type.size() / H;
    for (size_t r = 0; r < P; ++r)
      for (size_t i = 0; i < H; ++i) position_type[r * H + i] += token_type[i];
    word_ = ops.make_linear(std::move(word), V, H, {}, DType::F32);
    position_type_ = ops.upload(position_type, P, H);
  }
  emb_ln_w_ = vector_f32(ops, ckpt, p + "embeddings.LayerNorm.weight");
  emb_ln_b_ = vector_f32(ops, ckpt, p + "embeddings.LayerNorm.bias");
  for (int64_t l = 0; l < cfg_.num_layers; ++l) {
    const std::string lp = fmt::format("{}encoder.layer.{}.", p, l);
    Layer L;
    const std::string a = lp + "attention.self.";
    L.qkv = stacked(ops, ckpt, {a + "query.weight", a + "key.weight", a + "value.weight"},
                    {a + "query.bias", a + "key.bias", a + "value.bias"}, weights);
    L.o = stacked(ops, ckpt, {lp + "attention.output.dense.weight"}, {}, weights);
    L.inter = stacked(ops, ckpt, {lp + "intermediate.dense.weight"}, {lp + "intermediate.dense.bias"}, weights);
    L.out = stacked(ops, ckpt, {lp + "output.dense.weight"}, {}, weights);
    L.o_b = vector_f32(ops, ckpt, lp + "attention.output.dense.bias");
    L.out_b = vector_f32(ops, ckpt, lp + "output.dense.bias");
    L.ln1_w = vector_f32(ops, ckpt, lp + "attention.output.LayerNorm.weight");
    L.ln1_b = vector_f32(ops, ckpt, lp + "attention.output.LayerNorm.bias");
    L.ln2_w = vector_f32(ops, ckpt, lp + "output.LayerNorm.weight");
    L.ln2_b = vector_f32(ops, ckpt, lp + "output.LayerNorm.bias");
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
    max_tokens_ = std::min(max_tokens_, size_t(field_integer(j, "max_seq_length", sbert.string(), int64_t(max_tokens_), 1)));
  }
  // tokenizer.json may carry its own truncation (all-MiniLM: 128 word pieces); the tighter
  // limit wins, as the hub's tokenizer applies it before the model sees the ids.
  const fs::path tj = fs::path(dir) / "tokenizer.json";
  if (fs::exists(tj)) {
    const auto j = read_json_file(tj.string());
    if (j.contains("truncation") && j["truncation"].is_object())
      max_tokens_ = std::min(max_tokens_, size_t(field_integer(j["truncation"], "max_length", tj.string() + ": truncation",
                                                               int64_t(max_tokens_), 1)));
  }
  // modules.json: Pooling (mean by default) and whether a Normalize module follows.
  const fs::path modules = fs::path(dir) / "modules.json";
  normalize_ = false;
  if (fs::exists(modules)) {
    const auto list = read_json_file(modules.string());
    if (!list.is_array()) throw FormatError(fmt::format("{}: expected a list of modules", modules.string()));
    for (const auto& m : list) {
      const std::string where = fmt::format("{}: module {}", modules.string(), json_excerpt(m));
      const std::string type = field_string(m, "type", where, "");
      if (type.ends_with("Normalize")) normalize_ = true;
      if (type.ends_with("Pooling")) {
        const fs::path cfg = fs::path(dir) / field_string(m, "path", where, "1_Pooling") / "config.json";
        if (fs::exists(cfg)) {
          const auto c = read_json_file(cfg.string());
          const std::string cw = cfg.string();
          if (field_bool(c, "pooling_mode_cls_token", cw, false)) pooling_ = Pooling::Cls;
          else if (field_bool(c, "pooling_mode_max_tokens", cw, false)) pooling_ = Pooling::Max;
          else if (field_bool(c, "pooling_mode_mean_sqrt_len_tokens", cw, false)) pooling_ = Pooling::MeanSqrtLen;
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

void BertEncoder::token_positions(const std::vector<TokenId>& ids, int32_t* ids_out, int32_t* positions_out) const {
  const size_t T = ids.size(), offset = size_t(cfg_.position_offset);
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
    ids_out[t] = int32_t(ids[t]);
    positions_out[t] = int32_t(position);
  }
}

std::vector<float> BertEncoder::all_hidden_states(const std::vector<TokenId>& ids) const {
  const size_t T = ids.size(), H = dimension();
  std::vector<float> all((layers_.size() + 1) * T * H);
  EncoderOps& ops = reference_ops_ ? *reference_ops_ : *ops_;
  run(ops, {ids}, layers_.size(), [&](size_t layer, const Tensor& states) {
    ops.download(states, std::span<float>(all).subspan(layer * T * H, T * H));
  });
  return all;
}

void BertEncoder::encode_batch(const std::vector<std::vector<TokenId>>& seqs, size_t layers,
                               const std::function<void(size_t, const float*)>& on_state) const {
  if (layers > layers_.size())
    throw Error(fmt::format("BERT: {} layers asked of a {}-layer encoder", layers, layers_.size()));
  std::vector<float> host;
  run(*ops_, seqs, layers, [&](size_t layer, const Tensor& x) { on_state(layer, ops_->read(x, host)); });
}

std::vector<double> BertEncoder::pooled_layer_mix(const std::vector<std::vector<TokenId>>& seqs,
                                                  const std::vector<double>& weights, int64_t skip_id) const {
  if (weights.empty() || weights.size() > layers_.size() + 1)
    throw Error(fmt::format("BERT: {} layer weights for the embeddings and {} layers", weights.size(), layers_.size()));
  std::vector<size_t> starts{0};
  std::vector<uint8_t> keep;
  for (const auto& ids : seqs) {
    starts.push_back(starts.back() + ids.size());
    for (const TokenId id : ids) keep.push_back(int64_t(id) != skip_id);
  }
  const Tensor acc = ops_->pooled_sums(seqs.size(), dimension());
  run(*ops_, seqs, weights.size() - 1, [&](size_t layer, const Tensor& x) {
    if (weights[layer] != 0.0) ops_->pool_rows(x, starts, keep, weights[layer], acc);
  });
  return ops_->download_pooled(acc);
}

void BertEncoder::run(EncoderOps& ops, const std::vector<std::vector<TokenId>>& seqs, size_t layers,
                      const std::function<void(size_t, const Tensor&)>& on_state) const {
  const size_t H = dimension(), nh = size_t(cfg_.num_heads), d = size_t(cfg_.head_dim),
               F = size_t(cfg_.intermediate_size);
  const float eps = float(cfg_.norm_eps);
  std::vector<size_t> starts{0};
  for (const auto& ids : seqs) starts.push_back(starts.back() + ids.size());
  const size_t T = starts.back();
  if (T == 0) return;
  std::vector<int32_t> token_ids(T), position_ids(T);
  for (size_t s = 0; s < seqs.size(); ++s)
    token_positions(seqs[s], token_ids.data() + starts[s], position_ids.data() + starts[s]);
  // x [T, H] the residual stream; qkv [T, 3H]; ctx and tmp [T, H]; inter [T, F].
  const Tensor x = ops.empty(T, H), qkv = ops.empty(T, 3 * H), ctx = ops.empty(T, H), tmp = ops.empty(T, H),
               inter = ops.empty(T, F);
  ops.embed(*word_, token_ids, 1.0f, position_type_, position_ids, x);
  ops.layer_norm(x, emb_ln_w_, emb_ln_b_, eps);
  on_state(0, x);
  for (size_t l = 0; l < layers; ++l) {
    const Layer& L = layers_[l];
    ops.linear(x, *L.qkv, qkv);
    ops.attention(qkv, starts, nh, d, ctx);
    ops.linear(ctx, *L.o, tmp);
    ops.residual_layer_norm(x, tmp, L.o_b, L.ln1_w, L.ln1_b, eps);
    ops.linear(x, *L.inter, inter);
    ops.gelu(inter);
    ops.linear(inter, *L.out, tmp);
    ops.residual_layer_norm(x, tmp, L.out_b, L.ln2_w, L.ln2_b, eps);
    on_state(l + 1, x);
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
