// The BERT encoder of sentence-transformers models (all-MiniLM-L12-v2 by default, any
// BERT-family encoder such as LaBSE): WordPiece, the encoder, then the pooling and
// normalisation that modules.json and 1_Pooling/config.json ask for. RoBERTa and
// XLM-RoBERTa checkpoints (COMET's encoder) load too: the same post-norm layers, positions
// numbered from pad + 1.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backends/encoder_ops.h"
#include "models/model_config.h"
#include "tokenizer/tokenizer.h"

namespace pivotmt {

class Checkpoint;

enum class Pooling { Mean, Cls, Max, MeanSqrtLen };

class BertEncoder {
 public:
  // `dir`: config.json and the tokenizer (and sentence-transformers' files); the weights
  // come from `weights_dir` when given (COMET: the converted checkpoint, whose encoder
  // tensors sit under "encoder.model." beside the head's), else from `dir`. The layers run
  // on `device`, the linears' weights stored as `weights` (F32, or F16: encoder_ops.h; the
  // embeddings, LayerNorms and biases stay F32).
  explicit BertEncoder(const std::string& dir, const std::string& weights_dir = "", const Device& device = {},
                       DType weights = DType::F32);
  ~BertEncoder();
  const ModelConfig& config() const { return cfg_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const Checkpoint& checkpoint() const { return *checkpoint_; }
  size_t dimension() const { return size_t(cfg_.hidden_size); }
  size_t max_tokens() const { return max_tokens_; }

  // Token ids with [CLS] / [SEP], truncated to the model's maximum.
  std::vector<TokenId> tokenize(const std::string& text) const;
  // Last hidden states [T, hidden] of one sequence.
  std::vector<float> hidden_states(const std::vector<TokenId>& ids) const;
  // Every hidden state [layers + 1, T, hidden]: the embeddings' output, then each layer's
  // (COMET mixes them all). The reference path: one sequence, through the plain loops
  // (cpu::ref) on the CPU — a GPU's own kernels when the encoder is on a GPU.
  std::vector<float> all_hidden_states(const std::vector<TokenId>& ids) const;
  Device device() const { return ops_->device(); }
  std::string describe_device() const { return ops_->describe(); }
  // The fast path: several sequences packed one after another without padding (rows
  // [Σ T_i, hidden]; attention stays within each sequence, so a sequence's states depend
  // on its batch mates only through the GEMM's choice of kernel for the row count, in the
  // last bits), on the encoder's device (the CPU: each op threaded, cpu::fast). Runs the first `layers`
  // layers; on_state(l, states) sees the embeddings' output (l = 0) and each layer's.
  void encode_batch(const std::vector<std::vector<TokenId>>& seqs, size_t layers,
                    const std::function<void(size_t layer, const float* states)>& on_state) const;
  size_t num_layers() const { return layers_.size(); }
  // COMET's layer mix and pooling over encode_batch's states, summed where they are computed:
  // per sequence Σ_k weights[k] · Σ_t states_k[t] (k = 0 the embeddings' output, then the
  // first weights.size() − 1 layers; rows whose id is `skip_id` left out; products and sums
  // in double, every device the same bits) — [sequences, hidden]. On a GPU one copy back per
  // batch instead of every layer's [T, hidden] states.
  std::vector<double> pooled_layer_mix(const std::vector<std::vector<TokenId>>& seqs, const std::vector<double>& weights,
                                       int64_t skip_id) const;
  // Tokens per encode_batch call when embedding many sentences: large enough for the GEMMs
  // to run near their peak, small enough for the activations to stay a few MB per layer.
  static constexpr size_t kBatchTokens = 2048;
  // Tokens one sequence may hold: the position table less RoBERTa's offset.
  size_t max_positions() const { return size_t(cfg_.max_position_embeddings - cfg_.position_offset); }
  // Sentence embeddings [n, dimension], pooled and (when modules.json says) normalised;
  // encode_batch over batches of kBatchTokens.
  std::vector<float> embed(const std::vector<std::string>& texts) const;

 private:
  struct Layer {
    // qkv: query, key and value stacked [3 · hidden, hidden], with their biases; inter with
    // its bias; o and out without (their biases join the residual LayerNorm).
    std::unique_ptr<EncoderLinear> qkv, o, inter, out;
    Tensor o_b, out_b, ln1_w, ln1_b, ln2_w, ln2_b;  // [1, hidden]
  };
  // A sequence's token ids (checked against the vocabulary) and their rows of the position
  // table, into ids_out / positions_out [ids.size()].
  void token_positions(const std::vector<TokenId>& ids, int32_t* ids_out, int32_t* positions_out) const;
  // The layers over `ops` (the encoder's, or the CPU's reference loops, which take the CPU
  // encoder's weights as they are).
  void run(EncoderOps& ops, const std::vector<std::vector<TokenId>>& seqs, size_t layers,
           const std::function<void(size_t layer, const Tensor& states)>& on_state) const;
  ModelConfig cfg_;
  std::unique_ptr<Checkpoint> checkpoint_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::unique_ptr<EncoderOps> ops_, reference_ops_;  // reference_ops_: the CPU's plain loops (CPU encoders)
  // The embeddings on the encoder's device: the word table, and the position table with the
  // token-type-0 row added — x = word[id] + (position[p] + type[0]), one embed op, so a batch
  // sends its ids, not its [T, hidden] embeddings.
  std::unique_ptr<EncoderLinear> word_;
  Tensor position_type_;
  Tensor emb_ln_w_, emb_ln_b_;
  std::vector<Layer> layers_;
  Pooling pooling_ = Pooling::Mean;
  bool normalize_ = true;
  size_t max_tokens_ = 512;
};

// Splits sequences (by their lengths, in order) into consecutive batches of at most
// `budget` tokens each; a longer sequence gets a batch of its own.
std::vector<std::vector<size_t>> token_batches(const std::vector<size_t>& lengths, size_t budget);

}  // namespace pivotmt
