// The tensors an architecture needs, with their shapes; checks a checkpoint against them.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "models/model_config.h"

namespace pivotmt {

class Checkpoint;

enum class WeightRole {
  Embedding,  // token / position / type embeddings
  Linear,     // a projection matrix: the weights quantisation (INT8, NF4) applies to
  Output,     // the lm_head (kept in FP16 by bitsandbytes-style quantisation)
  Norm,       // norm scales
  Bias,
};

struct WeightSpec {
  std::string name;
  std::vector<int64_t> shape;  // as stored by Hugging Face ([out, in] for linear layers)
  WeightRole role;
  bool optional = false;  // counted by transformers but allowed to be absent (BERT pooler)
  uint64_t numel() const;
};

// Expected tensors for the configuration (architecture files: llama.cpp, bert.cpp).
std::vector<WeightSpec> llama_weights(const ModelConfig& c);
std::vector<WeightSpec> bert_weights(const ModelConfig& c, const std::string& prefix);
// The prefix of an encoder checkpoint's tensor names: "" (BertModel, XLMRobertaModel),
// "bert." (BertFor*), "roberta." (RobertaFor*, XLMRobertaFor*), "encoder.model." (COMET's
// state dict).
std::string bert_prefix(const Checkpoint& ckpt);
std::vector<WeightSpec> expected_weights(const ModelConfig& c, const Checkpoint& ckpt);

// Throws FormatError naming the first tensor that is missing or has the wrong shape.
void verify_weights(const ModelConfig& c, const Checkpoint& ckpt);

// Parameter count as transformers' model.num_parameters() reports it: every parameter of
// the module once (tied embeddings counted once; BERT's pooler included).
uint64_t parameter_count(const std::vector<WeightSpec>& weights);

// Bytes of weights a GGUF checkpoint takes on the CPU with `--weights gguf` / `gguf-q8`:
// the tensors the kernels multiply as blocks at the file's size (ggml_multiplied_in_place),
// norms and biases F32, the rest F16. 0 for a checkpoint that is not a GGUF file.
uint64_t gguf_in_place_weight_bytes(const std::vector<WeightSpec>& weights, const Checkpoint& ckpt);

}  // namespace pivotmt
