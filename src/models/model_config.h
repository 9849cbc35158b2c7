// Typed model configuration parsed from a checkpoint's config.json and
// generation_config.json. Unsupported architectures or field values are rejected with a
// message naming the field and the value, before any weight is touched.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace pivotmt {

enum class Architecture {
  Llama,    // Llama-2 / TowerInstruct (MHA), Llama-3 / Hermes-2-Pro (GQA, rope 500000, llama3 scaling)
  Mistral,  // TowerInstruct-Mistral (GQA, optional sliding window)
  Bert,     // BERT-family encoders: sentence-transformers (retrieval), XLM-RoBERTa (COMET)
};
const char* architecture_name(Architecture a);

// rope_scaling of type "llama3" (Llama-3.1 style frequency remapping).
struct RopeScaling {
  std::string type;  // "llama3"
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  Architecture arch = Architecture::Llama;
  std::string model_type;          // as written in config.json
  std::string architecture_class;  // architectures[0], e.g. "LlamaForCausalLM"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t intermediate_size = 0;
  int64_t max_position_embeddings = 0;
  double norm_eps = 1e-5;  // rms_norm_eps (decoders) or layer_norm_eps (BERT)
  double rope_theta = 10000.0;
  std::optional<RopeScaling> rope_scaling;
  std::optional<int64_t> sliding_window;
  bool tie_word_embeddings = false;
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> pad_token_id;
  std::string torch_dtype;  // informational: stored dtypes can differ (TowerInstruct: F32)
  std::string hidden_act;
  // BERT only.
  int64_t type_vocab_size = 0;
  // Encoders: the position id of the first token (BERT 0; RoBERTa / XLM-R pad_token_id + 1,
  // so 514 positions hold 512 tokens).
  int64_t position_offset = 0;

  bool is_decoder() const { return arch != Architecture::Bert; }
  bool is_gqa() const { return num_kv_heads != num_heads; }
  // A human description, e.g. "llama (GQA 32/8, rope 500000)".
  std::string describe() const;
};

class GgufFile;
// A GGUF file's metadata as the config.json of the same model (the Llama family:
// general.architecture 'llama'), for parse_model_config. Unsupported settings (partial
// rotary, rope scaling, Llama-3.1's frequency factors) are refused naming the key.
nlohmann::json gguf_config_json(const GgufFile& g);

// `label` names the source in error messages (usually the config.json path).
ModelConfig parse_model_config(const nlohmann::json& j, const std::string& label);
// `model_dir`: a model directory (config.json) or a GGUF file.
ModelConfig load_model_config(const std::string& model_dir);
// The same for a command that takes only Llama-family decoders: another model_type is
// refused saying so and naming `purpose` ("fine-tuning", "merge"), not the list of every
// architecture pivotmt reads.
ModelConfig load_decoder_config(const std::string& model_dir, const std::string& purpose);

struct GenerationConfig {
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;  // generation stops at any of them
  std::optional<int64_t> pad_token_id;
  bool do_sample = false;
  double temperature = 1.0;
  int64_t top_k = 50;
  double top_p = 1.0;
  std::optional<int64_t> max_new_tokens;
  std::optional<int64_t> max_length;
};

// generation_config.json when present; token ids fall back to the model config's.
GenerationConfig parse_generation_config(const nlohmann::json& j, const ModelConfig& model, const std::string& label);
GenerationConfig load_generation_config(const std::string& model_dir, const ModelConfig& model);

}  // namespace pivotmt
