// The M2M100 architecture of NLLB-200 (facebook/nllb-200-distilled-600M, -1.3B, 3.3B): a
// pre-norm Transformer encoder–decoder. Each layer normalises (LayerNorm) before its block
// and adds the block's output to the residual; the encoder and the decoder each end with a
// LayerNorm. Attention projections and feed-forward layers have biases, queries are scaled
// by head_dim^-0.5, the feed-forward activation is ReLU. Token embeddings are scaled by
// √d_model and shared by encoder, decoder and lm_head (tied); positions are sinusoidal with
// fairseq's offset: real tokens are numbered from pad + 1 = 2.
//
// Compute is F32 on the CPU, weights F32, F16 or INT8 (per-row scales), on the CPU ops of
// backends/cpu/ops.h: `OpsImpl::Reference` runs the plain loops (the specification the
// goldens check first), `Fast` the threaded SIMD / BLAS kernels.
//
// Shapes: d = d_model, S = source tokens, V = vocabulary; nh heads of hd = d / nh.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "backends/cpu/ops.h"
#include "backends/ops.h"
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
  // experiment/nllb_translate.h). `weights`: F32, F16 or I8 storage.
  M2M100Model(const std::string& dir, DType weights = DType::F32, OpsImpl impl = OpsImpl::Fast,
              const std::string& weights_dir = "");
  ~M2M100Model();
  const M2M100Config& config() const { return cfg_; }
  size_t weight_bytes() const;

  // Several sources' final encoder states, packed one after another without padding.
  struct Encoded {
    std::vector<float> states;  // [Σ S_i, d]
    std::vector<size_t> starts;  // source i holds rows [starts[i], starts[i + 1])
    size_t sources() const { return starts.empty() ? 0 : starts.size() - 1; }
  };
  Encoded encode(const std::vector<std::vector<int32_t>>& sources) const;

  // A source's cross-attention keys and values for every decoder layer, computed once and
  // shared by all its hypotheses (beams).
  struct CrossCache {
    size_t length = 0;                        // S
    std::vector<std::vector<float>> k, v;     // [layer][S, d]
  };
  std::vector<CrossCache> cross_caches(const Encoded& enc) const;

  // One hypothesis' decoder self-attention keys and values, every layer.
  struct SelfCache {
    size_t length = 0;                     // positions held
    std::vector<std::vector<float>> k, v;  // [layer][length, d]
  };
  SelfCache new_self_cache(size_t reserve_positions = 0) const;

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
  struct Workspace {
    std::vector<float> x, y, qkv, ctx, inter, logits;
  };
  // Runs the decoder over every row's new tokens together and returns the logits
  // [rows, V] of each row's last token (last_only), or [Σ tokens, V] of all of them.
  std::vector<float> decode(const std::vector<DecoderRow>& rows, bool last_only = true) const;
  // The same into ws.logits (its size: rows · V or Σ tokens · V).
  void decode(const std::vector<DecoderRow>& rows, bool last_only, Workspace& ws) const;

 private:
  struct Attention {
    cpu::Matrix qkv, o;  // qkv: q | k | v stacked [3d, d] (the cross attention's q alone in `q`)
    std::vector<float> qkv_b, o_b;
  };
  struct EncoderLayer {
    Attention self;
    std::vector<float> ln1_w, ln1_b, ln2_w, ln2_b;
    cpu::Matrix fc1, fc2;
    std::vector<float> fc1_b, fc2_b;
  };
  struct DecoderLayer {
    Attention self;
    cpu::Matrix cross_q, cross_kv, cross_o;  // cross_kv: k | v stacked [2d, d]
    std::vector<float> cross_q_b, cross_kv_b, cross_o_b;
    std::vector<float> ln1_w, ln1_b, ln_cross_w, ln_cross_b, ln2_w, ln2_b;
    cpu::Matrix fc1, fc2;
    std::vector<float> fc1_b, fc2_b;
  };
  // The op set of `impl_` (reference loops or fast kernels).
  void linear(const float* x, size_t T, const cpu::Matrix& w, const std::vector<float>& b, float* y) const;
  void layer_norm(const float* x, size_t T, const std::vector<float>& w, const std::vector<float>& b, float* y) const;
  void activation(float* x, size_t n) const;
  // token embeddings · scale + positions into x [T, d].
  void embed(std::span<const int32_t> ids, size_t first_position, float* x) const;
  cpu::Matrix load_matrix(const std::vector<std::string>& names) const;
  std::vector<float> load_vector(const std::vector<std::string>& names) const;

  M2M100Config cfg_;
  DType weight_dtype_;
  OpsImpl impl_;
  std::unique_ptr<Checkpoint> checkpoint_;
  cpu::Matrix embed_tokens_;  // [V, d]; lm_head too when tied
  cpu::Matrix lm_head_;       // [V, d] when not tied
  std::vector<EncoderLayer> encoder_;
  std::vector<DecoderLayer> decoder_;
  std::vector<float> enc_ln_w_, enc_ln_b_, dec_ln_w_, dec_ln_b_;
  float embed_scale_ = 1.0f;
};

}  // namespace pivotmt
