// The M2M100 architecture of NLLB-200 (facebook/nllb-200-distilled-600M, -1.3B, 3.3B): a
// pre-norm Transformer encoder–decoder. Each layer normalises (LayerNorm) before its block
// and adds the block's output to the residual; the encoder and the decoder each end with a
// LayerNorm. Attention projections and feed-forward layers have biases, queries are scaled
// by head_dim^-0.5, the feed-forward activation is ReLU. Token embeddings are scaled by
// √d_model and shared by encoder, decoder and lm_head (tied); positions are sinusoidal with
// fairseq's offset: real tokens are numbered from pad + 1 = 2.
//
// The model is written once over the encoder ops (backends/encoder_ops.h), on a device:
// the CPU — `OpsImpl::Reference` runs the plain loops (the specification the goldens check
// first), `Fast` the threaded SIMD / BLAS kernels; weights F32, F16 or INT8 (per-row
// scales) — or a GPU (F32 weights, or F16 on the tensor cores: a linear's inputs rounded to
// F16, F32 sums). Everything else is F32 on every device. A hypothesis' keys and
// values live in one tensor on the device; beam search copies them there.
//
// Shapes: d = d_model, S = source tokens, V = vocabulary; nh heads of hd = d / nh.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "backends/encoder_ops.h"
#include "backends/ops.h"
#include "backends/tensor.h"
#include "core/device.h"
#include "core/dtype.h"

#include <nlohmann/json_fwd.hpp>

namespace pivotmt {

class Checkpoint;

struct M2M100Config {
  int64_t vocab_size = 0, d_model = 0;
  int64_t encoder_layers = 0, decoder_layers = 0;
  int64_t encoder_heads = 0, decoder_heads = 0;
  int64_t encoder_ffn = 0, decoder_ffn = 0;
  int64_t max_position_embeddings = 0;
  bool scale_embedding = true;
  std::string activation = "relu";  // relu | gelu
  int32_t pad_token_id = 1, bos_token_id = 0, eos_token_id = 2, decoder_start_token_id = 2;
  std::optional<int32_t> forced_eos_token_id;
  bool tie_word_embeddings = true;
};

// config.json of an M2M100 checkpoint; anything else (another model_type, a missing or
// nonsensical field) throws naming the file and the field.
M2M100Config parse_m2m100_config(const nlohmann::json& j, const std::string& label);
M2M100Config load_m2m100_config(const std::string& dir);
// True when `dir`/config.json says model_type "m2m_100" (NLLB-200, M2M100).
bool is_m2m100_model(const std::string& dir);

// fairseq's sinusoidal table rows for positions [first, first + n): row p = [sin(p·f_i),
// cos(p·f_i)] with f_i = exp(−i·ln(10000) / (d/2 − 1)), in F32 as torch computes it; the
// padding row (pad_token_id) is zero.
std::vector<float> sinusoidal_positions(size_t first, size_t n, size_t d, size_t padding_idx);

class M2M100Model {
 public:
  // `dir`: config.json, and the weights (model.safetensors or an index) unless
  // `weights_dir` names another folder (the converted copy of a pytorch_model.bin, see
  // experiment/nllb_translate.h). `weights`: F32, F16 or I8 storage (a GPU: F32 or F16).
  M2M100Model(const std::string& dir, DType weights = DType::F32, OpsImpl impl = OpsImpl::Fast,
              const std::string& weights_dir = "", const Device& device = Device{});
  ~M2M100Model();
  const M2M100Config& config() const { return cfg_; }
  size_t weight_bytes() const;
  Device device() const { return ops_->device(); }
  std::string describe_device() const { return ops_->describe(); }
  std::vector<float> to_host(const Tensor& t) const { return ops_->download(t); }
  // A GPU's decode steps as CUDA graphs (on by default; EncoderOps::begin_step) or launched
  // op by op; and how many steps were captured and replayed.
  void set_cuda_graphs(bool on) const { ops_->set_cuda_graphs(on); }
  const PassCounters& step_counters() const { return ops_->step_counters(); }

  // Several sources' final encoder states, packed one after another without padding.
  struct Encoded {
    Tensor states;               // [Σ S_i, d] on the model's device
    std::vector<size_t> starts;  // source i holds rows [starts[i], starts[i + 1])
    size_t sources() const { return starts.empty() ? 0 : starts.size() - 1; }
  };
  Encoded encode(const std::vector<std::vector<int32_t>>& sources) const;

  // A source's cross-attention keys and values for every decoder layer, computed once and
  // shared by all its hypotheses (beams): kv [layers · 2 · S, d] (layer l's keys at rows
  // [2l·S, 2l·S + S), its values next).
  struct CrossCache {
    size_t length = 0;  // S
    Tensor kv;
  };
  std::vector<CrossCache> cross_caches(const Encoded& enc) const;

  // One hypothesis' decoder self-attention keys and values, every layer: kv [layers · 2 ·
  // capacity, d], the first `length` positions of each block held. Move-only: a copy of the
  // tensor would share its memory; copy_self_cache copies the values.
  struct SelfCache {
    size_t length = 0;    // positions held
    size_t capacity = 0;  // positions a block has room for (decode grows it when needed)
    Tensor kv;
    SelfCache() = default;
    SelfCache(SelfCache&&) = default;
    SelfCache& operator=(SelfCache&&) = default;
    SelfCache(const SelfCache&) = delete;
    SelfCache& operator=(const SelfCache&) = delete;
  };
  SelfCache new_self_cache(size_t reserve_positions = 0) const;
  // dst holds src's positions afterwards (its memory reused when it has room).
  void copy_self_cache(const SelfCache& src, SelfCache& dst) const;

  // One decoder row of a pass: `tokens` are appended at cache->length (positions from
  // cache->length + 2) and attend to `cross`.
  struct DecoderRow {
    SelfCache* cache = nullptr;
    const CrossCache* cross = nullptr;
    std::span<const int32_t> tokens;
  };
  // Activations of decode passes, kept by the caller between steps: a step's buffers (the
  // logits of 64 hypotheses of NLLB's 256k vocabulary are 65 MB) are then reused instead of
  // mapped and zeroed afresh.
  // The tensors are on the model's device, `logits` on the host — unless host_logits is
  // false: then the logits stay where they were computed (`last_logits`) for top_k.
  struct Workspace {
    Tensor x, y, qkv, ctx, inter, device_logits;
    std::vector<float> logits;
    bool host_logits = true;
    Tensor last_logits;  // the last decode's logits [rows, V] on the model's device (or a host view)
  };
  // Runs the decoder over every row's new tokens together and returns the logits
  // [rows, V] of each row's last token (last_only), or [Σ tokens, V] of all of them.
  std::vector<float> decode(const std::vector<DecoderRow>& rows, bool last_only = true) const;
  // The same into ws.logits (its size: rows · V or Σ tokens · V).
  void decode(const std::vector<DecoderRow>& rows, bool last_only, Workspace& ws) const;
  // The last decode's logits rows as a beam search reads them (EncoderOps::top_k): on a GPU a
  // few floats a row cross to the host, not the row.
  void top_k(const Workspace& ws, size_t k, std::vector<RowTop>& out) const;

 private:
  struct Attention {
    std::unique_ptr<EncoderLinear> qkv, o;  // qkv: q | k | v stacked [3d, d]
  };
  struct Norm {
    Tensor w, b;  // [1, d]
  };
  struct EncoderLayer {
    Attention self;
    Norm ln1, ln2;
    std::unique_ptr<EncoderLinear> fc1, fc2;
  };
  struct DecoderLayer {
    Attention self;
    std::unique_ptr<EncoderLinear> cross_q, cross_kv, cross_o;  // cross_kv: k | v stacked [2d, d]
    Norm ln1, ln_cross, ln2;
    std::unique_ptr<EncoderLinear> fc1, fc2;
  };
  // y = LayerNorm(x) (x unchanged), torch.nn.LayerNorm's eps.
  void layer_norm(const Tensor& x, const Norm& n, const Tensor& y) const;
  void activation(const Tensor& x) const;
  // x += fc2(act(fc1(LayerNorm(x)))): the pre-norm feed-forward block of either stack (y
  // [T, d] and inter [T, F] are scratch).
  void feed_forward(const Tensor& x, const Norm& norm, const EncoderLinear& fc1, const EncoderLinear& fc2, const Tensor& y,
                    const Tensor& inter) const;
  // Position rows [0, n) of the sinusoidal table on the device (grown on demand).
  const Tensor& positions(size_t n) const;
  void grow(SelfCache& c, size_t capacity) const;
  std::unique_ptr<EncoderLinear> load_linear(const std::vector<std::string>& weights,
                                             const std::vector<std::string>& biases) const;
  Norm load_norm(const std::string& prefix) const;

  M2M100Config cfg_;
  DType weight_dtype_;
  std::unique_ptr<EncoderOps> ops_;
  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<EncoderLinear> embed_tokens_;  // [V, d]; lm_head too when tied
  std::unique_ptr<EncoderLinear> lm_head_;       // [V, d] when not tied
  std::vector<EncoderLayer> encoder_;
  std::vector<DecoderLayer> decoder_;
  Norm enc_ln_, dec_ln_;
  float embed_scale_ = 1.0f;
  mutable Tensor positions_;  // sinusoidal rows [0, n)
};

}  // namespace pivotmt
