// Config parsing for the project's models, checked against their published sizes.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "models/model_config.h"
#include "models/weights.h"

namespace pivotmt {
namespace {
using json = nlohmann::json;

// A copy of `j` with one field set.
json with(json j, const std::string& key, const json& value) {
  j[key] = value;
  return j;
}

// config.json of Unbabel/TowerInstruct-7B-v0.1 (Llama-2 7B shape, 7 added tokens).
json tower_config() {
  return json::parse(R"({"architectures":["LlamaForCausalLM"],"attention_bias":false,"bos_token_id":1,
    "eos_token_id":32005,"hidden_act":"silu","hidden_size":4096,"initializer_range":0.02,"intermediate_size":11008,
    "max_position_embeddings":4096,"model_type":"llama","num_attention_heads":32,"num_hidden_layers":32,
    "num_key_value_heads":32,"pad_token_id":32004,"pretraining_tp":1,"rms_norm_eps":1e-05,"rope_scaling":null,
    "rope_theta":10000.0,"tie_word_embeddings":false,"torch_dtype":"bfloat16","use_cache":false,"vocab_size":32007})");
}

// Llama-3-8B shape (Hermes-2-Pro-Llama-3-8B adds 32 tokens: vocab 128288).
json llama3_config(int64_t vocab) {
  return with(json::parse(R"({"architectures":["LlamaForCausalLM"],"attention_bias":false,"bos_token_id":128000,
    "eos_token_id":128003,"hidden_act":"silu","hidden_size":4096,"intermediate_size":14336,
    "max_position_embeddings":8192,"model_type":"llama","num_attention_heads":32,"num_hidden_layers":32,
    "num_key_value_heads":8,"rms_norm_eps":1e-05,"rope_scaling":null,"rope_theta":500000.0,
    "tie_word_embeddings":false,"torch_dtype":"bfloat16"})"), "vocab_size", vocab);
}

json mistral_config() {
  return json::parse(R"({"architectures":["MistralForCausalLM"],"bos_token_id":1,"eos_token_id":2,
    "hidden_act":"silu","hidden_size":4096,"intermediate_size":14336,"max_position_embeddings":32768,
    "model_type":"mistral","num_attention_heads":32,"num_hidden_layers":32,"num_key_value_heads":8,
    "rms_norm_eps":1e-05,"rope_theta":1000000.0,"sliding_window":null,"tie_word_embeddings":false,
    "torch_dtype":"bfloat16","vocab_size":32000})");
}

TEST(ModelConfig, TowerInstruct) {
  const auto c = parse_model_config(tower_config(), "tower");
  EXPECT_EQ(c.arch, Architecture::Llama);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_FALSE(c.is_gqa());
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{32005});
  EXPECT_EQ(c.pad_token_id, 32004);
  // Llama-2-7B has 6,738,415,616 parameters; Tower adds 7 tokens to embedding and head.
  EXPECT_EQ(parameter_count(llama_weights(c)), 6738415616ull + 2ull * 7 * 4096);
}

TEST(ModelConfig, Llama3AndHermes) {
  auto c = parse_model_config(llama3_config(128256), "llama3");
  EXPECT_TRUE(c.is_gqa());
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(parameter_count(llama_weights(c)), 8030261248ull);  // Meta-Llama-3-8B
  c = parse_model_config(llama3_config(128288), "hermes");
  EXPECT_EQ(parameter_count(llama_weights(c)), 8030261248ull + 2ull * 32 * 4096);
}

TEST(ModelConfig, Llama3RopeScaling) {
  auto j = llama3_config(128256);
  j["rope_scaling"] = json::parse(R"({"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
      "original_max_position_embeddings":8192,"rope_type":"llama3"})");
  const auto c = parse_model_config(j, "llama31");
  ASSERT_TRUE(c.rope_scaling.has_value());
  EXPECT_EQ(c.rope_scaling->factor, 8.0);
  EXPECT_EQ(c.rope_scaling->original_max_position_embeddings, 8192);
  j["rope_scaling"] = {{"type", "llama3"}, {"factor", 8.0}};  // the older key name
  EXPECT_TRUE(parse_model_config(j, "x").rope_scaling.has_value());
}

TEST(ModelConfig, MistralSlidingWindow) {
  auto j = mistral_config();
  auto c = parse_model_config(j, "mistral");
  EXPECT_EQ(c.arch, Architecture::Mistral);
  EXPECT_FALSE(c.sliding_window.has_value());
  EXPECT_EQ(parameter_count(llama_weights(c)), 7241732096ull);  // Mistral-7B
  j["sliding_window"] = 4096;
  c = parse_model_config(j, "mistral");
  EXPECT_EQ(c.sliding_window, 4096);
}

// Each rejection names the field and the value.
void expect_unsupported(json j, const std::string& field, const std::string& value) {
  try {
    parse_model_config(j, "cfg.json");
    FAIL() << "accepted " << field;
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("cfg.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find(field), std::string::npos) << msg;
    EXPECT_NE(msg.find(value), std::string::npos) << msg;
  }
}

TEST(ModelConfig, RejectsUnsupportedValues) {
  auto j = tower_config();
  expect_unsupported(with(j, "model_type", "gpt2"), "model_type", "\"gpt2\"");
  expect_unsupported(with(j, "hidden_act", "gelu"), "hidden_act", "\"gelu\"");
  expect_unsupported(with(j, "attention_bias", true), "attention_bias", "true");
  expect_unsupported(with(j, "rope_scaling", {{"type", "linear"}, {"factor", 2.0}}), "rope_scaling.type",
                     "\"linear\"");
  expect_unsupported(with(j, "num_key_value_heads", 5), "num_key_value_heads", "5");
  expect_unsupported(with(j, "hidden_size", 0), "hidden_size", "= 0 must be an integer >= 1");
  // A zero head count divided by zero in a first version of the typed readers (found by
  // fuzz_model_config with fuzz/json.dict).
  expect_unsupported(with(j, "num_attention_heads", 0), "num_attention_heads", "= 0 must be an integer >= 1");
  expect_unsupported(with(j, "num_attention_heads", 1e300), "num_attention_heads", "must be an integer >= 1");
  expect_unsupported(with(j, "vocab_size", "big"), "vocab_size", "\"big\"");
  // A string field of another type (found by fuzz_model_config: the JSON library's own
  // type_error escaped the parser).
  expect_unsupported(with(j, "hidden_act", 2), "hidden_act", "must be a string");
  auto missing = tower_config();
  missing.erase("num_hidden_layers");
  expect_unsupported(missing, "num_hidden_layers", "missing");
  expect_unsupported(json::array(), "cfg.json", "object");
}

TEST(ModelConfig, Bert) {
  const auto j = json::parse(R"({"architectures":["BertModel"],"hidden_act":"gelu","hidden_size":384,
    "intermediate_size":1536,"layer_norm_eps":1e-12,"max_position_embeddings":512,"model_type":"bert",
    "num_attention_heads":12,"num_hidden_layers":12,"pad_token_id":0,"position_embedding_type":"absolute",
    "type_vocab_size":2,"vocab_size":30522})");
  const auto c = parse_model_config(j, "minilm");
  EXPECT_EQ(c.arch, Architecture::Bert);
  EXPECT_EQ(c.head_dim, 32);
  // all-MiniLM-L12-v2 as transformers' BertModel: 33,360,000 parameters (pooler included).
  EXPECT_EQ(parameter_count(bert_weights(c, "")), 33360000ull);
  expect_unsupported(with(j, "position_embedding_type", "relative_key"), "position_embedding_type",
                     "relative_key");
}

TEST(GenerationConfig, EosListAndFallbacks) {
  const auto model = parse_model_config(tower_config(), "tower");
  auto g = parse_generation_config(json::parse(R"({"eos_token_id":[2001,2],"do_sample":true,"top_p":0.75})"), model, "g");
  EXPECT_EQ(g.eos_token_ids, (std::vector<int64_t>{2001, 2}));
  EXPECT_TRUE(g.do_sample);
  EXPECT_EQ(g.top_p, 0.75);
  EXPECT_EQ(g.bos_token_id, 1);  // from the model config
  g = parse_generation_config(json::object(), model, "g");
  EXPECT_EQ(g.eos_token_ids, std::vector<int64_t>{32005});
  EXPECT_THROW(parse_generation_config(json::parse(R"({"eos_token_id":[1,"x"]})"), model, "g"), FormatError);
  EXPECT_THROW(parse_generation_config(json::parse(R"({"top_p":1.5})"), model, "g"), FormatError);
  // A top_k no integer holds: refused before it is converted.
  EXPECT_THROW(parse_generation_config(json::parse(R"({"top_k":1e300})"), model, "g"), FormatError);
}

// What transformers 4.57's save_pretrained writes for a Llama (captured from it): "dtype"
// instead of "torch_dtype", head_dim, several EOS ids in both files, sampling defaults.
TEST(ModelConfig, CurrentTransformersFiles) {
  const json config = json::parse(R"({"architectures":["LlamaForCausalLM"],"attention_bias":false,
    "attention_dropout":0.0,"bos_token_id":1,"dtype":"bfloat16","eos_token_id":[2,3],"head_dim":8,"hidden_act":"silu",
    "hidden_size":32,"initializer_range":0.02,"intermediate_size":64,"max_position_embeddings":2048,"mlp_bias":false,
    "model_type":"llama","num_attention_heads":4,"num_hidden_layers":1,"num_key_value_heads":2,"pretraining_tp":1,
    "rms_norm_eps":1e-06,"rope_scaling":null,"rope_theta":10000.0,"tie_word_embeddings":false,
    "transformers_version":"4.57.6","use_cache":true,"vocab_size":64})");
  const ModelConfig c = parse_model_config(config, "config.json");
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{2, 3}));
  const GenerationConfig g = parse_generation_config(
      json::parse(R"({"bos_token_id":1,"do_sample":true,"eos_token_id":[2,3],"temperature":0.6,
                      "transformers_version":"4.57.6"})"), c, "generation_config.json");
  EXPECT_EQ(g.eos_token_ids, (std::vector<int64_t>{2, 3}));
  EXPECT_TRUE(g.do_sample);
  EXPECT_DOUBLE_EQ(g.temperature, 0.6);
}

}  // namespace
}  // namespace pivotmt
