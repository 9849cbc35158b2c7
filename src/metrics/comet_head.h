// The scoring head of COMET's regression metrics (Unbabel/wmt22-comet-da; REFERENCE §12),
// applied to an encoder's hidden states: the layers mixed with sparsemax weights, average
// pooling, the six-part feature vector and the feed-forward estimator. The encoder itself
// is BertEncoder (XLM-RoBERTa); this file is the arithmetic after it.
#pragma once
#include <cstddef>
#include <span>
#include <vector>

#include "backends/cpu/ops.h"

namespace pivotmt {
class Checkpoint;
}

namespace pivotmt::comet {

// sparsemax(z): the Euclidean projection of z onto the probability simplex (Martins &
// Astudillo 2016; entmax's `sparsemax`): sort descending, c_k = Σ_{j<=k} z_j − 1,
// K = max{k : k · z_k > c_k}, τ = c_K / K, p = max(z − τ, 0). Throws on an empty z.
std::vector<float> sparsemax(const std::vector<float>& z);

class Head {
 public:
  // From a COMET state dict: layerwise_attention.scalar_parameters.{0..L},
  // layerwise_attention.gamma and estimator.ff.{0,3,6,...}.{weight,bias} (Linear layers
  // with Tanh between them, none after the last, which has one output). Throws naming the
  // tensor that is missing or mis-shaped; `hidden` is the encoder's width.
  Head(const Checkpoint& ckpt, size_t hidden);

  size_t layers() const { return layer_weights_.size(); }  // hidden states mixed (embeddings + layers)
  const std::vector<float>& layer_weights() const { return layer_weights_; }
  float gamma() const { return gamma_; }

  // One sentence: gamma · Σ_k w_k · H_k (all_hidden: [layers(), T, hidden]) averaged over
  // its T tokens, as COMET's average_pooling: tokens whose id is `pad_id` (a literal <pad>
  // in the text) are left out of the sum but counted in T (the attention mask's length);
  // <s> and </s> count like any token. `ids` empty: every token is summed.
  std::vector<float> sentence_embedding(const float* all_hidden, size_t T, std::span<const int32_t> ids = {},
                                        int64_t pad_id = -1) const;

  // Segment scores of n triples, each embedding [n, hidden]: the estimator on
  // [mt, ref, mt⊙ref, |mt−ref|, mt⊙src, |mt−src|].
  std::vector<float> score(const float* src, const float* mt, const float* ref, size_t n) const;

 private:
  struct Dense {
    cpu::Matrix w;           // [out, in]
    std::vector<float> b;    // [out]
  };
  size_t hidden_ = 0;
  std::vector<float> layer_weights_;
  float gamma_ = 1.0f;
  std::vector<Dense> estimator_;
};

}  // namespace pivotmt::comet
